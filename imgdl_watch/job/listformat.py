"""A list's format, told by its name: how it is read, and how its failures are
written back in the same format.

    cats.txt       one URL per line (`listparse`)
    cats.csv       a header row, then one row per URL (`rows`, csv's `excel`)
    cats.tsv       the same, tab-separated (csv's `excel-tab`)
    cats.jsonl     one JSON object per line (`rows`)
    … .gz, .zst    compressed (zstd needs the `zstd` extra: `zstandard`)

Reading streams: the list is read and decompressed `READ_CHUNK_BYTES` at a
time, whatever its length or its compression ratio, and parsed as it comes.

The failures of a job go to a list of the same format (`FailedList`): the
same columns, each failed row as it was read, so that dropping it again
retries exactly those rows with their data.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import IO, Any, cast

from ..errors import JobError
from ..naming import list_suffix
from .listparse import InvalidLine, ListedUrl, as_utf8, parse_chunks, split_lines
from .rows import MAX_ROW_BYTES, Row, parse_delimited, parse_jsonl

# Bytes of the list read (and, compressed, decompressed) per step.
READ_CHUNK_BYTES = 256 * 1024
_DIALECTS = {"csv": "excel", "tsv": "excel-tab"}


class ListUnreadable(OSError):
    """The list's bytes cannot be read as its name says (bad gzip, no zstd)."""


ZSTD_MISSING = "a .zst list needs the zstandard library: pip install 'imgdl-watch[zstd]'"


@functools.cache
def _zstandard() -> ModuleType | None:
    try:
        import zstandard  # noqa: PLC0415 - optional, and only for .zst lists
    except ImportError:
        return None
    return zstandard


@dataclass(frozen=True, slots=True)
class ListFormat:
    # txt, csv, tsv or jsonl
    kind: str = "txt"
    # "", gz or zst
    compression: str = ""

    @classmethod
    def of(cls, name: str) -> ListFormat:
        """The format a list's name says (`cats.csv.gz`); txt for any other name."""
        suffix = (list_suffix(name) or ".txt").lower()
        kind, _, compression = suffix[1:].partition(".")
        return cls(kind, compression)

    @property
    def structured(self) -> bool:
        return self.kind != "txt"


def _decompressed(raw: IO[bytes], compression: str) -> IO[bytes]:
    if compression == "gz":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if compression == "zst":
        zstandard = _zstandard()
        if zstandard is None:
            raise ListUnreadable(ZSTD_MISSING)
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=READ_CHUNK_BYTES, read_across_frames=True, closefd=False
        )
        return reader
    return raw


def _chunks(stream: IO[bytes], compression: str) -> Iterator[bytes]:
    corrupt: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)
    # zstandard is imported for a .zst list only: a one-shot `fetch` of any
    # other pays nothing for it (~8 ms, `python -X importtime`).
    zstandard = _zstandard() if compression == "zst" else None
    if zstandard is not None:
        corrupt += (zstandard.ZstdError,)
    while True:
        try:
            chunk = stream.read(READ_CHUNK_BYTES)
        except corrupt as exc:
            raise ListUnreadable(f"the compressed list is cut short or corrupt: {exc}") from exc
        if not chunk:
            return
        yield chunk


def read_entries(
    list_fd: int, fmt: ListFormat, *, url_column: str | None = None
) -> Iterator[ListedUrl | InvalidLine]:
    """The list open at `list_fd`, from its start, parsed as it is read.

    Raises `rows.ListError` (as it is read) when a structured list has no
    URL column, and `OSError` when its bytes cannot be read."""
    os.lseek(list_fd, 0, os.SEEK_SET)
    raw = io.FileIO(list_fd, "rb", closefd=False)
    chunks = _chunks(_decompressed(raw, fmt.compression), fmt.compression)
    if fmt.kind == "txt":
        return parse_chunks(chunks)
    lines = split_lines(as_utf8(chunks), max_line_bytes=MAX_ROW_BYTES)
    if fmt.kind == "jsonl":
        return parse_jsonl(lines, url_column=url_column)
    return parse_delimited(lines, dialect=_DIALECTS[fmt.kind], url_column=url_column)


# A part file is made new, never opened through what is there: a symlink that
# a user of the inbox put in processing/ under its name would have the
# report written over any file the daemon may write.
_PART_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _part_at(path: str, folder_fd: int | None) -> tuple[str, int | None]:
    """`path` as a name and the folder to take it relative to: its own name
    in `folder_fd` when given, else the path itself."""
    return (os.path.basename(path), folder_fd) if folder_fd is not None else (path, None)


def remove_part(path: str, folder_fd: int | None = None) -> None:
    """Remove the part file at `path` (relative to `folder_fd` when given);
    FileNotFoundError when there is none."""
    name, dir_fd = _part_at(path, folder_fd)
    os.unlink(name, dir_fd=dir_fd)


def create_part(path: str, folder_fd: int | None = None) -> int:
    """A new, empty file at `path` (its name relative to `folder_fd` when
    given): whatever has the name already, a part left by a killed run or a
    symlink, is removed first, never followed."""
    try:
        remove_part(path, folder_fd)
    except FileNotFoundError:
        pass
    name, dir_fd = _part_at(path, folder_fd)
    return os.open(name, _PART_FLAGS, 0o666, dir_fd=dir_fd)


class FailedList:
    """A job's failures as a list of its own format, written as they come.

    `path` is created at once; the caller flushes, syncs and closes it with
    `close`, or drops it with `discard`.
    """

    def __init__(
        self, path: str, fmt: ListFormat, *, buffering: int, folder_fd: int | None = None
    ) -> None:
        """`folder_fd`: the folder `path` is in, open, to create it relative to
        (`create_part`)."""
        self.fmt = fmt
        zstandard = _zstandard() if fmt.compression == "zst" else None
        if fmt.compression == "zst" and zstandard is None:
            # Opened before the list is read: the job fails as the list's
            # reader would (not as an inbox error, which is tried again).
            raise JobError("list_unreadable", ZSTD_MISSING)
        fd = create_part(path, folder_fd)
        self._raw = open(fd, "wb", buffering=buffering)  # noqa: SIM115 - closed in close()
        self._packed: IO[bytes] | None = None
        if fmt.compression == "gz":
            self._packed = cast(
                IO[bytes], gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6)
            )
        elif zstandard is not None:
            self._packed = zstandard.ZstdCompressor().stream_writer(self._raw, closefd=False)
        self._text = io.TextIOWrapper(
            self._packed or self._raw, encoding="utf-8", newline="", write_through=True
        )
        self._csv: Any = None
        self._quoted: Any = None
        self.closed = False

    def add(self, url: str, row: Row | None) -> None:
        """One failed URL, with its row as it was read (txt lists have none)."""
        if row is None:
            self._text.write(url + "\n")
        elif row.header is None:
            self._text.write(json.dumps(row.record, ensure_ascii=False) + "\n")
        else:
            if self._csv is None:
                # The header first, once: every row of a list shares it. Its
                # rows end as the list's did (csv's own default is CRLF).
                dialect = _DIALECTS.get(self.fmt.kind, "excel")
                ending = row.header.line_end
                self._csv = csv.writer(self._text, dialect, lineterminator=ending)
                # A cell holding a CR is quoted only when CR ends the rows:
                # with LF ends, such a row is written with every cell quoted,
                # so that it reads back as it was.
                self._quoted = csv.writer(
                    self._text, dialect, lineterminator=ending, quoting=csv.QUOTE_ALL
                )
                self._csv.writerow(row.header.names)
            writer = self._csv
            if row.header.line_end == "\n" and any("\r" in cell for cell in row.cells):
                writer = self._quoted
            writer.writerow(row.cells)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        """Finish the compressed stream, flush and fsync: a published list is whole."""
        if self.closed:
            return
        self.closed = True
        try:
            self._text.flush()
            if self._packed is not None:
                self._packed.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
        finally:
            self._raw.close()

    def discard_close(self) -> None:
        """Close without caring whether the last writes land (the file goes)."""
        self.closed = True
        for step in (self._text.flush, self._close_packed, self._raw.close):
            try:
                step()
            except (OSError, ValueError):
                pass
        if not self._raw.closed:
            try:
                self._raw.close()
            except OSError:
                pass

    def _close_packed(self) -> None:
        if self._packed is not None:
            self._packed.close()
