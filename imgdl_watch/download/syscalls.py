"""The few Linux system calls that Python's os module lacks, through libc.

    sync_file_range   start writing a file's dirty pages, without waiting
    syncfs            flush the filesystem that holds a file
    renameat2         rename, but never over an existing name (RENAME_NOREPLACE)

Each says when it is not to be had (no libc, an old kernel, a filesystem
without the flag), and its caller falls back on a plain way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable

# From <fcntl.h> and <linux/fs.h>.
_SYNC_FILE_RANGE_WRITE = 2
_RENAME_NOREPLACE = 1


def _libc() -> ctypes.CDLL | None:
    # The process's own symbols (dlopen(NULL)), which hold libc's: the
    # interpreter links it. `ctypes.util.find_library("c")` would run
    # `ldconfig -p` in a child process at every start (strace -f -e execve).
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # a static interpreter, which has no dlopen
        return None


_LIBC = _libc()
# Each call, or None where this libc has not got it (renameat2 came with
# glibc 2.28 and musl 1.2.5), or there is none: its caller falls back then.
_SYNC_FILE_RANGE: Callable[..., int] | None = getattr(_LIBC, "sync_file_range", None)
_SYNCFS: Callable[..., int] | None = getattr(_LIBC, "syncfs", None)
_RENAMEAT2: Callable[..., int] | None = getattr(_LIBC, "renameat2", None)


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing `fd`'s data now. Best effort: without
    it, the fdatasync that follows is only slower, never less safe."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, ctypes.c_int64(0), ctypes.c_int64(0), _SYNC_FILE_RANGE_WRITE)


def syncfs(fd: int) -> bool:
    """Flush the whole filesystem that holds `fd`. False where syncfs is not
    to be had (not in libc, or ENOSYS): the caller syncs file by file then."""
    if _SYNCFS is None:
        return False
    if _SYNCFS(fd) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        return False
    raise OSError(code, os.strerror(code))


def rename_new(source: str, target: str, *, dir_fd: int) -> None:
    """Rename `source` to `target` in the folder `dir_fd`, never over an
    existing `target` (FileExistsError then). Where renameat2 or its flag is
    not to be had, a hard link and an unlink do the same, in two steps."""
    if _RENAMEAT2 is not None:
        done = _RENAMEAT2(
            dir_fd, os.fsencode(source), dir_fd, os.fsencode(target), _RENAME_NOREPLACE
        )
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), target)
    os.link(source, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(source, dir_fd=dir_fd)
