"""An image's record: its width and height from the header (against Pillow's full
decode), its sha256 (against sha256sum of the saved file), and the filters that
drop an image before it is published."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imgdl_watch import errors as err
from imgdl_watch.download.body import DIMENSION_BYTES, MD5_MAX_BYTES, Filters
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.filesink import TEMP_PREFIX
from imgdl_watch.download.imagecheck import dimensions
from imgdl_watch.download.rules import DownloadRules
from tests.helpers import fetch_options
from tests.imageserver import ImageServer

pytest.importorskip("PIL.Image", reason="Pillow (the dev extra) makes the test images")
from PIL import Image, features


def _noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.effect_noise(size, 60).convert(mode)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def corpus() -> dict[str, bytes]:
    """Real images in several formats and shapes, made by Pillow."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a 60 KB APP1 before the frame
    images = {
        "baseline.jpg": _save(_noise((640, 480)), "JPEG", quality=85),
        "progressive.jpg": _save(_noise((333, 777)), "JPEG", progressive=True),
        "grey.jpg": _save(_noise((1, 2000), "L"), "JPEG"),
        "big-exif.jpg": _save(_noise((123, 45)), "JPEG", exif=exif.tobytes()),
        "rgba.png": _save(_noise((301, 17), "RGBA"), "PNG"),
        "palette.png": _save(_noise((64, 64), "P"), "PNG"),
        "interlaced.png": _save(_noise((200, 150)), "PNG", interlace=1),
        "one.gif": _save(_noise((250, 99), "P"), "GIF"),
        "animated.gif": _save(
            _noise((120, 80), "P"),
            "GIF",
            save_all=True,
            append_images=[_noise((120, 80), "P")],
        ),
        "lossy.webp": _save(_noise((512, 288)), "WEBP", quality=70),
        "lossless.webp": _save(_noise((77, 33), "RGBA"), "WEBP", lossless=True),
        "image.bmp": _save(_noise((31, 41)), "BMP"),
        "image.tiff": _save(_noise((59, 26)), "TIFF"),
    }
    if features.check("avif"):
        images["image.avif"] = _save(_noise((320, 240)), "AVIF", quality=60)
        images["odd.avif"] = _save(_noise((65, 129)), "AVIF")
    return images


def _decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # the full decode: every pixel
        width, height = image.size
        return int(width), int(height)


def test_dimensions_match_a_full_decode() -> None:
    images = corpus()
    formats = {name.rsplit(".", 1)[1] for name in images}
    assert {"jpg", "png", "gif", "webp"} <= formats
    if "avif" not in formats:
        pytest.skip("this Pillow cannot write AVIF; the other formats passed")  # pragma: no cover
    for name, data in images.items():
        assert dimensions(data[:DIMENSION_BYTES]) == _decoded_size(data), name


def test_no_dimensions_for_what_is_not_an_image() -> None:
    assert dimensions(b"") is None
    assert dimensions(b"<html>gone</html>") is None
    assert dimensions(b"\xff\xd8\xff\xe0" + b"\0" * 100) is None  # a JPEG cut before its frame


def _rules(**filters: object) -> DownloadRules:
    return DownloadRules(
        user_agent="t",
        header=(),
        retries=0,
        max_bytes=32 * 1024**2,
        connect_timeout=5,
        read_timeout=5,
        total_timeout=30,
        max_redirects=3,
        any_type=False,
        filters=Filters(**filters),  # type: ignore[arg-type]
    )


def _serve(server: ImageServer, images: dict[str, bytes]) -> None:
    types = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}
    for name, data in images.items():
        server.files[name] = (data, types.get(name.rsplit(".", 1)[1], "application/octet-stream"))


async def test_the_record_has_sha256_and_size_of_the_saved_file(
    server: ImageServer, tmp_path: Path
) -> None:
    images = corpus()
    _serve(server, images)
    folder = tmp_path / "out"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        async with Fetcher(fetch_options()) as fetcher:
            done = {
                name: await fetcher.download(
                    f"{server.base}/file/{name}", dir_fd=fd, name=name, rules=_rules()
                )
                for name in images
            }
    finally:
        os.close(fd)
    sha256sum = shutil.which("sha256sum")
    for name, result in done.items():
        saved = folder / name
        assert saved.read_bytes() == images[name]
        if sha256sum is not None:
            line = subprocess.run([sha256sum, str(saved)], capture_output=True, text=True).stdout
            assert result.sha256 == line.split()[0], name
        assert result.sha256 == hashlib.sha256(images[name]).hexdigest()
        assert (result.width, result.height) == _decoded_size(images[name]), name
    assert done["baseline.jpg"].content_type == "image/jpeg"


async def test_filtered_images_are_never_published(server: ImageServer, tmp_path: Path) -> None:
    small = _save(_noise((40, 30)), "PNG")
    wide = _save(_noise((900, 20)), "JPEG")
    large = _save(_noise((1200, 1000)), "JPEG", quality=20)
    placeholder = _save(Image.new("RGB", (161, 81), "white"), "PNG")  # small, as they are
    assert len(placeholder) <= MD5_MAX_BYTES
    _serve(server, {"s.png": small, "w.jpg": wide, "l.jpg": large, "p.png": placeholder})
    folder = tmp_path / "out"
    folder.mkdir()
    rules = _rules(
        min_width=100,
        min_height=25,
        max_pixels=1_000_000,
        skip_sha256=frozenset({hashlib.sha256(large).hexdigest()}),
        skip_md5=frozenset({hashlib.md5(placeholder).hexdigest()}),
    )
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    got: dict[str, tuple[str, str]] = {}
    try:
        async with Fetcher(fetch_options(retries=3)) as fetcher:
            for name in ("s.png", "w.jpg", "l.jpg", "p.png"):
                with pytest.raises(err.Filtered) as caught:
                    await fetcher.download(
                        f"{server.base}/file/{name}", dir_fd=fd, name=name, rules=rules
                    )
                got[name] = (caught.value.reason, caught.value.detail)
                assert caught.value.attempts == 1  # not retried
    finally:
        os.close(fd)
    assert got["s.png"] == ("too_small", "40x30: narrower than the minimum width 100")
    assert got["w.jpg"] == ("too_small", "900x20: lower than the minimum height 25")
    assert got["l.jpg"][0] == "placeholder" and "sha256" in got["l.jpg"][1]
    assert got["p.png"][0] == "placeholder" and "md5" in got["p.png"][1]
    assert os.listdir(folder) == []  # nothing kept, not even a temporary file
    # Each was asked for once.
    assert all(server.counts[f"/file/{n}"] == 1 for n in got)
    # The pixel bound, on its own.
    too_many = _rules(max_pixels=1_199_999)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        async with Fetcher(fetch_options()) as fetcher:
            with pytest.raises(err.Filtered) as caught:
                await fetcher.download(
                    f"{server.base}/file/l.jpg", dir_fd=fd, name="l.jpg", rules=too_many
                )
    finally:
        os.close(fd)
    assert caught.value.reason == "too_many_pixels"
    assert not [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
    assert os.listdir(folder) == []


def test_filters_pass_what_they_cannot_judge() -> None:
    filters = Filters(min_width=10, min_height=10, max_pixels=50)
    # SVG, or a header past what is kept: the size filters cannot say no.
    assert filters.verdict(sha256="a", md5=None, width=None, height=None) is None
    assert filters.verdict(sha256="a", md5=None, width=10, height=5) == (
        "too_small",
        "10x5: lower than the minimum height 10",
    )
    assert filters.verdict(sha256="a", md5=None, width=5, height=5) == (
        "too_small",
        "5x5: narrower than the minimum width 10 and lower than the minimum height 10",
    )
    assert filters.verdict(sha256="a", md5=None, width=8, height=8) == (
        "too_many_pixels",
        "8x8 is over 50 pixels",
    )
    assert filters.verdict(sha256="a", md5=None, width=10, height=10) == (
        "too_many_pixels",
        "10x10 is over 50 pixels",
    )
    assert Filters().verdict(sha256="a", md5="b", width=1, height=1) is None
