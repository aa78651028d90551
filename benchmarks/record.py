"""What the report's per-image record costs: sha256 while streaming, the width
and height from the header, and the filters' verdict (issue #17's bound: ~0.1 ms
per image on the static benchmark's images).

A micro-benchmark of exactly the code that `download.body.receive` added, on
images like `make bench`'s static set (JPEGs of ~57 KB from `corpus`), cut in
the chunks a connection hands over. It needs Pillow (the bench or dev extra)
and nothing else running:

    .venv/bin/python -m benchmarks.record [--images 200] [--rounds 20] [--chunk 65536]
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.corpus import make_image, seed_paths
from imgdl_watch.download.body import BodyRecord, Filters


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _record(chunks: list[bytes], filters: Filters) -> object:
    """The added work of one body: as `receive` does it, chunk by chunk, then once."""
    record = BodyRecord(md5=False)
    for chunk in chunks:
        record.add(chunk)
    sha256, md5, width, height = record.finish()
    return filters.verdict(sha256=sha256, md5=md5, width=width, height=height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=65536)
    args = parser.parse_args()
    bodies = [_chunks(make_image(p), args.chunk) for p in seed_paths()[: args.images]]
    mean_kb = statistics.mean(sum(map(len, b)) for b in bodies) / 1000
    filters = Filters(
        min_width=1, min_height=1, max_pixels=10**9, skip_sha256=frozenset({"0" * 64})
    )
    per_image = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for chunks in bodies:
            _record(chunks, filters)
        per_image.append((time.perf_counter() - started) / len(bodies))
    print(
        f"{len(bodies)} JPEGs of {mean_kb:.0f} KB on average, chunks of {args.chunk} bytes:"
        f" sha256 + width/height + filters = {statistics.median(per_image) * 1e6:.1f} µs"
        f" per image (median of {args.rounds} rounds; best {min(per_image) * 1e6:.1f} µs)"
    )


if __name__ == "__main__":
    main()
