"""Claims: a list taken into processing/ under its stem's lock, by one daemon only.

A list is claimed under its stem's lock (`locks`): the claimer takes the lock
of `job_stem(name)`, makes sure no job of that stem waits in `processing/`
already, and renames the list to `processing/<stem>.txt`. The rename needs
only write access to the inbox, so it works for a list any user dropped, with
any mode (a hard link would not: under `fs.protected_hardlinks`, the default,
a service may not link a file it does not own). Only one renamer can win,
since the source vanishes; the lock makes sure the target never exists when
it lands, so nothing is ever replaced.

The lock is then held until the job is published or given up: it is the
daemon's "I am running this". A killed daemon's lock goes with its process,
so any daemon may resume that job (`leftovers_here`); a stem whose lock is
held waits, so two lists of one stem never run at once (they would share a
folder and a report).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ..naming import JOB_NAME_ROOM, MAX_NAME_BYTES, job_stem, list_suffix
from .layout import LIST_SUFFIX, NOT_A_FILE_CLAIMED, is_list_name
from .locks import LOCK_SUFFIX, PUBLISH_LOCK, HeldLock, holding, try_lock
from .publish import move_unique

if TYPE_CHECKING:
    from .lifecycle import Inbox

log = structlog.get_logger("imgdl_watch")


@dataclass(slots=True)
class Claim:
    """A list this daemon holds: its processing file, open, under its stem's lock."""

    stem: str
    path: str
    fd: int
    original: str
    lock: HeldLock
    # The category whose subfolder it came from; "" at the top of the inbox.
    category: str = ""

    @property
    def job(self) -> str:
        """The job's name: its stem, under its category's (`art/cats`)."""
        return f"{self.category}/{self.stem}" if self.category else self.stem

    @property
    def suffix(self) -> str:
        """The list's suffix, in lower case, as its processing/ name has it."""
        return (list_suffix(self.original) or LIST_SUFFIX).lower()

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
        suffix = self.suffix
        stem_bytes = len(os.fsencode(self.original)) - len(suffix.encode())
        if stem_bytes + JOB_NAME_ROOM <= MAX_NAME_BYTES:
            return self.original
        return self.stem + suffix


def claim_here(inbox: Inbox, name: str) -> Claim | None:
    """Take `name`, a list at the top of `inbox`'s own folder, into its processing/."""
    stem = job_stem(name)
    lock = try_lock(inbox.locks, stem + LOCK_SUFFIX)
    if lock is None:
        return None
    target = os.path.join(inbox.processing, stem + (list_suffix(name) or LIST_SUFFIX).lower())
    try:
        if _waiting(inbox, stem):
            lock.release()
            return None
        os.rename(os.path.join(inbox.root, name), target)
    except FileNotFoundError:
        lock.release()  # taken already, or processing/ itself is gone (a scan recreates it)
        return None
    except BaseException:
        lock.release()
        raise
    return _open_claimed(inbox, stem, target, name, lock)


def _waiting(inbox: Inbox, stem: str) -> bool:
    """Whether a list of `stem`, in any format, is in processing/ (call under its lock)."""
    return any(
        is_list_name(name) and job_stem(name) == stem for name in os.listdir(inbox.processing)
    )


def leftovers_here(inbox: Inbox) -> list[Claim]:
    """The jobs in `inbox`'s own processing/ that no live daemon holds, claimed."""
    claims = []
    for name in sorted(os.listdir(inbox.processing)):
        if not is_list_name(name):
            continue
        stem = job_stem(name)
        lock = try_lock(inbox.locks, stem + LOCK_SUFFIX)
        if lock is None:
            continue  # running here or in another daemon
        path = os.path.join(inbox.processing, name)
        # Its daemon may have published it between our listing and our lock.
        if not os.path.lexists(path):
            lock.release()
            continue
        claim = _open_claimed(inbox, stem, path, name, lock)
        if claim is not None:
            claims.append(claim)
    return claims


def _open_claimed(
    inbox: Inbox, stem: str, path: str, original: str, lock: HeldLock
) -> Claim | None:
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
        return Claim(stem, path, fd, original, lock, inbox.category)
    if fd >= 0:
        os.close(fd)
    try:
        with holding(inbox.locks, PUBLISH_LOCK):
            moved = move_unique(path, inbox.failed, os.path.basename(path))
    finally:
        lock.release()
    log.warning(
        "file_ignored", file=original, reason=NOT_A_FILE_CLAIMED, failed_as=os.path.basename(moved)
    )
    return None
