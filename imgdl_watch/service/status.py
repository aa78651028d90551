"""What `imgdl-watch status` shows, and the file the daemon keeps it in.

Each daemon rewrites `INBOX/.imgdl-watch/status-<host>-<pid>.json` about once
a second, atomically (a temporary name, then rename), so that a reader never
sees half a file. Several daemons on one inbox each keep their own. A clean
stop writes the file one last time with `"state": "stopped"`; a daemon that
was killed leaves a file that stops changing. So a daemon is alive when its
file says so and is fresh (and, on this host, its pid exists).

The reader side (`collect`, `render`) is what the `status` command prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import is_category_name
from ..inbox.folders import open_regular
from ..inbox.layout import PROCESSING, REPORT_SUFFIX
from ..inbox.lifecycle import Inbox, is_list_name
from ..job.progress import Snapshot
from ..naming import job_stem
from ..redact import printable

# Seconds between two writes of the status file.
STATUS_INTERVAL_S = 1.0
# A status file older than this belongs to a daemon that is not running.
STALE_AFTER_S = 10.0
# What a live daemon's status file says it is doing: its work, or a stop's
# grace, within which its running jobs end or are interrupted.
LIVE_STATES = ("running", "stopping")
# Finished jobs kept in the status file.
RECENT_JOBS = 10
_PREFIX = "status-"
# A status file is written without following a symlink (and read as
# `folders.open_regular` opens a file: a FIFO is passed over).
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(slots=True)
class StatusFile:
    """The daemon's side: what it is doing, written where `status` finds it."""

    inbox: Inbox
    output: str
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    started_at: str = field(default_factory=_now_iso)
    recent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return os.path.join(self.inbox.state, f"{_PREFIX}{self.host}-{self.pid}.json")

    def finished(self, job: str, fields: dict[str, Any]) -> None:
        self.recent.insert(0, {"job": job, "finished_at": _now_iso(), **fields})
        del self.recent[RECENT_JOBS:]

    def write(
        self,
        *,
        state: str,
        jobs: list[Snapshot],
        in_flight: int,
        queued: int,
        free_bytes: int | None = None,
        hosts: list[dict[str, Any]] | None = None,
        workers: dict[str, int] | None = None,
    ) -> None:
        document = {
            "state": state,
            "pid": self.pid,
            "host": self.host,
            "inbox": self.inbox.root,
            "output": self.output,
            "started_at": self.started_at,
            "updated_at": _now_iso(),
            "in_flight": in_flight,
            "queued": queued,
            "output_free_bytes": free_bytes,
            # The download workers: {"ready": n, "count": N} (N = 0: none asked for).
            "workers": workers or {"ready": 0, "count": 0},
            "running": [dataclasses.asdict(s) for s in jobs],
            "recent": self.recent,
            # The busiest hosts (`statusreport.STATUS_HOSTS` at most).
            "hosts": hosts or [],
            # The config's categories, now: `status` lists their queues too.
            "categories": list(self.inbox.categories),
        }
        # In the state folder as `Inbox.state_folder` opens it: a symlink a
        # user of the inbox put in its place is not written through.
        name = os.path.basename(self.path)
        temp = f"{name}.{self.pid}.tmp"
        with self.inbox.state_folder() as folder:
            fd = os.open(temp, _WRITE_FLAGS, 0o666, dir_fd=folder)
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)


def adopt_history(status: StatusFile) -> int:
    """Take the last finished jobs from the files of daemons that are gone, and
    remove those files, so that the state folder does not grow with restarts.
    Returns how many files were removed."""
    removed = 0
    for path, document, mtime in _status_files(status.inbox):
        if path == status.path or _alive(document, mtime):
            continue
        status.recent.extend(_recent(document))
        try:
            with status.inbox.state_folder() as folder:
                os.unlink(os.path.basename(path), dir_fd=folder)
            removed += 1
        except FileNotFoundError:
            pass
    status.recent.sort(key=lambda job: job["finished_at"], reverse=True)
    del status.recent[RECENT_JOBS:]
    return removed


def _status_files(inbox: Inbox) -> list[tuple[str, dict[str, Any], float]]:
    found = []
    try:
        with inbox.state_folder() as folder:
            for name in os.listdir(folder):
                if not (name.startswith(_PREFIX) and name.endswith(".json")):
                    continue
                fd = open_regular(name, folder)
                if fd is None:
                    continue
                try:
                    with open(fd, encoding="utf-8") as handle:
                        st = os.fstat(handle.fileno())
                        document = json.load(handle)
                except (OSError, ValueError):
                    continue
                # JSON of another shape than a daemon's (a hand edit, another
                # program's file) is passed over, as a broken file is.
                if isinstance(document, dict):
                    found.append((os.path.join(inbox.state, name), document, st.st_mtime))
    except OSError:  # no state folder (yet), or a symlink planted in its place
        return []
    return found


def _records(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The records a status file lists under `key` (jobs, hosts), those that are one."""
    listed = document.get(key)
    if not isinstance(listed, list):
        return []
    return [r for r in listed if isinstance(r, dict)]


def _recent(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished jobs a status file lists, those that are a job's record: with
    what names it and what orders it (only those are adopted into a live
    daemon's file, and shown)."""
    return [
        j
        for j in _records(document, "recent")
        if isinstance(j.get("job"), str) and isinstance(j.get("finished_at"), str)
    ]


def _alive(document: dict[str, Any], mtime: float) -> bool:
    if document.get("state") not in LIVE_STATES or time.time() - mtime > STALE_AFTER_S:
        return False
    if document.get("host") == socket.gethostname():
        pid = document.get("pid")
        # (0 and -1 would ask about this process's group, or every process.)
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError):
            return False
        except PermissionError:
            return True
    return True


def collect(inbox_root: str, categories: Iterable[str] = ()) -> dict[str, Any]:
    """Everything `status` shows about an inbox, as one JSON-ready document.

    The queue is what the daemon would take: the lists of the inbox and of
    its categories (`art/cats.txt`), without those it ignores (a top-level
    list named after a category). The categories are those the live daemons
    report and `categories` (the config's, as `status` read it), together."""
    daemons: list[dict[str, Any]] = []
    for _path, document, mtime in _status_files(Inbox(inbox_root)):
        document["alive"] = _alive(document, mtime)
        daemons.append(document)
    live = [d for d in daemons if d["alive"]]
    # A status file is only as trusted as the state folder: a name that no
    # config could give a category (`../x`) is not followed.
    reported = {
        c
        for d in live
        if isinstance(names := d.get("categories"), list)
        for c in names
        if isinstance(c, str) and is_category_name(c)
    }
    inbox = Inbox(inbox_root, categories=reported | set(categories))
    queued = _queued(inbox)
    running = [job for d in live for job in _records(d, "running")]
    recent = sorted(
        (j for d in daemons for j in _recent(d)),
        key=lambda j: j["finished_at"],
        reverse=True,
    )
    return {
        "inbox": inbox.root,
        "daemon_alive": bool(live),
        "daemons": [
            {
                k: d.get(k)
                for k in (
                    "pid",
                    "host",
                    "state",
                    "alive",
                    "started_at",
                    "updated_at",
                    "in_flight",
                    "output_free_bytes",
                    "workers",
                )
            }
            for d in daemons
        ],
        "running": running,
        "hosts": [host for d in live for host in _records(d, "hosts")],
        "queued": queued,
        "unfinished": _unfinished(inbox, {str(job.get("job")) for job in running}),
        "recent": recent[:RECENT_JOBS],
    }


def _queued(inbox: Inbox) -> list[str]:
    """The lists the daemon would take, read only: `status` creates nothing
    (a category's folder that is missing, a symlink or a file holds none)."""
    queued = [n for n in _lists_in(inbox.root) if job_stem(n) not in inbox.categories]
    for category in inbox.categories:
        folder = os.path.join(inbox.root, category)
        if os.path.isdir(folder) and not os.path.islink(folder):
            queued.extend(f"{category}/{n}" for n in _lists_in(folder))
    return sorted(queued)


def _unfinished(inbox: Inbox, running: set[str]) -> list[str]:
    """The lists in processing/ (the inbox's and its categories') whose job is
    not running now: interrupted, or held back, to be resumed by a daemon on
    this inbox. Read only, as `_queued`."""
    unfinished = []
    for category in ("", *inbox.categories):
        folder = os.path.join(inbox.root, category) if category else inbox.root
        if category and (os.path.islink(folder) or not os.path.isdir(folder)):
            continue
        prefix = f"{category}/" if category else ""
        processing = os.path.join(folder, PROCESSING)
        if os.path.islink(processing):
            continue
        unfinished += [
            f"{prefix}{PROCESSING}/{name}"
            for name in _lists_in(processing)
            if prefix + job_stem(name) not in running
        ]
    return sorted(unfinished)


def _lists_in(folder: str) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [
                e.name for e in entries if is_list_name(e.name) and e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return []


def _size(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def _each(line: Callable[[dict[str, Any]], str], records: list[dict[str, Any]]) -> list[str]:
    """`line` of each record; one that lacks what a daemon writes in it (a
    status file of another program's, a hand edit) is one line saying so."""
    lines = []
    for record in records:
        try:
            lines.append(line(record))
        except (KeyError, TypeError, ValueError):
            lines.append("  (a record this version cannot read)")
    return lines


def _running_line(job: dict[str, Any]) -> str:
    total = job["total"]
    pct = f"{100 * (job['done'] + job['failed']) / total:.0f}%" if total else "-"
    eta = f", eta {job['eta_s']:.0f} s" if job.get("eta_s") is not None else ""
    return (
        f"  {job['job']}: {job['done']}/{total} done, {job['failed']} failed ({pct}), "
        f"{_size(job['bytes'])}, {job['rate_img_s']:.1f} img/s, "
        f"{_size(job['rate_bytes_s'])}/s{eta}"
    )


def _host_lines(hosts: list[dict[str, Any]]) -> list[str]:
    """Each host: concurrency against its ceiling, its rate, its pause, its opt-outs."""
    if not hosts:
        return []
    return [f"hosts: {len(hosts)}", *_each(_host_line, hosts)]


def _workers_short(daemon: dict[str, Any]) -> bool:
    """Whether a daemon has fewer download workers ready than it asked for."""
    workers = daemon.get("workers")
    if not isinstance(workers, dict):
        return False
    ready, count = workers.get("ready"), workers.get("count")
    return isinstance(ready, int) and isinstance(count, int) and ready < count


def _workers_line(daemon: dict[str, Any]) -> str:
    workers = daemon["workers"]
    return (
        f"  pid {daemon['pid']}: {workers['ready']} of {workers['count']} download workers"
        " ready; the others' downloads run in the daemon's own process (see worker_lost"
        " and workers_unavailable in its log)"
    )


def _host_line(host: dict[str, Any]) -> str:
    limit = f"{host['in_flight']}/{host['limit']} in flight"
    if host["in_flight"] > host["limit"]:
        # Lowered while more were out (a 429 or 503): they end, new ones wait.
        limit = f"{host['in_flight']} in flight, over its limit of {host['limit']} (lowered)"
    if host["limit"] < host["ceiling"]:
        limit += f" (ceiling {host['ceiling']})"
    if host.get("waiting"):
        limit += f", {host['waiting']} waiting for a turn"
    rate = f"{host['req_s']:.1f} req/s"
    if host.get("rate") is not None:
        rate += f" (paced at {host['rate']:g}/s)"
    if host.get("min_gap_s"):
        rate += f" (gap {host['min_gap_s']:g} s)"
    paused = f", paused {host['paused_s']:.0f} s in all" if host["paused_s"] else ""
    if host["paused_for_s"]:
        paused += f", paused now ({host['paused_for_s']:.0f} s left)"
    opt_outs = f", {host['opt_outs']} opted out" if host["opt_outs"] else ""
    return f"  {host['host']}: {limit}, {rate}{paused}{opt_outs}"


def render(report: dict[str, Any]) -> str:
    """The status document as text for a person."""
    lines = []
    live = [d for d in report["daemons"] if d["alive"]]
    if live:
        for state in LIVE_STATES:  # running ones first, then those stopping
            if who := ", ".join(
                f"pid {d['pid']} on {d['host']}" for d in live if d["state"] == state
            ):
                lines.append(f"daemon: {state} ({who}) on {report['inbox']}")
        lines.extend(_workers_line(d) for d in live if _workers_short(d))
    else:
        lines.append(f"daemon: no daemon is running on {report['inbox']}")
    lines.append("")
    lines.append(f"running jobs: {len(report['running'])}")
    lines.extend(_each(_running_line, report["running"]))
    lines.extend(_host_lines(report.get("hosts", [])))
    lines.append(f"queued lists: {len(report['queued'])}")
    lines.extend(f"  {name}" for name in report["queued"][:20])
    if len(report["queued"]) > 20:
        lines.append(f"  ... and {len(report['queued']) - 20} more")
    if unfinished := report.get("unfinished", []):
        lines.append(f"unfinished jobs, not running now (a daemon resumes them): {len(unfinished)}")
        lines.extend(f"  {name}" for name in unfinished[:20])
        if len(unfinished) > 20:
            lines.append(f"  ... and {len(unfinished) - 20} more")
    lines.append(f"last finished: {len(report['recent'])}")
    lines.extend(_each(_finished_line, report["recent"]))
    # A list's name may hold what a terminal would act on (ESC's sequences).
    return "\n".join(printable(line) for line in lines)


def _finished_line(job: dict[str, Any]) -> str:
    reused = f"{job['reused']} reused, " if job.get("reused") else ""
    filtered = f", {job['filtered']} filtered" if job.get("filtered") else ""
    # Lists of one stem are one job name: a report of another name tells them apart.
    name, report = job["job"], job.get("report")
    if isinstance(report, str) and report != f"{name}{REPORT_SUFFIX}":
        name = f"{name} ({report})"
    return (
        f"  {name} at {job['finished_at']}: {job['ok']} ok, {reused}{job['failed']} "
        f"failed, {job['skipped']} skipped, {job['invalid']} invalid{filtered} "
        f"({job['elapsed_s']:.1f} s)"
    )
