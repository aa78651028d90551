"""A job's folder: made and opened safely, and watched for free space (a
crash's leftovers are swept by `filesink.sweep_temp_files`).

The folder is opened once, without following symlinks, and every file in it
is reached through that descriptor (`filesink`), so that no symlink, neither
the folder nor one planted inside it, is ever followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

import structlog
import trio

from ..download.filesink import source_of
from ..errors import Interrupted
from ..naming import candidates, source_tag

# Seconds between checks of free space while it is below `min_free`.
DISK_POLL_S = 5.0

log = structlog.get_logger("imgdl_watch")


def is_empty(dir_fd: int) -> bool:
    """Whether the folder holds nothing at all (a new job's, once swept)."""
    with os.scandir(dir_fd) as entries:
        return next(entries, None) is None


def existing_file(dir_fd: int, name: str, url: str) -> tuple[str | None, bool]:
    """The file that `url`'s download named `name` left in the folder, if
    any, and whether it says it is another URL's: a regular, non-empty file
    under one of the names it may have been given (`naming.candidates`).
    Another URL's is passed over for one that is not (`pic` finds its own
    `pic.png` behind the list's literal `pic.jpg`), and is the answer only
    when there is no other: the caller then looks under the URL's wide hash.
    Asked of the folder itself, one `stat` a name (more only for a name with
    no extension), rather than a set of every name in it: a resumed job of
    ten million images would hold ten million."""
    another = None
    for candidate in candidates(name):
        try:
            found = os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if not (stat.S_ISREG(found.st_mode) and found.st_size):
            continue
        if not made_for_another(dir_fd, candidate, url):
            return candidate, False
        another = another or candidate
    return another, another is not None


def made_for_another(dir_fd: int, file: str, url: str) -> bool:
    """Whether `file` in the folder says it was downloaded from a URL other
    than `url`: an earlier list of the same name's image under the name this
    URL wants, or a look-alike's that took it first (`FileSink.rename`). A
    file that says nothing (no tag: made before files had one, on a
    filesystem without user attributes, or put there by someone else) is
    taken for `url`'s, as it always was."""
    tag = source_of(dir_fd, file)
    return tag is not None and tag != source_tag(url)


def open_job_folder(parent: str, name: str) -> int:
    """Create `parent/name` if needed and open it without following symlinks.

    The output folder itself is created again if it went away while we ran.
    """
    os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(os.path.join(parent, name), 0o755)
    except FileExistsError:
        pass
    return os.open(
        os.path.join(parent, name), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    )


class DiskSpace:
    """Holds a job's downloads while its folder's filesystem has less than
    `min_free` bytes free (`--min-free`): `disk_low` once, then `disk_ok`.

    `on_full(source, free_bytes)` hears that the disk is full: at each
    `disk_low` ("disk_low"), and at the first download of the job that
    failed for want of space (`full()`, "download_failed")."""

    __slots__ = ("_dir_fd", "_low", "_min_free", "_on_full", "_stopping", "_told_full")

    def __init__(
        self,
        dir_fd: int,
        *,
        min_free: int,
        stopping: trio.Event,
        on_full: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self._dir_fd = dir_fd
        self._min_free = min_free
        self._stopping = stopping
        self._on_full = on_full
        self._told_full = False
        self._low = False

    def full(self) -> None:
        """A download failed for want of space: say so once (every one after it fails too)."""
        if self._on_full is None or self._told_full:
            return
        self._told_full = True
        try:
            free: int | None = self.free_bytes()
        except OSError:
            free = None
        self._on_full("download_failed", free)

    def free_bytes(self) -> int:
        # fstatvfs on the folder we hold: one fast system call, no thread hop.
        st = os.fstatvfs(self._dir_fd)
        return st.f_bavail * st.f_frsize

    async def wait(self) -> None:
        """Return once there is room; raise `Interrupted` if the stop comes first."""
        if not self._min_free:
            return
        while (free := self.free_bytes()) < self._min_free:
            if not self._low:
                self._low = True
                log.warning("disk_low", free_bytes=free, min_free=self._min_free)
                if self._on_full is not None:
                    self._on_full("disk_low", free)
            with trio.move_on_after(DISK_POLL_S):
                await self._stopping.wait()
            if self._stopping.is_set():
                raise Interrupted
        if self._low:
            self._low = False
            log.info("disk_ok", free_bytes=free, min_free=self._min_free)
