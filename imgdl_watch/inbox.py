"""The inbox lifecycle: which files are lists, when they are complete, and
where they go.

    INBOX/cats.txt          dropped by a user; taken once it has settled
    INBOX/processing/       claimed lists, each locked by the daemon running it
    INBOX/done/             finished lists, with <name>.report.jsonl beside each
    INBOX/failed/           the URLs that failed, one per line, ready to re-drop

**Complete.** A file is taken once its size and mtime have not changed for
`settle` seconds (`SettleTracker`, pure logic). A list renamed in with an old
mtime is therefore taken at once; a list still being written is not.

**Claim.** A list is claimed with `link(INBOX/name, processing/<stem>.txt)`,
which fails if that name exists: so two daemons never claim one list, and a
list never runs beside another of the same stem (they would share a folder).
The claimer then takes an `flock` on the processing file and unlinks the
original. The lock is the daemon's "I am running this": a lock that a killed
daemon held goes with its process, so any daemon may resume that job.

**Finish.** The list moves to `done/` and its report beside it; failures go to
`failed/`. A name already taken there gets a number (`cats.1.txt`): nothing
is overwritten. A list whose name is too long for that number and for its
report's name is published under its job's (shortened) stem instead.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass, field

from .naming import JOB_NAME_ROOM, MAX_NAME_BYTES, job_stem
from .report import ReportPaths

LIST_SUFFIX = ".txt"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
STATE = ".imgdl-watch"
# Editors and downloaders write these while a file is not finished yet.
_TEMP_PREFIXES = (".", "~", "#")


def is_list_name(name: str) -> bool:
    """A list is `*.txt`, neither hidden nor an editor's or tool's temp name."""
    return name.lower().endswith(LIST_SUFFIX) and not name.startswith(_TEMP_PREFIXES)


@dataclass(frozen=True, slots=True)
class Seen:
    """What a stat of an inbox candidate showed."""

    size: int
    mtime_ns: int


@dataclass(slots=True)
class SettleTracker:
    """Decides when a candidate is complete: unchanged for `settle_s` seconds.

    Pure logic: the caller feeds it observations and the current time.
    """

    settle_s: float
    _since: dict[str, tuple[Seen, float]] = field(default_factory=dict)

    def observe(self, name: str, seen: Seen, now: float, mtime_age_s: float) -> None:
        previous = self._since.get(name)
        if previous is not None and previous[0] == seen:
            return
        # Unchanged since its mtime: a file last written `mtime_age_s` ago has
        # already been quiet that long, even if we only now notice it.
        self._since[name] = (seen, now - max(mtime_age_s, 0.0))

    def forget_missing(self, present: set[str]) -> None:
        for name in [n for n in self._since if n not in present]:
            del self._since[name]

    def forget(self, name: str) -> None:
        self._since.pop(name, None)

    def ready(self, now: float) -> list[str]:
        """Settled names, oldest first."""
        settled = [(t, n) for n, (_, t) in self._since.items() if now - t >= self.settle_s]
        return [n for _, n in sorted(settled)]

    def next_deadline(self, now: float) -> float | None:
        """When the next name that is not settled yet will be, if unchanged."""
        pending = [t + self.settle_s for _, t in self._since.values() if t + self.settle_s > now]
        return min(pending, default=None)


@dataclass(slots=True)
class Claim:
    """A list this daemon holds: its processing file, open and locked."""

    stem: str
    path: str
    fd: int
    original: str

    def release(self) -> None:
        os.close(self.fd)  # closing drops the flock

    @property
    def published_name(self) -> str:
        """The list's name in done/ and failed/: the one it was dropped with,
        unless that is too long to take a number and a report beside it."""
        stem_bytes = len(os.fsencode(self.original)) - len(LIST_SUFFIX)
        if stem_bytes + JOB_NAME_ROOM <= MAX_NAME_BYTES:
            return self.original
        return self.stem + LIST_SUFFIX


class Inbox:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.processing = os.path.join(self.root, PROCESSING)
        self.done = os.path.join(self.root, DONE)
        self.failed = os.path.join(self.root, FAILED)
        # The daemons' own files (status), hidden from users and from scans.
        self.state = os.path.join(self.root, STATE)

    def ensure_layout(self) -> None:
        for folder in (self.root, self.processing, self.done, self.failed, self.state):
            os.makedirs(folder, exist_ok=True)

    def scan(self) -> tuple[dict[str, Seen], list[str]]:
        """Lists in the inbox with their stat, and entries that are ignored."""
        found: dict[str, Seen] = {}
        ignored: list[str] = []
        for folder in (self.processing, self.done, self.failed):
            if not os.path.isdir(folder):
                raise FileNotFoundError(errno.ENOENT, "inbox folder is missing", folder)
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name in (PROCESSING, DONE, FAILED):
                    continue
                if not is_list_name(entry.name):
                    if not entry.name.startswith(_TEMP_PREFIXES):
                        ignored.append(entry.name)
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        ignored.append(entry.name)
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found[entry.name] = Seen(st.st_size, st.st_mtime_ns)
        return found, ignored

    def report_paths(self, stem: str) -> ReportPaths:
        return ReportPaths(
            report=os.path.join(self.processing, f".{stem}.report.part"),
            failed=os.path.join(self.processing, f".{stem}.failed.part"),
        )

    def claim(self, name: str) -> Claim | None:
        """Take `INBOX/name` into `processing/`. None when it is not ours to take now."""
        source = os.path.join(self.root, name)
        stem = job_stem(name)
        target = os.path.join(self.processing, stem + LIST_SUFFIX)
        try:
            os.link(source, target, follow_symlinks=False)
        except FileNotFoundError:
            return None  # another daemon took it first
        except FileExistsError:
            # A list of this stem is running. If it is this very file, a claim
            # was cut short between link and unlink: finish that claim.
            if _same_file(source, target):
                _unlink_quietly(source)
            return None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # No hard links on this filesystem: rename, checking first. Two
            # daemons may then race on one name; this is documented.
            if os.path.lexists(target):
                return None
            os.rename(source, target)
            claim = self._lock(stem, target, name)
            return claim
        claim = self._lock(stem, target, name)
        _unlink_quietly(source)
        return claim

    def leftovers(self) -> list[Claim]:
        """Jobs in `processing/` that no live daemon holds: ours to resume."""
        claims = []
        for name in sorted(os.listdir(self.processing)):
            if not is_list_name(name):
                continue
            claim = self._lock(job_stem(name), os.path.join(self.processing, name), name)
            if claim is not None:
                claims.append(claim)
        return claims

    def _lock(self, stem: str, path: str, original: str) -> Claim | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The lock is on the file we opened; make sure it is still the one
            # under that name (its owner may have just moved it to done/).
            if not _same_fd(fd, path):
                os.close(fd)
                return None
        except BlockingIOError:
            os.close(fd)
            return None
        return Claim(stem, path, fd, original)

    def finish(self, claim: Claim, report: ReportPaths, *, failed: int) -> str:
        """Publish a finished job: list to done/, report beside it, failures to failed/."""
        done_path = _move_unique(claim.path, self.done, claim.published_name)
        done_stem = os.path.basename(done_path)[: -len(LIST_SUFFIX)]
        _move_unique(report.report, self.done, f"{done_stem}.report.jsonl")
        if failed:
            _move_unique(report.failed, self.failed, claim.published_name)
        else:
            _unlink_quietly(report.failed)
        claim.release()
        return done_path

    def fail(self, claim: Claim, report: ReportPaths) -> str:
        """A list that could not run at all goes to failed/ as it is, to retry later."""
        path = _move_unique(claim.path, self.failed, claim.published_name)
        _unlink_quietly(report.report)
        _unlink_quietly(report.failed)
        claim.release()
        return path


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a, follow_symlinks=False), os.stat(b, follow_symlinks=False)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _same_fd(fd: int, path: str) -> bool:
    try:
        sp = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    sf = os.fstat(fd)
    return (sf.st_dev, sf.st_ino) == (sp.st_dev, sp.st_ino)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _move_unique(source: str, folder: str, name: str) -> str:
    """Move `source` into `folder` as `name`, or `stem.N.ext` if that is taken."""
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = name, ""
    for n in range(100_000):
        candidate = name if n == 0 else f"{base}.{n}.{ext}" if ext else f"{base}.{n}"
        target = os.path.join(folder, candidate)
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if os.path.lexists(target):
                continue
            os.rename(source, target)
            return target
        os.unlink(source)
        return target
    raise FileExistsError(f"no free name for {name} in {folder}")
