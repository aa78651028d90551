"""What the daemon tells the world around a job: the events that hooks and
notifications receive.

    job_finished    every URL of a list has its outcome; the list is in done/
    job_failed      the list as a whole could not run (`job_failed`), or a
                    bug stopped it (`job_crashed`, reason `crashed`)
    disk_full       the output's disk is full: a download failed with
                    `disk_full` (once per job), or free space fell below
                    `--min-free` (`disk_low`)

Each is one JSON document (`fields`, the same as the event's log line, plus
where its folder and report are) and a few `IMGDL_*` environment variables
(`env`) for a hook. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

# Event names, and the hook option that runs for each.
JOB_FINISHED = "job_finished"
JOB_FAILED = "job_failed"
DISK_FULL = "disk_full"
HOOK_OPTIONS = {JOB_FINISHED: "on_finished", JOB_FAILED: "on_failed", DISK_FULL: "on_disk_full"}


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The variables a hook gets from an event, by the field each holds.
_VARIABLE_FIELDS = (
    ("IMGDL_FOLDER", "folder"),
    ("IMGDL_REPORT", "report"),
    ("IMGDL_OK", "ok"),
    ("IMGDL_FAILED", "failed"),
    ("IMGDL_REASON", "reason"),
    ("IMGDL_RETRY_S", "retry_s"),
    ("IMGDL_FREE_BYTES", "free_bytes"),
)
# Every variable an event may set.
EVENT_VARIABLES = frozenset({"IMGDL_EVENT", "IMGDL_JOB", *(var for var, _ in _VARIABLE_FIELDS)})


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its name and its JSON fields."""

    name: str
    fields: dict[str, Any]
    timestamp: str = field(default_factory=_now_iso)

    @classmethod
    def job_finished(
        cls, job: str, counts: dict[str, Any], *, folder: str, report: str | None
    ) -> Event:
        return cls(JOB_FINISHED, {"job": job, **counts, "folder": folder, "report": report})

    @classmethod
    def job_failed(
        cls,
        job: str,
        reason: str,
        counts: dict[str, Any],
        *,
        folder: str,
        detail: str = "",
        retry_s: float | None = None,
    ) -> Event:
        """`retry_s`: when the list, left in processing/, is tried again (an
        `inbox_error`); None when the failure is final."""
        fields = {"job": job, "reason": reason, "detail": detail, **counts, "folder": folder}
        if retry_s is not None:
            fields["retry_s"] = retry_s
        return cls(JOB_FAILED, fields)

    @classmethod
    def disk_full(cls, job: str, *, folder: str, source: str, free_bytes: int | None) -> Event:
        fields = {"job": job, "folder": folder, "source": source, "free_bytes": free_bytes}
        return cls(DISK_FULL, fields)

    def document(self) -> dict[str, Any]:
        """The event as its log line has it: `event`, `timestamp`, then the fields."""
        return {"event": self.name, "timestamp": self.timestamp, **self.fields}

    def payload(self) -> bytes:
        """The JSON document a hook reads on its standard input, one line."""
        return json.dumps(self.document(), ensure_ascii=False).encode("utf-8") + b"\n"

    def env(self) -> dict[str, str]:
        """The `IMGDL_*` variables a hook gets (those that apply to the event)."""
        f = self.fields
        env = {"IMGDL_EVENT": self.name, "IMGDL_JOB": str(f.get("job", ""))}
        for var, key in _VARIABLE_FIELDS:
            if f.get(key) is not None:
                env[var] = str(f[key])
        # An environment value cannot hold a NUL; no name we make has one,
        # but a hook must never fail to start over it.
        return {k: v.replace("\0", "") for k, v in env.items()}

    def title(self) -> str:
        """A one-line title for a notification."""
        job = self.fields.get("job", "")
        if self.name == JOB_FINISHED:
            return f"imgdl-watch: {job} finished"
        if self.name == JOB_FAILED:
            again = self.fields.get("retry_s")
            later = f", tried again in {again:g} s" if again is not None else ""
            return f"imgdl-watch: {job} failed ({self.fields.get('reason')}){later}"
        return f"imgdl-watch: disk full ({job})"

    def body(self) -> str:
        """A short text for a notification, with the event as JSON after it."""
        f = self.fields
        if self.name == JOB_FINISHED:
            head = (
                f"{f.get('ok', 0)} ok, {f.get('failed', 0)} failed, "
                f"{f.get('skipped', 0)} skipped, {f.get('invalid', 0)} invalid"
            )
        elif self.name == JOB_FAILED:
            head = f"reason {f.get('reason')}: {f.get('detail', '')}"
        else:
            head = f"the disk of {f.get('folder')} is full ({f.get('source')})"
        return head + "\n" + json.dumps(self.document(), ensure_ascii=False)
