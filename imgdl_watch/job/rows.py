"""Parsing a structured list (csv, tsv, jsonl): pure logic, no I/O.

A csv or tsv list's first row names its columns; a jsonl list is one JSON
object per line. The URL is the column (or key) named `url` or `image_url`,
in any case, or the one `--url-column` names. Every other column is the
URL's data: it is carried, unchanged, into the URL's report record, and
into `failed/` when the URL fails (see `report`).

The standard library reads the rows (`csv`, `json`); what is ours is the
bounds and the recovery, so that a hostile row costs only itself:

- lines come from `listparse.split_lines`, which never holds more than
  `MAX_ROW_BYTES` of one;
- a row (with the newlines quoted inside it) may span `MAX_ROW_LINES` lines
  and `MAX_ROW_BYTES` bytes. A row that breaks the csv rules or a bound
  (an unterminated quote swallows the lines after it) is `invalid` with its
  first line's number, and the lines after that first one are read again
  as rows of their own: nothing else is lost. So one bad row costs at most
  `MAX_ROW_LINES` lines read twice.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..redact import line_excerpt
from .listparse import InvalidLine, ListedUrl, OverlongLine, check_url

# A row of a structured list at most: a URL (at most 8 KiB, see
# `listparse.MAX_LINE_BYTES`) and its data, such as a long caption.
MAX_ROW_BYTES = 64 * 1024
# Lines one row may span (newlines quoted in a field).
MAX_ROW_LINES = 32
# The names of a URL's column, compared in lower case.
URL_COLUMNS = ("url", "image_url")

_UTF8_BOM = "\ufeff"


class ListError(Exception):
    """The list as a whole cannot run (no URL column, a bad header). One line."""


@dataclass(frozen=True, slots=True)
class Header:
    """The columns of a csv or tsv list, and which one holds the URL."""

    names: tuple[str, ...]
    url_index: int
    # How the list's first row ended: its failed list ends each row the same.
    line_end: str = "\n"


@dataclass(frozen=True, slots=True)
class Row:
    """A URL's row: its cells (csv, tsv) or its object (jsonl), as read."""

    header: Header | None
    cells: tuple[str, ...] = ()
    record: dict[str, Any] = field(default_factory=dict)
    url_key: str = ""

    def columns(self) -> dict[str, Any]:
        """Every column but the URL's, by name, as read."""
        if self.header is None:
            return {k: v for k, v in self.record.items() if k != self.url_key}
        url = self.header.url_index
        return {
            n: c
            for i, (n, c) in enumerate(zip(self.header.names, self.cells, strict=True))
            if i != url
        }


def url_column_of(names: list[str], wanted: str | None) -> str | None:
    """The name among `names` that holds the URL: `wanted` exactly when
    given, else `url` or `image_url` in any case."""
    if wanted:
        return wanted if wanted in names else None
    for name in names:
        if name.strip().lower() in URL_COLUMNS:
            return name
    return None


class _BadRow(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Lines:
    """The list's lines as text for `csv.reader`, with the current row's
    lines kept, so that a bad row's lines after its first can be read again."""

    def __init__(self, lines: Iterator[tuple[int, bytes | OverlongLine]]) -> None:
        self._lines = lines
        self._again: deque[tuple[int, bytes | OverlongLine]] = deque()
        self.row: list[tuple[int, bytes | OverlongLine]] = []
        self._row_bytes = 0

    def __iter__(self) -> _Lines:
        return self

    def start_row(self) -> None:
        self.row.clear()
        self._row_bytes = 0

    @property
    def first_line(self) -> int:
        return self.row[0][0] if self.row else 0

    def first_excerpt(self) -> str:
        if not self.row:
            return ""
        raw = self.row[0][1]
        return line_excerpt(raw.head if isinstance(raw, OverlongLine) else raw)

    def ends_with_cr(self) -> bool:
        """Whether the row's last line ended in CRLF (its LF is the split's)."""
        raw = self.row[-1][1] if self.row else b""
        return isinstance(raw, bytes) and raw.endswith(b"\r")

    def read_again(self) -> None:
        """Give back the row's lines after its first, to be read next."""
        self._again.extendleft(reversed(self.row[1:]))
        self.start_row()

    def __next__(self) -> str:
        number, raw = self._again.popleft() if self._again else next(self._lines)
        self.row.append((number, raw))
        # A bad line after a row's first says nothing of the row's own first
        # line but that the row cannot end well: `bad_row`; read again, that
        # line is then reported for what it is.
        first = len(self.row) == 1
        if isinstance(raw, OverlongLine):
            raise _BadRow("row_too_long" if first else "bad_row")
        self._row_bytes += len(raw) + 1
        if self._row_bytes > MAX_ROW_BYTES or len(self.row) > MAX_ROW_LINES:
            raise _BadRow("row_too_long")
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            return raw.decode("utf-8") + "\n"
        except UnicodeDecodeError:
            raise _BadRow("not_utf8" if first else "bad_row") from None


def parse_delimited(
    lines: Iterator[tuple[int, bytes | OverlongLine]],
    *,
    dialect: str,
    url_column: str | None,
) -> Iterator[ListedUrl | InvalidLine]:
    """Every URL and every invalid row of a csv (`excel`) or tsv (`excel-tab`)
    list. Raises `ListError` when its header has no URL column."""
    source = _Lines(lines)
    reader = csv.reader(source, dialect, strict=True)
    header: Header | None = None
    while True:
        source.start_row()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, _BadRow) as exc:
            if header is None:
                raise ListError(
                    f"the list's first row, its column names, cannot be read: {exc}"
                ) from None
            reason = exc.reason if isinstance(exc, _BadRow) else "bad_row"
            yield InvalidLine(source.first_line, reason, source.first_excerpt())
            source.read_again()
            reader = csv.reader(source, dialect, strict=True)
            continue
        if not cells:
            continue  # a blank line
        line = source.first_line
        if header is None:
            header = _header(cells, url_column, dialect, crlf=source.ends_with_cr())
            continue
        if len(cells) != len(header.names):
            yield InvalidLine(line, "bad_row", source.first_excerpt())
            continue
        url = cells[header.url_index].strip()
        if not url:  # the row's URL cell is empty (a row of commas, say)
            yield InvalidLine(line, "no_url", source.first_excerpt())
            continue
        entry = check_url(url, line)
        if isinstance(entry, ListedUrl):
            entry = entry.with_row(Row(header, tuple(cells)))
        yield entry


def _header(cells: list[str], url_column: str | None, dialect: str, *, crlf: bool) -> Header:
    names = [c.strip() for c in cells]
    if names and names[0].startswith(_UTF8_BOM):
        names[0] = names[0][1:]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ListError(f"the list's first row names the column {name!r} twice")
        seen.add(name)
    column = url_column_of(names, url_column)
    if column is None:
        wanted = repr(url_column) if url_column else "url or image_url"
        shown = ", ".join(repr(n) for n in names[:10])
        raise ListError(
            f"the list's first row names no {wanted} column (it names {shown}); "
            "name the URLs' column in the first row, or give --url-column NAME"
            f" (url_column in the config){_separator_hint(names, dialect)}"
        )
    return Header(tuple(names), names.index(column), "\r\n" if crlf else "\n")


# How each dialect's columns are separated, as a user would say it.
_SEPARATORS = {"excel": (",", ".csv", "','"), "excel-tab": ("\t", ".tsv", "a tab")}


def _separator_hint(names: list[str], dialect: str) -> str:
    """Why a header read as one column may be several: another separator."""
    separator, suffix, said = _SEPARATORS[dialect]
    if len(names) != 1:
        return ""
    for other in (";", ",", "\t", "|"):
        if other != separator and other in names[0]:
            held = f"; its one column holds {other!r}"
            return f"{held}: a {suffix} list's columns are separated by {said}"
    return ""


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number too large for JSON")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def parse_jsonl(
    lines: Iterator[tuple[int, bytes | OverlongLine]], *, url_column: str | None
) -> Iterator[ListedUrl | InvalidLine]:
    """Every URL and every invalid line of a jsonl list: one object per line."""
    for number, raw in lines:
        if isinstance(raw, OverlongLine):
            yield InvalidLine(number, "row_too_long", line_excerpt(raw.head))
            continue
        data = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
        if not data.strip():
            continue
        reason, record = _json_object(data)
        if record is None:
            yield InvalidLine(number, reason, line_excerpt(data))
            continue
        key = url_column_of(list(record), url_column)
        url = record.get(key) if key is not None else None
        if not isinstance(url, str):
            yield InvalidLine(number, "no_url", line_excerpt(data))
            continue
        entry = check_url(url.strip(), number)
        if isinstance(entry, ListedUrl):
            entry = entry.with_row(Row(None, record=record, url_key=key or ""))
        yield entry


def _json_object(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", None
    try:
        record = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return "bad_row", None
    if not isinstance(record, dict):
        return "bad_row", None
    if "\\u" in text:
        # An escaped lone surrogate reads, but can never be written as UTF-8
        # (the report, failed/): such a row is refused here, whole.
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "bad_row", None
    return "", record
