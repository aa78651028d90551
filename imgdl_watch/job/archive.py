"""Memory across lists (`--archive FILE`): each downloaded URL, its sha256 and
where its file lives, in SQLite, so that another list never fetches it again.

    look up     a batch of the list's URLs at a time, in the thread that
                parses the batch (`Feed`): one query per batch, by the URLs'
                fingerprints (`naming.fingerprint`), the URL itself compared
                so that a shared fingerprint is never taken for a match
    reuse       a URL in the archive whose file is still there, with that
                size and sha256 (read again to check), is hard-linked into
                the new job's folder, or copied where a link cannot go
                (another filesystem): outcome `reused`
    record      each finished download, batched: `ArchiveLog` writes every
                `FLUSH_S`, or `FLUSH_ROWS` at once, in one transaction, in a
                worker thread, and once more when the job ends

**Durability.** WAL mode, so that a kill -9 at any point leaves the archive
whole (SQLite's own guarantee). A row is written only after its download
returned, that is after its file is in place and as durable as
`--durability` makes it: a row never points at a partial file. A kill -9
loses at most the rows not yet flushed (the last second's): those images
stay in their folder, and another list downloads them again. With
`synchronous=NORMAL` a power loss may lose the last transactions too, with
the same consequence and no other.

**Several daemons** on one archive (one inbox, or not): SQLite's locking,
each write a short transaction, and a busy timeout of `BUSY_TIMEOUT_S`. An
archive that cannot be read or written (locked past that, a full disk) costs
only its memory: `archive_failed` is logged, and downloads go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
import trio

from ..download.body import MD5_MAX_BYTES, BodyRecord, BodyRules, unwanted
from ..download.filesink import FILE_MODE, SOURCE_XATTR, TEMP_PREFIX
from ..download.imagecheck import SNIFF_BYTES
from ..download.retries import quiet_stamina
from ..download.syscalls import rename_new
from ..naming import PAGE_EXTENSIONS, fingerprint, has_extension, split_extension
from ..redact import excerpt, log_url

log = structlog.get_logger("imgdl_watch")

# Seconds a write or a read waits for another daemon's transaction.
BUSY_TIMEOUT_S = 5.0
# Seconds between two writes of a job's finished downloads, and the rows
# that make one write at once.
FLUSH_S = 1.0
FLUSH_ROWS = 512
# Seconds the last write of a stopping job may take (abandoned after that).
FLUSH_ON_STOP_S = 2.0
# URLs per query: under SQLite's oldest limit of host parameters (999).
LOOKUP_CHUNK = 900
# Bytes read at a time to check (or copy) an archived file.
READ_CHUNK_BYTES = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    fingerprint INTEGER PRIMARY KEY,  -- naming.fingerprint(url): 60 bits
    url TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,               -- absolute path of the file
    size INTEGER NOT NULL,
    recorded_at REAL NOT NULL         -- Unix time
)
"""


class ArchiveError(Exception):
    """The archive cannot be opened. The message is one line, for the user."""


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """A URL's file, as the archive knows it."""

    url: str
    sha256: str
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class Reused:
    """An archived file, now in the job's folder under `file`."""

    file: str
    bytes: int
    sha256: str
    source: str
    # "link" or "copy".
    how: str


def _is_busy(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


class Archive:
    """One archive file. Its methods block: call them from worker threads.

    One connection, shared by the daemon's jobs under a lock (SQLite's own
    serialises writers anyway).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            # Two connections that switch a new file to WAL at the same moment:
            # SQLite answers one "database is locked" at once, without its busy
            # wait (two daemons started together). That one tries again.
            for attempt in quiet_stamina().retry_context(
                on=_is_busy, attempts=None, timeout=BUSY_TIMEOUT_S, wait_initial=0.01, wait_max=0.2
            ):
                with attempt:
                    mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise ArchiveError(
                            f"archive {path}: SQLite cannot use WAL mode there ({mode})"
                        )
                    self._db.execute("PRAGMA synchronous=NORMAL")
                    self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot use archive {path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def look_up(self, urls: Iterable[str]) -> dict[str, ArchivedFile]:
        """The archived files of those `urls` that have one, by URL."""
        by_key: dict[int, str] = {fingerprint(url): url for url in urls}
        keys = list(by_key)
        found: dict[str, ArchivedFile] = {}
        with self._lock:
            for start in range(0, len(keys), LOOKUP_CHUNK):
                chunk = keys[start : start + LOOKUP_CHUNK]
                # Only placeholders are formatted into the query, one per key.
                marks = ",".join("?" * len(chunk))
                query = f"SELECT fingerprint, url, sha256, path, size FROM files WHERE fingerprint IN ({marks})"  # noqa: E501, S608
                rows = self._db.execute(query, chunk).fetchall()
                for key, url, sha256, path, size in rows:
                    if by_key.get(key) == url:
                        found[url] = ArchivedFile(url, sha256, path, size)
        return found

    def look_up_or_nothing(self, urls: Iterable[str]) -> dict[str, ArchivedFile]:
        """`look_up`, or nothing when the archive cannot be read now
        (`archive_failed` says why): those URLs are downloaded then."""
        try:
            return self.look_up(urls)
        except sqlite3.Error as exc:
            failed("look_up", exc)
            return {}

    def job_log(self, folder: str) -> ArchiveLog:
        """What the job in `folder` takes from the archive and gives it."""
        return ArchiveLog(self, folder)

    def record(self, files: list[ArchivedFile]) -> None:
        """Write `files` in one transaction (the newest file of a URL wins)."""
        now = time.time()
        rows = [(fingerprint(f.url), f.url, f.sha256, f.path, f.size, now) for f in files]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO files "
                    "(fingerprint, url, sha256, path, size, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def failed(action: str, exc: sqlite3.Error) -> None:
    log.warning("archive_failed", action=action, detail=excerpt(str(exc), 200))


class ArchiveLog:
    """One job's use of the archive: its finished downloads on their way
    there, in batches, and the archived files it reuses."""

    def __init__(self, archive: Archive, folder: str) -> None:
        self._archive = archive
        # The job's folder, absolute: where the rows say its files live.
        self._folder = os.path.abspath(folder)
        self._pending: list[ArchivedFile] = []
        self._full = trio.Event()

    def downloaded(self, url: str, file: str, sha256: str, size: int) -> None:
        """Queue the row of a finished download (on the event loop: no I/O)."""
        self._pending.append(ArchivedFile(url, sha256, os.path.join(self._folder, file), size))
        if len(self._pending) >= FLUSH_ROWS:
            self._full.set()

    async def reuse(
        self, url: str, archived: ArchivedFile, dir_fd: int, name: str, *, rules: BodyRules
    ) -> Reused | None:
        """Put `archived` in the job's folder (`reuse_file`), or None: it is
        no longer what was downloaded, or this job's rules would not save it
        (`archive_stale`), so fetch it."""
        got = await trio.to_thread.run_sync(reuse_file, archived, dir_fd, name, rules)
        if isinstance(got, tuple):
            reason, detail = got
            log.info(
                "archive_stale", url=log_url(url), file=archived.path, reason=reason, detail=detail
            )
            return None
        return got

    async def run(self) -> None:
        """Write what is queued every `FLUSH_S` (sooner when many), until cancelled."""
        while True:
            with trio.move_on_after(FLUSH_S):
                await self._full.wait()
            await self.flush()

    async def flush(self) -> None:
        self._full = trio.Event()
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await trio.to_thread.run_sync(self._archive.record, batch, abandon_on_cancel=True)
        except sqlite3.Error as exc:
            failed("record", exc)

    async def last_flush(self) -> None:
        """The last write, even for a job that is being cancelled, within `FLUSH_ON_STOP_S`."""
        with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_ON_STOP_S):
            await self.flush()


def _sha256_of(fd: int, copy_to: int | None = None) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, READ_CHUNK_BYTES):
        digest.update(chunk)
        if copy_to is not None:
            view = memoryview(chunk)
            while view:
                view = view[os.write(copy_to, view) :]
    return digest.hexdigest()


def reuse_file(
    archived: ArchivedFile, dir_fd: int, name: str, rules: BodyRules
) -> Reused | tuple[str, str]:
    """Put `archived`'s file into the folder `dir_fd` as `name` (with the
    archived file's extension if `name` has none). Blocking: call from a
    thread. The Reused file, or why not, (reason, detail): `missing`,
    `changed`, `exists`, or `rules` (the job's size cap, type or filters
    would not save it: a category's `min_width`, say, may be stricter than
    the job's that saved it)."""
    if not has_extension(name):
        # The archived file's extension, unless it is a page's (a file saved
        # before page extensions took the image's): `name` then stays as is.
        archived_ext = split_extension(os.path.basename(archived.path))[1]
        if archived_ext.lower() not in PAGE_EXTENSIONS:
            name += archived_ext
    try:
        source = os.open(archived.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return "missing", "the file is gone"
    try:
        st = os.fstat(source)
        if not stat.S_ISREG(st.st_mode) or st.st_size != archived.size:
            return "changed", "not the size it was"
        record = BodyRecord(md5=bool(rules.filters.skip_md5) and st.st_size <= MD5_MAX_BYTES)
        head = b""
        while chunk := os.read(source, READ_CHUNK_BYTES):
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            record.add(chunk)
        sha256, md5, width, height = record.finish()
        if sha256 != archived.sha256:
            return "changed", "not the bytes it was"
        why = unwanted(
            rules, size=st.st_size, head=head, sha256=sha256, md5=md5, width=width, height=height
        )
        if why is not None:
            return "rules", why
        try:
            # The very file just checked, whatever its path holds meanwhile.
            os.link(f"/proc/self/fd/{source}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
            how = "link"
        except FileExistsError:
            return "exists", f"{name} is taken"
        except OSError:  # another filesystem (EXDEV), a link limit, no /proc: copy
            try:
                copied = _copy(source, dir_fd, name, archived.sha256)
            except FileExistsError:  # a look-alike's, published while it was copied
                return "exists", f"{name} is taken"
            if not copied:
                return "changed", "not the bytes it was"
            how = "copy"
    finally:
        os.close(source)
    return Reused(name, archived.size, archived.sha256, archived.path, how)


def _copy(source: int, dir_fd: int, name: str, sha256: str) -> bool:
    """Copy the open `source` into the folder as `name`, as filesink writes a
    download: a temporary name, fdatasync, rename. False if its bytes changed."""
    os.lseek(source, 0, os.SEEK_SET)
    temp = f"{TEMP_PREFIX}archive-{os.getpid()}-{threading.get_ident()}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    target = os.open(temp, flags, FILE_MODE, dir_fd=dir_fd)
    same = False
    try:
        same = _sha256_of(source, copy_to=target) == sha256
        if same:
            # The archived file's tag (`filesink.SOURCE_XATTR`), its URL's and
            # so this one's: a link shares it, a copy is given it.
            with contextlib.suppress(OSError):
                os.setxattr(target, SOURCE_XATTR, os.getxattr(source, SOURCE_XATTR))
            os.fdatasync(target)
    finally:
        os.close(target)
        if not same:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)
    if same:
        try:
            # Never over a file that appeared while it was copied.
            rename_new(temp, name, dir_fd=dir_fd)
        except FileExistsError:
            os.unlink(temp, dir_fd=dir_fd)
            raise
    return same
