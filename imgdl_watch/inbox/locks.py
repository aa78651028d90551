"""Locks that daemons sharing an inbox take: one per job stem, and one to publish.

A lock is an `flock` on a small file in the inbox's state folder. flock
belongs to the open file, so it dies with the process that held it: a
killed daemon never leaves a lock behind, and no lock needs a timeout. It
works whoever owns the lists, whatever their mode, on any local filesystem,
and on NFS (where Linux maps it to POSIX record locks).

**A stem's lock** is held by the daemon that runs a job of that stem, from
the moment it claims the list until the list is published in done/ or
failed/ (or the job is left in processing/ for later). Whoever holds it may
create, run and publish `processing/<stem>.txt`; nobody else may. That is
what makes a plain `rename` into that name safe, where it would otherwise
replace a list another daemon has just put there.

Lock files are removed by their holder when it lets go, so the state folder
does not grow with every stem ever seen. A file may therefore be unlinked
(or replaced) between our `open` and our `flock`: after locking, we check
that the name still leads to the very file we locked, and try again if not
(the usual lock-file protocol; `_TRIES` bounds it).

The locks' folder is opened as the inbox's own folders are (`folders`),
never through a symlink, and each lock file is opened, checked and removed
relative to that descriptor: a symlink put in place of the state folder,
even just after a claim checked it, never has a lock file made or removed
wherever it leads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence

import structlog

from ..naming import LOCK_SUFFIX
from .folders import make_own_folders, open_own_folder

log = structlog.get_logger("imgdl_watch")

# Each try loses only to a holder that let go (and removed the file) between
# our open and our flock; a few in a row mean the stem is changing hands.
_TRIES = 8
# The lock that publishing into done/ and failed/ takes, so that two daemons
# never pick the same free name there. Not a stem's name: stems never start
# with a dot.
PUBLISH_LOCK = ".publish" + LOCK_SUFFIX

_OPEN_FLAGS = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
# Why a list waits when its lock cannot be taken, as `inbox_unusable` says it.
LOCK_REFUSED = (
    "a lock cannot be taken in the state folder, so the lists of that stem wait;"
    " let the daemon write there, and move away what is not its own"
)


class HeldLock:
    """An flock held on `name` in the folder open at `folder_fd` (both the
    lock's). `release` removes the file, then lets go."""

    __slots__ = ("fd", "folder_fd", "name", "path")

    def __init__(self, path: str, folder_fd: int, name: str, fd: int) -> None:
        self.path = path
        self.folder_fd = folder_fd
        self.name = name
        self.fd = fd

    def release(self) -> None:
        """Plain system calls, no awaits: safe inside a cancelled scope."""
        if self.fd < 0:
            return
        # Unlinked while we still hold it: whoever opened this file meanwhile
        # finds, after its flock, that the name no longer leads here. (In the
        # folder we locked in, whatever its name leads to now; any error: a
        # lock file left behind is free for the next to take.)
        with contextlib.suppress(OSError):
            os.unlink(self.name, dir_fd=self.folder_fd)
        os.close(self.fd)
        os.close(self.folder_fd)
        self.fd = self.folder_fd = -1


def try_lock(top: str, way: Sequence[str], name: str) -> HeldLock | None:
    """Take the lock `name` in the folder `top/way...` if nobody holds it;
    None if somebody does, or if it cannot be taken there now (a folder on
    the way replaced by a symlink or a file, or a symlink put under the
    lock's name: the scan says what is wrong)."""
    folder = os.path.join(top, *way)
    path = os.path.join(folder, name)
    try:
        folder_fd = _open_locks_folder(top, way)
    except OSError as exc:
        _cannot_lock(path, exc)
        return None
    try:
        for _ in range(_TRIES):
            try:
                fd = os.open(name, _OPEN_FLAGS, 0o660, dir_fd=folder_fd)
            except OSError as exc:
                _cannot_lock(path, exc)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            if _leads_to(folder_fd, name, fd):
                _locked_in(folder)
                lock = HeldLock(path, folder_fd, name, fd)
                folder_fd = -1  # the lock's now
                return lock
            os.close(fd)  # its holder removed it after our open: take the new one
        return None
    finally:
        if folder_fd >= 0:
            os.close(folder_fd)


def _open_locks_folder(top: str, way: Sequence[str]) -> int:
    """The locks' folder, open; made first when it is missing (an `rm -rf`
    of the inbox: as a scan would). Raises `PlantedFolder` when a folder on
    the way is a symlink or a file."""
    try:
        return open_own_folder(top, way)
    except FileNotFoundError:
        make_own_folders(top, way)
        return open_own_folder(top, way)


# Why locks could not be taken, by folder: said once for each cause, until a
# lock is taken there again (a few entries: one a folder and error).
_SAID: set[tuple[str, int | None]] = set()


def _cannot_lock(path: str, exc: OSError) -> None:
    """Say once why a lock in `path`'s folder cannot be taken: its lists wait,
    and would otherwise wait without a word (a symlink under a lock's name,
    a state folder the daemon may not write in)."""
    key = (os.path.dirname(path), exc.errno)
    if key in _SAID:
        return
    _SAID.add(key)
    log.error("inbox_unusable", folder=key[0], reason=f"{LOCK_REFUSED}: {exc}")


def _locked_in(folder: str) -> None:
    """A lock was taken in `folder`: what stopped one there is over, and is
    said again if it comes back."""
    if _SAID:
        for key in [k for k in _SAID if k[0] == folder]:
            _SAID.discard(key)


@contextlib.contextmanager
def holding(top: str, way: Sequence[str], name: str) -> Iterator[None]:
    """Hold the lock `name` in the folder `top/way...` for a short critical
    section, waiting for it. Raises `PlantedFolder` when a folder on the way
    is a symlink or a file."""
    folder_fd = _open_locks_folder(top, way)
    try:
        while True:
            fd = os.open(name, _OPEN_FLAGS, 0o660, dir_fd=folder_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _leads_to(folder_fd, name, fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    finally:
        os.close(folder_fd)
    try:
        yield
    finally:
        # This lock file is shared by every publish and is never removed:
        # only its lock is let go.
        os.close(fd)


def _leads_to(folder_fd: int, name: str, fd: int) -> bool:
    try:
        named = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
