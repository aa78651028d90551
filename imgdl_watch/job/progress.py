"""A job's counters, and the rates, ETA and progress events derived from them.

`JobSummary` is live while a job runs. `RateMeter` turns two looks at it into
rates over the time between them; the `job_progress` event, the status file,
systemd's STATUS= line and the terminal's progress bar all read it that way,
each at its own cadence.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

log = structlog.get_logger("imgdl_watch")


@dataclass(slots=True)
class JobSummary:
    """A job's counters, live while it runs and final when it ends."""

    job: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    # Images put in place from the archive (`--archive`), not downloaded.
    reused: int = 0
    invalid: int = 0
    duplicates: int = 0
    # Images that came whole and a filter dropped (not failures: not retried).
    filtered: int = 0
    bytes: int = 0
    # Unique URLs found so far; it is the total once `listed` is True.
    found: int = 0
    listed: bool = False
    # True when every URL of the list got an outcome.
    complete: bool = False
    # Why the list as a whole could not run (`job_failed`'s reason), if it could not.
    failure: str | None = None
    started: float = field(default_factory=time.monotonic)
    # When the job's clock stopped (`stop_clock`); None while it runs.
    stopped: float | None = None

    @property
    def done(self) -> int:
        """URLs with the image in the folder: downloaded now, reused, or already there."""
        return self.ok + self.skipped + self.reused

    @property
    def elapsed_s(self) -> float:
        end = time.monotonic() if self.stopped is None else self.stopped
        return end - self.started

    def stop_clock(self) -> None:
        """The job's work is over: every later look at it (its end event, the
        hooks', a notification's) tells the same `elapsed_s`."""
        if self.stopped is None:
            self.stopped = time.monotonic()

    def finished_fields(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "reused": self.reused,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "filtered": self.filtered,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A job's progress at one moment, with rates over the last interval."""

    job: str
    done: int
    failed: int
    total: int
    bytes: int
    rate_img_s: float
    rate_bytes_s: float
    # Seconds left at the current rate; None until the whole list is read.
    eta_s: float | None
    elapsed_s: float

    def fields(self) -> dict[str, Any]:
        """The fields of a `job_progress` event: all but `elapsed_s`."""
        fields = dataclasses.asdict(self)
        del fields["elapsed_s"]
        return fields


class RateMeter:
    """Rates of one job between consecutive samples (pure: the caller gives the time)."""

    __slots__ = ("_at", "_bytes", "_finished", "summary")

    def __init__(self, summary: JobSummary, now: float) -> None:
        self.summary = summary
        self._at = now
        self._finished = summary.ok + summary.failed
        self._bytes = summary.bytes

    def sample(self, now: float) -> Snapshot:
        summary = self.summary
        span = max(now - self._at, 1e-9)
        finished = summary.ok + summary.failed
        rate = (finished - self._finished) / span
        byte_rate = (summary.bytes - self._bytes) / span
        remaining = summary.found - summary.done - summary.failed - summary.filtered
        eta = round(remaining / rate, 1) if summary.listed and rate > 0 else None
        self._at, self._finished, self._bytes = now, finished, summary.bytes
        return Snapshot(
            job=summary.job,
            done=summary.done,
            failed=summary.failed,
            total=summary.found,
            bytes=summary.bytes,
            rate_img_s=round(rate, 2),
            rate_bytes_s=round(byte_rate),
            eta_s=eta,
            elapsed_s=round(summary.elapsed_s, 1),
        )


async def report_progress(summary: JobSummary, interval_s: float) -> None:
    """Log `job_progress` every `interval_s` seconds, until cancelled."""
    meter = RateMeter(summary, trio.current_time())
    while True:
        await trio.sleep(interval_s)
        log.info("job_progress", **meter.sample(trio.current_time()).fields())
