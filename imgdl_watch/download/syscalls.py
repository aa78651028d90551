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

# From <fcntl.h> and <linux/fs.h>.
_SYNC_FILE_RANGE_WRITE = 2
_RENAME_NOREPLACE = 1


def _libc() -> ctypes.CDLL | None:
    # The process's own symbols (dlopen(NULL)), which hold libc's: the
    # interpreter links it. `ctypes.util.find_library("c")` would run
    # `ldconfig -p` in a child process at every start (strace -f -e execve).
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing `fd`'s data now. Best effort: without
    it, the fdatasync that follows is only slower, never less safe."""
    if _LIBC is not None:
        _LIBC.sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), _SYNC_FILE_RANGE_WRITE)


def syncfs(fd: int) -> bool:
    """Flush the whole filesystem that holds `fd`. False where syncfs is not
    to be had (no libc, or ENOSYS): the caller syncs file by file then."""
    if _LIBC is None:
        return False
    if _LIBC.syncfs(fd) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        return False
    raise OSError(code, os.strerror(code))


def rename_new(source: str, target: str, *, dir_fd: int) -> None:
    """Rename `source` to `target` in the folder `dir_fd`, never over an
    existing `target` (FileExistsError then). Where renameat2 or its flag is
    not to be had, a hard link and an unlink do the same, in two steps."""
    if _LIBC is not None:
        done = _LIBC.renameat2(
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
