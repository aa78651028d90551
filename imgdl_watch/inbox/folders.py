"""An inbox's own folders, opened so that a symlink planted there leads nowhere.

The inbox is writable by the group whose members drop lists, so any of them
can rename processing/, done/ or failed/ (or a category's folder) away and
put a symlink, or a folder of their own, in its place. Followed, a symlink
would have the daemon take "leftover" lists from any folder it can write
(and show their lines in its log), or publish lists and reports into one.

So every folder on the way from the inbox to the one used is opened
relative to the one before it, with O_NOFOLLOW and O_DIRECTORY: a symlink
(ELOOP) or anything that is not a folder (ENOTDIR) is refused, never
followed. Listings, renames and opens then go through the descriptor
(`renameat`, `openat`), so that the folder checked is the folder used, even
if its name is swapped a moment later. (A real folder put in place of
processing/, done/ or failed/ gains its maker nothing: what the daemon
moves into it is what they could drop or read anyway. One in place of the
state folder lets them hold the locks of stems, and so hold those lists
back, as filling the disk would: nothing is read or written elsewhere.)
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .layout import FOLDER_PLANTED

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# What opening a planted entry raises: a symlink, or not a folder.
REFUSED = (errno.ELOOP, errno.ENOTDIR)


class PlantedFolder(OSError):
    """One of the inbox's own folders is a symlink, or not a folder: refused."""


def open_folder(root: str, names: Sequence[str] = ()) -> int:
    """A descriptor of `root/names[0]/names[1]/...`, each name opened without
    following a symlink (`root` itself is the operator's path, followed).
    Raises OSError: ENOENT when a folder is missing, ELOOP or ENOTDIR when
    one is a symlink or not a folder."""
    fd = os.open(root, _ROOT)
    try:
        for name in names:
            inner = os.open(name, _FOLDER, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_own_folder(root: str, names: Sequence[str]) -> int:
    """`open_folder` of one of the inbox's own folders: `PlantedFolder`,
    naming the folder, when one on the way is a symlink or not a folder."""
    try:
        return open_folder(root, names)
    except OSError as exc:
        if planted(exc):
            raise PlantedFolder(exc.errno, FOLDER_PLANTED, os.path.join(root, *names)) from exc
        raise


def make_own_folders(root: str, names: Sequence[str]) -> None:
    """Make `root/names[0]/names[1]/...` where missing, each made and then
    opened relative to the one before it, never through a symlink (`root`
    itself is the operator's path, followed). `PlantedFolder` when one on
    the way is a symlink or not a folder: nothing is made wherever it leads,
    as `os.makedirs`, which follows a symlink on the way, would."""
    fd = os.open(root, _ROOT)
    try:
        for name in names:
            try:
                os.mkdir(name, 0o777, dir_fd=fd)  # the umask applies, as for makedirs
            except FileExistsError:
                pass  # a folder already, or planted: the open says which
            try:
                inner = os.open(name, _FOLDER, dir_fd=fd)
            except OSError as exc:
                if planted(exc):
                    raise PlantedFolder(
                        exc.errno, FOLDER_PLANTED, os.path.join(root, *names)
                    ) from exc
                raise
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


@contextmanager
def opened(root: str, names: Sequence[str] = ()) -> Iterator[int]:
    """`open_folder`, closed on the way out."""
    fd = open_folder(root, names)
    try:
        yield fd
    finally:
        os.close(fd)


def open_regular(name: str, folder_fd: int) -> int | None:
    """A descriptor of `name`, in the folder open at `folder_fd`, if it is a
    regular file; None for anything else: absent, unreadable, a symlink (not
    followed), a FIFO (opened without waiting for a writer, then refused)."""
    try:
        fd = os.open(name, _FILE, dir_fd=folder_fd)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def planted(exc: OSError) -> bool:
    """Whether `exc` says that a folder on the way is a symlink or not a folder."""
    return exc.errno in REFUSED
