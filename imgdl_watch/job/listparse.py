"""Parsing a URL list: pure logic, no I/O.

A list is one URL per line. The reader hands us raw byte chunks, so that a
list of a million lines (or one hostile 10 MB line) is handled as a stream:
`split_blocks` cuts chunks into numbered lines without ever keeping more than
`MAX_LINE_BYTES` of one line past its chunk, and `parse_line` turns each line into a
`ListedUrl`, an `InvalidLine` with a stable reason, or nothing (blank lines
and `#` comments).
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlsplit

import httpx

from ..hostnames import MAX_LABEL, dns_can_carry, lookup_host
from ..naming import PLAIN_SEGMENT_PATTERN
from ..redact import line_excerpt

if TYPE_CHECKING:
    from .rows import Row

# A URL longer than this is junk from a scraper, not an image address: common
# servers refuse request lines past 8 KiB, so nothing longer could succeed.
MAX_LINE_BYTES = 8192

# Bytes an overlong line keeps of its head, for its excerpt: far more than
# the excerpt shows, so that a password in it is found and shown as ***
# before the excerpt is cut (`redact.line_excerpt`).
OVERLONG_HEAD_BYTES: Final = 1024


_UTF8_BOM = b"\xef\xbb\xbf"
# A list saved as UTF-16 starts with one of these (Windows PowerShell 5's `>`
# and `Out-File` write UTF-16 LE by default). Such a list is read as UTF-16.
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Stands for what cannot be UTF-16 (a lone surrogate, an odd last byte): it is
# never valid UTF-8, so that line is reported as `not_utf8`, like any other.
_NOT_UTF8 = b"\xff"
_ALLOWED_SCHEMES = frozenset({"http", "https"})
# Whitespace or control characters inside a URL: a spreadsheet cell with two
# values, or binary junk. Both are refused rather than guessed at.
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f]")
# A URL that the checks below and httpx surely accept as it is: http or
# https, a host name of ASCII letters, digits, dots and hyphens with a letter
# in it (a host of digits and dots may be an IPv4 address, httpx's to check)
# and no IDNA label (`xn--`, which httpx decodes), no userinfo, a port of
# 1 to 9999 at most, then printable ASCII. Nearly every line of a real list is one: it is taken
# on one regular expression (~1 µs), without urlsplit and httpx's parse
# (~16 µs; measure both again with `timeit` on a list's line), and the
# download parses it once, as it must anyway. Every other line takes the
# full checks. A host longer than one label's 63 characters also has its
# labels' lengths looked at (`hostnames`): a bound in the pattern's labels
# would cost every line. `tests/test_listparse.py` holds the property that
# the fast path accepts nothing that the full checks refuse, with the same
# URL and host.
# (Both cases spelled out rather than IGNORECASE, which costs a third more.)
#
# The host is labels of letters, digits and hyphens between single dots, with
# a letter in it: the lookahead asks for the letter, and the labels alone
# cannot be split two ways, so a match that fails backtracks in linear time.
# (A letter asked for inside the labels, `[a-z0-9-]*[a-z][a-z0-9-]*`, could
# be any of them: `http://` + 2000 letters + a byte that is not ASCII took
# 0.33 s to refuse, and an 8 KiB line seconds.)
_PLAIN_AUTHORITY = (
    r"[hH][tT][tT][pP][sS]?://"
    r"(?=[0-9.-]*[a-zA-Z])([a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*)"
    r"(?::[1-9][0-9]{0,3})?"
)
_PLAIN_URL = re.compile(rf"{_PLAIN_AUTHORITY}(?:[/?#][!-~]*)?", re.ASCII)
# A line of a txt list that is a plain URL with at most ASCII blanks around
# it, matched on its bytes as they were read: no decoding, strip or second
# match for the line (~1.5 µs of the ~3.6 µs a line took; measure it again
# with `benchmarks/lines_probe.py --reader`). Group 1 is the URL, 2 its host,
# 3 its last path segment when that is a name as it stands (`naming`'s
# `PLAIN_SEGMENT_PATTERN`, after directories that hold no "?" or "#"), else
# None: the same pass finds most URLs' base names, which `naming.base_name`
# took ~0.6 µs more to match again (`timeit` the two ways).
# `parse_line` gives such a line exactly what this gives it, and the base
# name is `base_name`'s (the properties are in `tests/test_listparse.py`);
# every other line goes through it.
_PLAIN_LINE = re.compile(
    rf"[ \t\r\f\v]*({_PLAIN_AUTHORITY}"
    rf"(?:/(?:[!-\"$->@-~]*/)?({PLAIN_SEGMENT_PATTERN})(?:[?#][!-~]*)?|(?:[/?#][!-~]*)?)"
    r")[ \t\r\f\v]*".encode("ascii")
)


# Not frozen: one is made for every URL of the list, and a frozen dataclass's
# `__init__` (a `object.__setattr__` a field) took ~1.05 µs where this takes
# ~0.28 (`timeit` the two again). Nothing changes one once it is made.
@dataclass(slots=True)
class ListedUrl:
    """A line that holds a URL we can download."""

    line: int
    url: str
    # The URL as httpx parsed it to validate it, so that the download need
    # not parse it again; None for a plain URL (`_PLAIN_URL`), which was not.
    parsed: httpx.URL | None = field(compare=False, repr=False)
    # Its host, as httpx gives it (lower case): what the per-host limits key on.
    host: str = field(compare=False, repr=False)
    # A structured list's row the URL came from, with its data.
    row: Row | None = field(default=None, compare=False, repr=False)
    # Its base name (`naming.base_name`), when the fast path found it; None:
    # not looked for yet.
    base: str | None = field(default=None, compare=False, repr=False)

    def with_row(self, row: Row) -> ListedUrl:
        return ListedUrl(self.line, self.url, self.parsed, self.host, row, self.base)


@dataclass(frozen=True, slots=True)
class InvalidLine:
    """A line that is not a downloadable URL, with why, and a cut excerpt."""

    line: int
    reason: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """Marker from `split_blocks` for a line longer than `MAX_LINE_BYTES`."""

    head: bytes


def split_blocks(
    chunks: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, list[bytes | OverlongLine]]]:
    """The lines that each chunk of a stream ends, with the number (1-based)
    of the first: each chunk is cut by one `bytes.split`, not line by line.

    A line longer than `max_line_bytes` is an `OverlongLine` that keeps only
    its head; the rest of it is dropped as it streams past.
    """
    number = 1  # of the next line
    pending = b""  # the start of a line that a later chunk ends
    overlong: OverlongLine | None = None
    for chunk in chunks:
        pieces = cast("list[bytes | OverlongLine]", chunk.split(b"\n"))
        tail = cast(bytes, pieces.pop())  # unfinished, or b"" after a line break
        if pieces:
            head = cast(bytes, pieces[0])
            if overlong is not None:
                pieces[0] = overlong
            else:
                head = pending + head if pending else head
                too_long = len(head) > max_line_bytes
                pieces[0] = OverlongLine(head[:OVERLONG_HEAD_BYTES]) if too_long else head
            if len(pieces) > 1 and max(map(len, cast("list[bytes]", pieces[1:]))) > max_line_bytes:
                for i in range(1, len(pieces)):
                    piece = cast(bytes, pieces[i])
                    if len(piece) > max_line_bytes:
                        pieces[i] = OverlongLine(piece[:OVERLONG_HEAD_BYTES])
            yield number, pieces
            number += len(pieces)
            pending, overlong = b"", None
        if overlong is None and tail:
            pending += tail
            if len(pending) > max_line_bytes:
                overlong, pending = OverlongLine(pending[:OVERLONG_HEAD_BYTES]), b""
    if pending or overlong is not None:
        yield number, [overlong if overlong is not None else pending]


def split_lines(
    chunks: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | OverlongLine]]:
    """Numbered lines (1-based) from a stream of byte chunks (`split_blocks`)."""
    for first, lines in split_blocks(chunks, max_line_bytes=max_line_bytes):
        yield from zip(itertools.count(first), lines)


def parse_line(raw: bytes | OverlongLine, line: int) -> ListedUrl | InvalidLine | None:
    """Classify one line of a list. `None` means: nothing to do (blank or comment)."""
    if isinstance(raw, OverlongLine):
        return InvalidLine(line, "line_too_long", line_excerpt(raw.head))
    if line == 1 and raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidLine(line, "not_utf8", line_excerpt(raw))
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    return check_url(text, line)


def check_url(text: str, line: int) -> ListedUrl | InvalidLine:
    """`text` (a line, or a row's URL cell) as a URL we can download, or why not."""
    plain = _PLAIN_URL.fullmatch(text)
    if (
        plain is not None
        and "xn--" not in (host := plain[1].lower())
        and (len(host) <= MAX_LABEL or dns_can_carry(host))
    ):
        return ListedUrl(line, _without_fragment(text), None, host)
    return check_url_fully(text, line)


def check_url_fully(text: str, line: int) -> ListedUrl | InvalidLine:
    """`check_url` without its fast path: every check, then httpx's parse."""
    reason = _invalid_reason(text)
    if reason is None:
        url = _without_fragment(text)
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            reason = "malformed_url"
        else:
            # A host the resolver would refuse to look up, or that httpx
            # cannot spell (`hostnames`).
            if (host := lookup_host(parsed)) is not None:
                return ListedUrl(line, url, parsed, host)
            reason = "bad_host"
    return InvalidLine(line, reason, line_excerpt(text))


def _without_fragment(text: str) -> str:
    # The fragment never reaches the server: two URLs that differ only
    # there are the same download.
    return text.split("#", 1)[0]


def _invalid_reason(text: str) -> str | None:
    """Why `text` is not a URL we can download, or None if it may be one (httpx decides)."""
    if _BAD_CHARS.search(text):
        return "bad_characters"
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        return "malformed_url"
    if not parts.scheme or "://" not in text:
        return "not_a_url"
    if parts.scheme.lower() not in _ALLOWED_SCHEMES:
        return "unsupported_scheme"
    if not parts.hostname:
        return "missing_host"
    if port == 0:
        return "malformed_url"
    return None


def as_utf8(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The byte stream of a list, as UTF-8.

    A list that starts with a UTF-16 byte-order mark is decoded as UTF-16 (the
    mark tells the byte order) and re-encoded chunk by chunk, so it is still a
    stream. Any other list passes through untouched: UTF-8 is decoded line by
    line later, and a bad line is reported on its own.
    """
    stream = iter(chunks)
    head = b""
    for chunk in stream:
        head += chunk
        if len(head) >= 2:
            break
    if not head.startswith(_UTF16_BOMS):
        if head:
            yield head
        yield from stream
        return
    # "surrogatepass" lets a lone surrogate through, and UTF-8 then carries it
    # as bytes that strict UTF-8 refuses: that line becomes `not_utf8`.
    decoder = codecs.getincrementaldecoder("utf-16")("surrogatepass")
    for chunk in itertools.chain((head,), stream):
        yield decoder.decode(chunk).encode("utf-8", "surrogatepass")
    try:
        yield decoder.decode(b"", final=True).encode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # an odd number of bytes: the last one is half a character
        yield _NOT_UTF8


def parse_chunks(chunks: Iterable[bytes]) -> Iterator[ListedUrl | InvalidLine]:
    """Every URL and every invalid line of a list, in list order."""
    plain, max_label = _PLAIN_LINE.fullmatch, MAX_LABEL
    for first, lines in split_blocks(as_utf8(chunks)):
        number = first
        for raw in lines:
            found = plain(raw) if type(raw) is bytes else None
            if (
                found is not None
                and b"xn--" not in (host := found[2].lower())
                and (len(host) <= max_label or dns_can_carry(host))
            ):
                url = found[1]
                if b"#" in url:
                    url = url.split(b"#", 1)[0]
                base = found[3]
                yield ListedUrl(
                    number,
                    url.decode("ascii"),
                    None,
                    host.decode("ascii"),
                    None,
                    None if base is None else base.decode("ascii"),
                )
            elif (entry := parse_line(raw, number)) is not None:
                yield entry
            number += 1
