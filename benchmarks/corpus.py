"""A deterministic corpus: one JPEG of about 60 KB at each of the seed's URL paths.

Made with Pillow (installed in the bench environment only). The same seed
always gives the same bytes, so runs on different days compare.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path
from urllib.parse import urlsplit

SEED_LIST = Path(__file__).parent.parent / "tests" / "data" / "cats.txt"
# Pixels and JPEG quality that land near the seed's ~57 KB per image.
SIZE = (480, 320)
QUALITY = 85


def seed_paths() -> list[str]:
    return [
        urlsplit(line.strip()).path for line in SEED_LIST.read_text().splitlines() if line.strip()
    ]


def make_image(path: str) -> bytes:
    from io import BytesIO

    from PIL import Image, ImageFilter

    rng = random.Random(hashlib.sha256(path.encode()).digest())
    noise = bytes(rng.getrandbits(8) for _ in range(SIZE[0] * SIZE[1] // 16 * 3))
    small = Image.frombytes("RGB", (SIZE[0] // 4, SIZE[1] // 4), noise)
    image = small.resize(SIZE, Image.Resampling.BICUBIC).filter(ImageFilter.SMOOTH)
    out = BytesIO()
    image.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def build(root: Path) -> tuple[int, int]:
    """Write the corpus under `root` (skipped when complete). Returns (files, bytes)."""
    paths = seed_paths()
    stamp = root / ".complete"
    total = 0
    if not stamp.exists():
        for path in paths:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(make_image(path))
        stamp.write_text("ok\n")
    for path in paths:
        total += (root / path.lstrip("/")).stat().st_size
    return len(paths), total


# (size, BLAKE2b digest) of each corpus image, to check what a tool saved.
Digests = dict[tuple[int, bytes], str]


def _digest(path: str) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.blake2b(handle.read(), digest_size=16).digest()


def digests(root: Path) -> Digests:
    return {
        (os.path.getsize(full), _digest(full)): path
        for path in seed_paths()
        for full in [str(root / path.lstrip("/"))]
    }


def verify(folder: Path, known: Digests) -> tuple[int, int]:
    """(corpus images saved byte for byte under `folder`, counted once each; other files).

    Names are each tool's own business, so files are matched by content. A
    temporary file left behind, a partial body or an error page saved as an
    image counts as "other".
    """
    sizes = {size for size, _ in known}
    found: set[bytes] = set()
    other = 0
    for where, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(where, name)
            size = os.path.getsize(full)
            digest = _digest(full) if size in sizes else b""
            if (size, digest) in known:
                found.add(digest)
            else:
                other += 1
    return len(found), other


if __name__ == "__main__":
    count, size = build(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/_work/corpus"))
    print(f"{count} images, {size / 1e6:.1f} MB")
