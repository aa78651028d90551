"""Is this an image, and how large? Content-Type, magic bytes and the
header's width and height: pure logic, no I/O."""

from __future__ import annotations

import io

import imagesize

from ..naming import mime_type

# How many leading bytes `sniff` wants to see; SVG needs the most, since its
# root element may follow an XML declaration, a doctype and comments.
SNIFF_BYTES = 1024

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\xff\x0a", "image/jxl"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
)
_HEIF_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
}


def sniff(head: bytes) -> str | None:
    """The image MIME type that the first bytes of a body show, if any."""
    for signature, mime in _SIGNATURES:
        if head.startswith(signature):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(head[8:12])
    text = head[:SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if (text.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--"))) and b"<svg" in text:
        return "image/svg+xml"
    return None


def disguised(head: bytes, *, svg_typed: bool = False) -> str | None:
    """What a body that claims to be an image really is, when it is markup.

    Some servers answer a missing image with `200 image/jpeg` and an HTML
    page or a JSON error. No image format starts with `<` (but SVG, which
    `sniff` knows) or with `{` or `[`, so such a body is refused whatever
    its Content-Type says. `svg_typed`: the Content-Type says SVG (markup in
    UTF-16 is then taken for one, the head being too short to tell).
    """
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<") and sniff(head) is None:
        return "HTML or XML"
    if text.startswith((b"{", b"[")):
        return "JSON"
    for bom, encoding in _UTF16_BOMS:
        # The same page in UTF-16: a byte-order mark, then markup or JSON.
        # The head holds half as many characters in UTF-16, too few to see an
        # SVG's root past a long comment: markup whose type says SVG is given
        # the benefit of the doubt.
        if head.startswith(bom):
            text16 = head[len(bom) :]
            chars = text16[: len(text16) // 2 * 2].decode(encoding, "replace").lstrip().lower()
            if chars.startswith("<") and not (svg_typed or "<svg" in chars):
                return "HTML or XML"
            if chars.startswith(("{", "[")):
                return "JSON"
    return None


_UTF16_BOMS = ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def is_image_type(content_type: str | None) -> bool:
    """True for a Content-Type of `image/*`."""
    return mime_type(content_type).startswith("image/")


def dimensions(head: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels as an image's header gives them, without
    decoding it; None when the header does not tell (not an image, SVG with
    relative sizes, a header cut short).

    The stored size, as a decoder gives it: EXIF's orientation is not applied.
    imagesize reads JPEG, PNG, GIF, WebP, AVIF, HEIC, TIFF, BMP and more,
    from the header alone (`tests/test_imageinfo.py` checks it against
    Pillow's full decode).
    """
    if not head:
        return None
    width, height = imagesize.get(io.BytesIO(head), exif_rotation=False)
    if width <= 0 or height <= 0:
        return None
    return int(width), int(height)
