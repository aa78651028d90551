"""Is it an image? Magic bytes and disguises, as pure functions."""

from __future__ import annotations

import pytest

from imgdl_watch.download.imagecheck import disguised, is_image_type, sniff


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00", "image/png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x1cftypavif", "image/avif"),
        (b'\xef\xbb\xbf <?xml version="1.0"?>\n<svg xmlns="x"/>', "image/svg+xml"),
        (b"<!DOCTYPE html><html>", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, mime: str | None) -> None:
    assert sniff(head) == mime


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\n  <!DOCTYPE html><html><body>gone</body></html>", "HTML or XML"),
        (b"\xef\xbb\xbf<html>", "HTML or XML"),
        (b'<?xml version="1.0"?><error>not found</error>', "HTML or XML"),
        (b'{"error": "not found"}', "JSON"),
        (b"[]", "JSON"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"\xff\xd8\xff\xe0", None),
        (b"GIF89a", None),
        # The same pages in UTF-16, which once passed for images.
        (b"\xff\xfe" + "<html><body>gone</body></html>".encode("utf-16-le"), "HTML or XML"),
        (b"\xfe\xff" + '{"error": 404}'.encode("utf-16-be"), "JSON"),
        (b"\xff\xfe" + "<svg xmlns='http://www.w3.org/2000/svg'/>".encode("utf-16-le"), None),
        # An XML error page in UTF-16 too (S3's NoSuchKey, say).
        (b"\xff\xfe" + "<?xml version='1.0'?><Error/>".encode("utf-16-le"), "HTML or XML"),
    ],
)
def test_disguised(head: bytes, kind: str | None) -> None:
    assert disguised(head) == kind


def test_utf16_markup_typed_as_svg_is_taken_for_one() -> None:
    # Past a comment longer than the head holds in UTF-16, no <svg is seen.
    head = (b"\xff\xfe" + f"<!--{'c' * 600}--><svg/>".encode("utf-16-le"))[:1024]
    assert disguised(head, svg_typed=True) is None
    assert disguised(head) == "HTML or XML"


def test_is_image_type() -> None:
    assert is_image_type("Image/JPEG; charset=binary")
    assert not is_image_type("text/html")
    assert not is_image_type(None)
