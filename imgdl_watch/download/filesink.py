"""Writing downloaded files so that a final name only ever holds a whole file.

An image of 60 KB arrives in one or two network reads, so its body is kept in
memory and written at the end: open a temporary name with
O_EXCL|O_NOFOLLOW in the job folder, write, make durable (`durability`),
rename into place.
Only a body that grows past `SPILL_BYTES` goes to its temporary file as it
arrives.

Those system calls run in a worker thread, and files that finish together
share one thread hop (`GroupCommit`): a hop costs the event loop far more
than its ~100 µs of latency suggests, because the thread and the loop hand
the GIL back and forth on every system call.

All paths are relative to the job folder's descriptor (`dir_fd`), so no
symlink, neither the folder nor one planted inside it, is ever followed.
Temporary names start with `TEMP_PREFIX`, a hidden name no image can have,
so that a job can sweep stale ones left by a crash (`folder`).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat

import trio

from ..errors import AlreadyThere, DiskFull, WriteFailed
from .durability import Durability, make_durable
from .syscalls import rename_new, start_writeback

# Bodies up to this size stay in memory until done; 64 downloads in flight
# then hold at most 16 MiB. Larger bodies stream to disk in writes this big.
SPILL_BYTES = 256 * 1024
TEMP_PREFIX = ".imgdl-tmp-"
# Files are readable by the group: members of the service's group read the
# downloads (the umask narrows this further where the operator wants).
FILE_MODE = 0o644

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# Temporary names are a token drawn once per process, then a serial number.
# The token keeps them unguessable from outside; the serial costs nothing,
# where a random name per file would be a getrandom(2) call in the publishing
# thread (and so one more GIL hand-off per file, see `GroupCommit`). A name
# that exists anyway (O_EXCL) is passed over for the next one.
RUN_TOKEN = secrets.token_hex(8)
_serial = itertools.count()
# The extended attribute that names a file's URL (`naming.source_tag`), so
# that a later list of the same name can tell its own file from another
# URL's under the same name (`job.folder.made_for_another`). A filesystem
# without user attributes simply has none.
SOURCE_XATTR = "user.imgdl-watch.source"
# Names tried before a temporary file that cannot be created is an error.
_TEMP_NAME_TRIES = 8


def _renew_token() -> None:
    """A forked child (a download worker, `prefork`) draws a token of its
    own: its temporary files must never be taken for its parent's, which a
    dead worker's sweep (`workers`, by its token) would remove."""
    global RUN_TOKEN  # noqa: PLW0603 - the process's one token, read as a global
    RUN_TOKEN = secrets.token_hex(8)


os.register_at_fork(after_in_child=_renew_token)


def sweep_temp_files(dir_fd: int, prefix: str = TEMP_PREFIX) -> int:
    """Remove the temporary files whose names start with `prefix` from a job
    folder: every one that a killed run left, or one process's (its
    `TEMP_PREFIX` + `RUN_TOKEN`, a download worker's that died). How many."""
    removed = 0
    with os.scandir(dir_fd) as entries:
        names = [e.name for e in entries if e.name.startswith(prefix)]
    for name in names:
        try:
            os.unlink(name, dir_fd=dir_fd)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def source_of(dir_fd: int, file: str) -> bytes | None:
    """The tag of the URL that `file` in the folder was downloaded from
    (`SOURCE_XATTR`), or None: no tag (made before files had one, on a
    filesystem without user attributes, or put there by someone else), or
    no regular file to ask. Blocking."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(file, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.getxattr(fd, SOURCE_XATTR)
    except OSError:  # no tag, or no user attributes on this filesystem
        return None
    finally:
        os.close(fd)


def _write_error(exc: OSError) -> WriteFailed:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(os.strerror(exc.errno))
    return WriteFailed(f"{exc.strerror or exc}")


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


class FileSink:
    """Collects one body and publishes it under its final name, or nothing."""

    __slots__ = ("_chunks", "_dir_fd", "_fd", "_held", "_source", "_temp", "sha256", "size")

    def __init__(self, dir_fd: int, *, source: bytes = b"") -> None:
        """`source`: the tag of the URL the body is for, set on the file."""
        self._dir_fd = dir_fd
        self._source = source
        self._chunks: list[bytes] = []
        self._held = 0
        self._fd: int | None = None
        self._temp: str | None = None
        self.size = 0
        # The body's sha256 (hex), once `body.receive` has it all.
        self.sha256: str | None = None

    def _open_temp(self) -> int:
        tries = 0
        while True:
            temp = f"{TEMP_PREFIX}{RUN_TOKEN}-{next(_serial)}.part"
            tries += 1
            try:
                fd = os.open(temp, _OPEN_FLAGS, FILE_MODE, dir_fd=self._dir_fd)
            except FileExistsError:
                if tries < _TEMP_NAME_TRIES:
                    continue
                raise
            self._temp, self._fd = temp, fd
            return fd

    def _spill(self) -> None:
        fd = self._fd if self._fd is not None else self._open_temp()
        chunks, self._chunks, self._held = self._chunks, [], 0
        _write_all(fd, chunks)

    async def write(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._held += len(chunk)
        self.size += len(chunk)
        if self._held >= SPILL_BYTES:
            try:
                await trio.to_thread.run_sync(self._spill)
            except OSError as exc:
                raise _write_error(exc) from exc

    def write_out(self, *, writeback: bool) -> int:
        """Phase 1 of a publish: write what is left to the temporary file, and
        start its writeback if asked. Its open descriptor, for phase 2. Blocking."""
        fd = self._fd if self._fd is not None else self._open_temp()
        _write_all(fd, self._chunks)
        self._chunks = []
        if self._source:
            with contextlib.suppress(OSError):  # no user attributes here: no tag
                os.setxattr(fd, SOURCE_XATTR, self._source)
        if writeback:
            start_writeback(fd)
        return fd

    def rename(self, name: str, alias: str | None = None) -> str:
        """Phase 3: close, and rename to `name` (its data durable, if asked),
        or to `alias` when a file that is not this URL's took `name`
        meanwhile. The name it took.

        Never over a regular file already there (FileExistsError then, with
        that file's name: this URL's own, or one under `alias` too, left as
        it is). Anything else under that name, a symlink someone planted in
        our folder, is replaced, never followed. Blocking.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            self._rename_new(name)
        except FileExistsError:
            if alias is None or (self._source and source_of(self._dir_fd, name) == self._source):
                raise
            # A look-alike of the list finished first under the name this
            # body's response gave it (`pic`, served as a PNG, beside a
            # `pic.png`): this one takes its URL's wide hash, which is where
            # a resumed job looks for it (`job.folder.existing_file`). So
            # does it when the file there says nothing of its URL (no user
            # attributes here): a file that appeared while this body came
            # is no earlier run's of this URL, which the job found first.
            self._rename_new(alias)
            name = alias
        self._temp = None
        return name

    def _rename_new(self, name: str) -> None:
        assert self._temp is not None
        try:
            rename_new(self._temp, name, dir_fd=self._dir_fd)
        except FileExistsError as exc:
            there = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
            if stat.S_ISREG(there.st_mode):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name) from exc
            os.rename(self._temp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def discard(self) -> None:
        """Drop the body and its temporary file. Plain syscalls, no awaits, so
        that it also runs inside a cancelled scope."""
        self._chunks = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._temp is not None:
            try:
                os.unlink(self._temp, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
            self._temp = None


class _Entry:
    __slots__ = ("alias", "done", "error", "fd", "lead", "name", "sink", "taken")

    def __init__(self, sink: FileSink, name: str, alias: str | None = None) -> None:
        self.sink = sink
        self.fd = -1
        # The name wanted; once renamed, the name taken (`alias`, if it had to).
        self.name = name
        self.alias = alias
        self.done = trio.Event()
        self.error: OSError | None = None
        self.lead = False
        self.taken = False


def _publish_batch(batch: list[_Entry], durability: Durability) -> None:
    """Write out, make durable and rename every file of a batch, in three phases
    (see `durability`); a file that fails fails alone."""
    written: list[_Entry] = []
    writeback = durability is not Durability.NONE
    for entry in batch:
        try:
            entry.fd = entry.sink.write_out(writeback=writeback)
            written.append(entry)
        except OSError as exc:
            entry.error = exc
    errors = make_durable([e.fd for e in written], durability)
    for entry, error in zip(written, errors, strict=True):
        if error is not None:
            entry.error = error
            continue
        try:
            entry.name = entry.sink.rename(entry.name, entry.alias)
        except OSError as exc:
            entry.error = exc


class GroupCommit:
    """Publishes files in batches: one thread hop for every file ready at once.

    Design note. A hop to a worker thread per file costs the event loop GIL
    hand-offs on every system call the thread makes. Instead, files that
    finish while a batch is being written wait, and go together in the next
    hop. There is no batcher task: the first file to arrive leads (it runs
    the hop for the batch it finds, itself included), and when its batch is
    done it hands the lead to the first file that arrived meanwhile. So each
    caller waits for at most its own batch and the one before it.

    Cancellation: a file still waiting is taken off the queue; a file already
    in a running batch is waited for (shielded, a few milliseconds), since
    its thread is writing it.
    """

    def __init__(self, durability: Durability = Durability.FILE) -> None:
        self._durability = durability
        self._pending: list[_Entry] = []
        self._busy = False

    async def publish(self, sink: FileSink, name: str, *, alias: str | None = None) -> str:
        """Publish `sink` under `name`, or under `alias` when a file that is
        not this URL's took `name` meanwhile (`FileSink.rename`); the name it
        took. Raises `AlreadyThere` (naming the file) when this URL's file,
        or a file under `alias` too, is there (it is left as it is), else
        `WriteFailed` (reason `disk_full` on ENOSPC)."""
        entry = await self._publish(sink, name, alias)
        error = entry.error
        if isinstance(error, FileExistsError):
            raise AlreadyThere(error.filename if isinstance(error.filename, str) else name)
        if error is not None:
            raise _write_error(error) from error
        return entry.name

    async def _publish(self, sink: FileSink, name: str, alias: str | None) -> _Entry:
        # A caller cancelled already must not lead a batch: leading is shielded.
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = _Entry(sink, name, alias)
        self._pending.append(entry)
        if self._busy:
            try:
                await entry.done.wait()
            except BaseException:
                if entry.taken:
                    with trio.CancelScope(shield=True):
                        await entry.done.wait()
                else:
                    self._pending.remove(entry)
                    if entry.lead:
                        self._hand_over()
                raise
            if not entry.lead:
                return entry
        await self._lead()
        return entry

    async def _lead(self) -> None:
        self._busy = True
        batch, self._pending = self._pending, []
        for entry in batch:
            entry.taken = True
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_publish_batch, batch, self._durability)
        finally:
            for entry in batch:
                entry.done.set()
            self._hand_over()

    def _hand_over(self) -> None:
        """Let the first waiting file lead the next batch, or go idle."""
        if self._pending:
            successor = self._pending[0]
            successor.lead = True
            successor.done.set()
        else:
            self._busy = False
