"""Receiving a response's body: whole, within the size cap, and an image.

We ask for `Accept-Encoding: identity` and read the raw body: the file is
exactly what the server holds, and a compressed bomb cannot inflate in
memory. The size cap is checked against Content-Length before the body is
read, and again against the bytes as they stream.

A body counts as an image when its Content-Type is `image/*` or its first
bytes are one (`imagecheck.sniff`); one that claims `image/*` but is markup
or JSON (`imagecheck.disguised`) is not, nor one sent compressed (gzip,
br, ...) although we asked for identity whose bytes are then not an
image's (a `.svgz` gzipped SVG is one). `any_type` saves whatever comes, as
it came.

While it streams, the body is hashed (sha256, for the report; md5 too for a
small body when a placeholder is listed by its md5), and its first
`DIMENSION_BYTES` are kept for its width and height, read from the header
without decoding a pixel (`imagecheck.dimensions`). The `Filters` then
decide, before anything is published, whether the image is kept:
`Filtered` says why not, and the sink is discarded.
The sha256 is also left on the sink (`FileSink.sha256`): the archive records it.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import errors as err
from ..naming import mime_type
from .filesink import FileSink
from .imagecheck import SNIFF_BYTES, dimensions, disguised, is_image_type, sniff
from .transports import Answer

# The first bytes of a body kept for reading its width and height: a JPEG's
# size comes after its EXIF, ICC and XMP segments, which may be tens of KB.
# Bodies up to this size are in memory anyway (`filesink.SPILL_BYTES`).
DIMENSION_BYTES = 256 * 1024
# Bodies up to this size are hashed with md5 as well, when a placeholder is
# listed by its md5 (imgur's is known by it, as its ETag). Placeholders are
# small; a photo larger than this pays for no second hash.
MD5_MAX_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Filters:
    """Images that are dropped, not saved. Zero (or empty) is off."""

    min_width: int = 0
    min_height: int = 0
    # Width x height at most: a decompression-bomb bound, read from the header.
    max_pixels: int = 0
    # Known placeholders ("image removed"), by the hex digest of their bytes.
    skip_sha256: frozenset[str] = frozenset()
    skip_md5: frozenset[str] = frozenset()

    def verdict(
        self, *, sha256: str, md5: str | None, width: int | None, height: int | None
    ) -> tuple[str, str] | None:
        """(reason, detail) when the image is to be dropped, else None.

        An image whose size its header does not tell (SVG, or a header past
        `DIMENSION_BYTES`) passes the size filters: nothing says it fails them.
        """
        if sha256 in self.skip_sha256 or (md5 is not None and md5 in self.skip_md5):
            which = f"sha256 {sha256}" if sha256 in self.skip_sha256 else f"md5 {md5}"
            return "placeholder", f"{which} is a known placeholder"
        if width is None or height is None:
            return None
        if self.max_pixels and width * height > self.max_pixels:
            return "too_many_pixels", f"{width}x{height} is over {self.max_pixels} pixels"
        short = []
        if width < self.min_width:
            short.append(f"narrower than the minimum width {self.min_width}")
        if height < self.min_height:
            short.append(f"lower than the minimum height {self.min_height}")
        if short:
            return "too_small", f"{width}x{height}: " + " and ".join(short)
        return None


@dataclass(frozen=True, slots=True)
class BodyRules:
    """What a body must be to be saved."""

    # Largest body saved, in bytes.
    max_bytes: int
    # Save any Content-Type, not only images.
    any_type: bool
    filters: Filters = field(default_factory=Filters)


def unwanted(
    rules: BodyRules,
    *,
    size: int,
    head: bytes,
    sha256: str,
    md5: str | None,
    width: int | None,
    height: int | None,
) -> str | None:
    """Why a body saved earlier (an archived file) would not be saved under
    `rules`, or None: the size cap, images only, and the filters, as
    `receive` checks a download's (a Content-Type is not known here: the
    first bytes must show an image)."""
    if size > rules.max_bytes:
        return f"{size} bytes is over the cap of {rules.max_bytes}"
    if not rules.any_type and (sniff(head) is None or disguised(head) is not None):
        return "its first bytes are not an image"
    dropped = rules.filters.verdict(sha256=sha256, md5=md5, width=width, height=height)
    return None if dropped is None else dropped[1]


@dataclass(frozen=True, slots=True)
class Received:
    """A whole, checked body in its sink, not yet published, and what it is."""

    sink: FileSink
    content_type: str | None
    # The image type its first bytes show, when they were looked at.
    sniffed: str | None
    # The hex sha256 of the bytes, as saved.
    sha256: str = ""
    # From the image's header; None when it does not tell.
    width: int | None = None
    height: int | None = None


async def receive(
    answer: Answer,
    dir_fd: int,
    rules: BodyRules,
    *,
    need_type: bool,
    source: bytes = b"",
    svgz: bool = False,
) -> Received:
    """Stream `answer`'s body into a new sink in the folder `dir_fd`, and check it.

    `need_type`: the caller needs the body's image type even when nothing is
    checked (to name a file that has no extension). `source`: the tag of the
    URL it is for (`naming.source_tag`), set on the file. `svgz`: its name
    is a `.svgz`, whose bytes may be an SVG gzipped. Raises a
    `DownloadError`; the sink is then discarded.
    """
    limit = rules.max_bytes
    length = _content_length(answer.headers)
    if length is not None and length > limit:
        raise err.TooLarge(f"Content-Length {length} is over the cap of {limit}")
    content_type = answer.headers.get("content-type")
    typed_image = is_image_type(content_type)
    checked = not rules.any_type
    coding = _coding(answer.headers.get("content-encoding"))
    # The first bytes: to sniff an untyped body, to unmask a typed one, or to
    # tell the caller the type.
    want_head = checked or need_type
    head = b""
    filters = rules.filters
    record = BodyRecord(md5=bool(filters.skip_md5) and (length is None or length <= MD5_MAX_BYTES))
    sink = FileSink(dir_fd, source=source)
    try:
        async for chunk in answer.body:
            if sink.size + len(chunk) > limit:
                raise err.TooLarge(f"body is over the cap of {limit} bytes")
            if want_head and len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            record.add(chunk)
            await sink.write(chunk)
        if length is not None and sink.size < length:
            raise err.Truncated(f"{sink.size} of {length} bytes")
        if sink.size == 0:
            raise err.NotAnImage("empty body")
        sniffed = sniff(head) if want_head else None
        svg_typed = mime_type(content_type) == "image/svg+xml"
        # We asked for identity, and the bytes are compressed, not an image's:
        # its file would not open. A gzipped SVG is one, when the URL names it
        # `.svgz`. --any-type saves anything as it came.
        svgz_ok = svgz and svg_typed and coding in ("gzip", "x-gzip") and _gzipped_svg(head)
        if checked and coding is not None and sniffed is None and not svgz_ok:
            raise err.NotAnImage(f"Content-Encoding {coding}: not the image's own bytes")
        if checked and not typed_image and sniffed is None:
            raise err.NotAnImage(f"Content-Type {content_type or 'missing'}")
        if checked and typed_image and (kind := disguised(head, svg_typed=svg_typed)) is not None:
            raise err.NotAnImage(f"Content-Type {content_type}, but the body is {kind}")
        digest, md5, width, height = record.finish()
        dropped = filters.verdict(sha256=digest, md5=md5, width=width, height=height)
        if dropped is not None:
            raise err.Filtered(
                *dropped,
                sha256=digest,
                width=width,
                height=height,
                size=sink.size,
                content_type=content_type or sniffed,
            )
        sink.sha256 = digest
        return Received(sink, content_type, sniffed, digest, width, height)
    except BaseException:
        sink.discard()
        raise


class BodyRecord:
    """What the report says of a body, gathered as it streams: its sha256 (and
    md5, while small), and its first chunks for the image's width and height
    (references: nothing is copied until the end)."""

    __slots__ = ("_md5", "_sha256", "_size", "_start", "_started")

    def __init__(self, *, md5: bool) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._start: list[bytes] = []
        self._started = 0
        self._size = 0

    def add(self, chunk: bytes) -> None:
        if self._started < DIMENSION_BYTES:
            self._start.append(chunk)
            self._started += len(chunk)
        self._sha256.update(chunk)
        self._size += len(chunk)
        if self._md5 is not None:
            if self._size > MD5_MAX_BYTES:
                self._md5 = None
            else:
                self._md5.update(chunk)

    def finish(self) -> tuple[str, str | None, int | None, int | None]:
        """(sha256, md5 or None, width, height) of the whole body."""
        start = self._start
        size = dimensions(start[0] if len(start) == 1 else b"".join(start))
        width, height = size if size is not None else (None, None)
        md5 = self._md5.hexdigest() if self._md5 is not None else None
        return self._sha256.hexdigest(), md5, width, height


# The codings that change a body's bytes (RFC 9110 8.4.1, and br, zstd).
# Anything else a server may write there ("none", "UTF-8", a repeated
# "identity") changes nothing, and is not held against the image.
_COMPRESSIONS = frozenset({"gzip", "x-gzip", "deflate", "compress", "x-compress", "br", "zstd"})


def _coding(value: str | None) -> str | None:
    """The compression a Content-Encoding names, if any."""
    if not value:
        return None
    for token in value.lower().split(","):
        if token.strip() in _COMPRESSIONS:
            return token.strip()
    return None


def _gzipped_svg(head: bytes) -> bool:
    """Whether `head`, a gzip stream's start, inflates to an SVG's (at most
    `SNIFF_BYTES` of it: a compressed bomb cannot grow here)."""
    if not head.startswith(b"\x1f\x8b"):
        return False
    try:
        start = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, SNIFF_BYTES)
    except zlib.error:
        return False
    return sniff(start) == "image/svg+xml"


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
