"""Claims: a list taken into processing/ under its stem's lock, by one daemon only.

A list is claimed under its stem's lock (`locks`): the claimer takes the lock
of `job_stem(name)`, makes sure no job of that stem waits in `processing/`
already, and renames the list to `processing/<stem>.txt`. The rename needs
only write access to the inbox, so it works for a list any user dropped, with
any mode (a hard link would not: under `fs.protected_hardlinks`, the default,
a service may not link a file it does not own). Only one renamer can win,
since the source vanishes; the lock makes sure the target never exists when
it lands, so nothing is ever replaced.

The claim also holds its processing/ folder open (`Claim.folder_fd`), as
`folders` opened it (never through a symlink), and the inbox publishes the
list and its report from that descriptor.

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

from ..naming import (
    JOB_NAME_ROOM,
    LOCK_SUFFIX,
    MAX_NAME_BYTES,
    job_stem,
    list_suffix,
    tagged_stem,
)
from .folders import planted
from .layout import (
    FAILED,
    LIST_SUFFIX,
    NOT_A_FILE_CLAIMED,
    NOT_READABLE_CLAIMED,
    PROCESSING,
    WAITING_CLAIMED,
    is_list_name,
)
from .locks import PUBLISH_LOCK, HeldLock, holding, try_lock
from .publish import move_unique, stem_tag

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
    # Its processing/ folder, open: what the inbox publishes it from.
    folder_fd: int = -1

    @property
    def entry(self) -> str:
        """Its name in processing/."""
        return os.path.basename(self.path)

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
        if self.folder_fd >= 0:
            os.close(self.folder_fd)
            self.folder_fd = -1
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
    stem = _stem_of(inbox, name)
    lock = try_lock(inbox.top, inbox.locks_way, stem + LOCK_SUFFIX)
    if lock is None:
        return None
    entry = stem + (list_suffix(name) or LIST_SUFFIX).lower()
    folder_fd = -1
    try:
        with inbox.folder() as root_fd:
            folder_fd = inbox.open_folder(PROCESSING)
            if _waiting(folder_fd, stem):
                os.close(folder_fd)
                folder_fd = -1
                lock.release()
                return None
            os.rename(name, entry, src_dir_fd=root_fd, dst_dir_fd=folder_fd)
    except OSError as exc:
        if folder_fd >= 0:
            os.close(folder_fd)
        lock.release()
        # Taken already, or processing/ is gone or planted (a symlink, a
        # file): the scan recreates it or says so.
        if isinstance(exc, FileNotFoundError) or planted(exc):
            return None
        raise
    except BaseException:
        if folder_fd >= 0:
            os.close(folder_fd)
        lock.release()
        raise
    return _open_claimed(inbox, stem, folder_fd, entry, original=name, lock=lock)


def _stem_of(inbox: Inbox, name: str) -> str:
    """The job stem of the list `name`: its name's, or, for a failed list
    published under a number and dropped again (`cats.1.txt`), the stem it
    failed in (`naming.tagged_stem`), so that it runs into the same folder."""
    try:
        with inbox.folder() as root_fd:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=root_fd)
    except OSError:
        return job_stem(name)  # gone, or not a file: the claim says so
    try:
        stem = tagged_stem(name, stem_tag(fd))
    finally:
        os.close(fd)
    # A tag never makes a top-level list a category's namesake, which the
    # scan refuses by name (its job would write into the category's output).
    return job_stem(name) if stem in inbox.categories else stem


def _waiting(folder_fd: int, stem: str) -> bool:
    """Whether a list of `stem`, in any format, is in processing/ (call under its lock)."""
    return any(is_list_name(name) and job_stem(name) == stem for name in os.listdir(folder_fd))


def leftovers_here(inbox: Inbox) -> list[Claim]:
    """The jobs in `inbox`'s own processing/ that no live daemon holds, claimed.
    Raises OSError when processing/ is missing, a symlink or not a folder."""
    claims = []
    with inbox.folder(PROCESSING) as listed:
        for name in sorted(os.listdir(listed)):
            if not is_list_name(name):
                continue
            stem = job_stem(name)
            lock = try_lock(inbox.top, inbox.locks_way, stem + LOCK_SUFFIX)
            if lock is None:
                continue  # running here or in another daemon
            # Its daemon may have published it between our listing and our lock.
            try:
                os.stat(name, dir_fd=listed, follow_symlinks=False)
            except FileNotFoundError:
                lock.release()
                continue
            claim = _open_claimed(inbox, stem, os.dup(listed), name, original=name, lock=lock)
            if claim is not None:
                claims.append(claim)
    return claims


def _open_claimed(
    inbox: Inbox, stem: str, folder_fd: int, entry: str, *, original: str, lock: HeldLock
) -> Claim | None:
    """Open a list we hold the stem of, `entry` in the processing/ folder open
    at `folder_fd` (the claim's from then on). Something that is not a
    regular file (a symlink or a folder renamed in after the scan looked)
    goes to failed/ as it is, unread."""
    reason = NOT_A_FILE_CLAIMED
    try:
        fd = os.open(
            entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=folder_fd
        )
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            # Another user's list of mode 0600: it would fail again at every
            # start, and it once stopped the daemon each time.
            reason = NOT_READABLE_CLAIMED
        elif exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            os.close(folder_fd)
            lock.release()
            raise
        fd = -1
    if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
        path = os.path.join(inbox.processing, entry)
        return Claim(stem, path, fd, original, lock, inbox.category, folder_fd)
    if fd >= 0:
        os.close(fd)
    moved: str | None = None
    try:
        with holding(inbox.top, inbox.locks_way, PUBLISH_LOCK), inbox.folder(FAILED) as failed_fd:
            to_failed = (inbox.processing, inbox.failed)
            moved = move_unique(folder_fd, entry, failed_fd, entry, paths=to_failed)
    except OSError as exc:
        # failed/ is gone or planted (the scan's inbox_unusable says so, once),
        # or the daemon may not write in it: the entry waits in processing/,
        # tried again at each rescan, and said once.
        if not (isinstance(exc, FileNotFoundError | PermissionError) or planted(exc)):
            raise
        if isinstance(exc, PermissionError) and inbox.failed not in _SAID:
            # Once for the folder, until something goes into it again.
            _SAID.add(inbox.failed)
            log.warning(
                "file_ignored",
                file=original,
                reason=f"{WAITING_CLAIMED}: failed/ refused it ({exc.strerror})",
            )
    finally:
        os.close(folder_fd)
        lock.release()
    if moved is not None:
        _SAID.discard(inbox.failed)
        log.warning("file_ignored", file=original, reason=reason, failed_as=moved)
    return None


# The failed/ folders that refused a claimed entry, said once each until one
# takes an entry again.
_SAID: set[str] = set()
