"""The inbox lifecycle: which files are lists, when they are complete, and
where they go.

    INBOX/cats.txt          dropped by a user; taken once it has settled
    INBOX/processing/       claimed lists, each locked by the daemon running it
    INBOX/done/             finished lists, with <name>.report.jsonl beside each
    INBOX/failed/           the URLs that failed, one per line, ready to re-drop

**Complete.** A file is taken once it has settled (`settle`).

**Claim.** A list is claimed under its stem's lock (`locks`): the claimer
takes the lock of `job_stem(name)`, makes sure no job of that stem waits in
`processing/` already, and renames the list to `processing/<stem>.txt`. The
rename needs only write access to the inbox, so it works for a list any
user dropped, with any mode (a hard link would not: under
`fs.protected_hardlinks`, the default, a service may not link a file it
does not own). Only one renamer can win, since the source vanishes; the
lock makes sure the target never exists when it lands, so nothing is ever
replaced. Nothing in the inbox is ever removed by name.

The lock is then held until the job is published or given up: it is the
daemon's "I am running this". A killed daemon's lock goes with its
process, so any daemon may resume that job; a stem whose lock is held
waits, so two lists of one stem never run at once (they would share a
folder and a report).

**Finish.** The list moves to `done/` and its report beside it; failures go to
`failed/`. A name already taken there gets a number (`cats.1.txt`): nothing
is overwritten. A list whose name is too long for that number and for its
report's name is published under its job's (shortened) stem instead.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import NamedTuple

from ..naming import JOB_NAME_ROOM, MAX_NAME_BYTES, job_stem
from .locks import LOCK_SUFFIX, PUBLISH_LOCK, HeldLock, holding, try_lock
from .settle import Seen

LIST_SUFFIX = ".txt"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
STATE = ".imgdl-watch"
# The daemons' locks, inside the state folder.
LOCKS = "locks"
# Editors and downloaders write these while a file is not finished yet.
_TEMP_PREFIXES = (".", "~", "#")


def is_list_name(name: str) -> bool:
    """A list is `*.txt`, neither hidden nor an editor's or tool's temp name."""
    return name.lower().endswith(LIST_SUFFIX) and not name.startswith(_TEMP_PREFIXES)


class Parts(NamedTuple):
    """Where a running job's report and its list of failures are written, in
    processing/ (hidden), until `Inbox.finish` publishes them."""

    report: str
    failed: str


@dataclass(slots=True)
class Claim:
    """A list this daemon holds: its processing file, open, under its stem's lock."""

    stem: str
    path: str
    fd: int
    original: str
    lock: HeldLock

    def release(self) -> None:
        """Close the list and let go of the stem (plain syscalls: safe when
        cancelled). Once is enough; again does nothing."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.lock.release()

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
        self.locks = os.path.join(self.state, LOCKS)

    def ensure_layout(self) -> None:
        for folder in (self.root, self.processing, self.done, self.failed, self.state, self.locks):
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

    def parts(self, stem: str) -> Parts:
        return Parts(
            report=os.path.join(self.processing, f".{stem}.report.part"),
            failed=os.path.join(self.processing, f".{stem}.failed.part"),
        )

    def claim(self, name: str) -> Claim | None:
        """Take `INBOX/name` into `processing/`. None when it is not ours to take now:
        gone (another daemon took it), or its stem is busy (running, or waiting
        in processing/ to be resumed, which comes first)."""
        stem = job_stem(name)
        lock = try_lock(self.locks, stem + LOCK_SUFFIX)
        if lock is None:
            return None
        target = os.path.join(self.processing, stem + LIST_SUFFIX)
        try:
            if os.path.lexists(target):
                lock.release()
                return None
            os.rename(os.path.join(self.root, name), target)
        except FileNotFoundError:
            lock.release()  # taken already, or processing/ itself is gone (a scan recreates it)
            return None
        except BaseException:
            lock.release()
            raise
        return self._open_claimed(stem, target, name, lock)

    def leftovers(self) -> list[Claim]:
        """Jobs in `processing/` that no live daemon holds: ours to resume."""
        claims = []
        for name in sorted(os.listdir(self.processing)):
            if not is_list_name(name):
                continue
            stem = job_stem(name)
            lock = try_lock(self.locks, stem + LOCK_SUFFIX)
            if lock is None:
                continue  # running here or in another daemon
            path = os.path.join(self.processing, name)
            # Its daemon may have published it between our listing and our lock.
            if not os.path.lexists(path):
                lock.release()
                continue
            claim = self._open_claimed(stem, path, name, lock)
            if claim is not None:
                claims.append(claim)
        return claims

    def _open_claimed(self, stem: str, path: str, original: str, lock: HeldLock) -> Claim | None:
        """Open a list we hold the stem of. Something that is not a regular file
        (a symlink or a folder renamed in after the scan looked) goes to
        failed/ as it is, unread."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                lock.release()
                raise
            fd = -1
        if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            return Claim(stem, path, fd, original, lock)
        if fd >= 0:
            os.close(fd)
        try:
            with holding(self.locks, PUBLISH_LOCK):
                _move_unique(path, self.failed, os.path.basename(path))
        finally:
            lock.release()
        return None

    def finish(self, claim: Claim, *, failed: int) -> str:
        """Publish a finished job: list to done/, report beside it, failures to
        failed/. The claim is still held: the caller releases it."""
        report = self.parts(claim.stem)
        with holding(self.locks, PUBLISH_LOCK):
            done_path = _move_unique(claim.path, self.done, claim.published_name)
            done_stem = os.path.basename(done_path)[: -len(LIST_SUFFIX)]
            _move_unique(report.report, self.done, f"{done_stem}.report.jsonl")
            if failed:
                _move_unique(report.failed, self.failed, claim.published_name)
            else:
                _unlink_quietly(report.failed)
        return done_path

    def fail(self, claim: Claim) -> str:
        """A list that could not run at all goes to failed/ as it is, to retry
        later. The claim is still held: the caller releases it."""
        report = self.parts(claim.stem)
        with holding(self.locks, PUBLISH_LOCK):
            path = _move_unique(claim.path, self.failed, claim.published_name)
        _unlink_quietly(report.report)
        _unlink_quietly(report.failed)
        return path


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _move_unique(source: str, folder: str, name: str) -> str:
    """Move `source` into `folder` as `name`, or `stem.N.ext` if that is taken.

    Call under the publish lock: every daemon picks free names under it, so
    the name found free is still free when the rename lands. (A rename, not a
    link and an unlink: the list may belong to another user, see `claim`.)
    """
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = name, ""
    for n in range(100_000):
        candidate = name if n == 0 else f"{base}.{n}.{ext}" if ext else f"{base}.{n}"
        target = os.path.join(folder, candidate)
        if os.path.lexists(target):
            continue
        os.rename(source, target)
        return target
    raise FileExistsError(errno.EEXIST, f"no free name for {name}", folder)
