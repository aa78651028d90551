"""What `--archive` costs per image (issue #18): a micro-benchmark of its parts.

    python -m benchmarks.archive [--archived 100000] [--images 1183] [--rounds 7] [DIR]

It times, per image of a list of `--images` new URLs (those of the static
benchmark's size), against an archive that already holds `--archived` rows,
in a fresh file under DIR (default: benchmarks/_work, the disk the product
writes to):

    look up     what `Feed` adds to each batch it parses: the URLs'
                fingerprints and one query per batch (the first batch of 32,
                then 64, ... up to 1024, as the feed reads), all misses
    record      what `ArchiveLog` writes: one transaction per `FLUSH_ROWS`
                finished downloads (WAL, synchronous=NORMAL)
    sha256      hashing a 60 KB body as it streams (`download/body.py`), for
                comparison: it is paid whether or not the archive is on

Each is CPU time of this process (`time.process_time`: the work of the
worker thread that does it in the product), the median of `--rounds`
rounds, in microseconds per image. The archive's budget is ~100 µs per
image (issue #18); `make bench`'s static set spends ~1.4 ms per image in all.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imgdl_watch.job.archive import FLUSH_ROWS, Archive, ArchivedFile

HERE = Path(__file__).parent
FIRST_BATCH, LAST_BATCH = 32, 1024  # as job/feed.py reads a list
BODY = os.urandom(60_000)


def _fill(archive: Archive, rows: int) -> None:
    for start in range(0, rows, 10_000):
        archive.record(
            [
                ArchivedFile(f"https://cdn.example/old/{i}.jpg", "ab" * 32, f"/srv/old/{i}.jpg", i)
                for i in range(start, min(rows, start + 10_000))
            ]
        )


def _batches(urls: list[str]) -> list[list[str]]:
    out, size, start = [], FIRST_BATCH, 0
    while start < len(urls):
        out.append(urls[start : start + size])
        start += size
        size = min(size * 2, LAST_BATCH)
    return out


def _cpu(work: Callable[..., object], *args: object) -> float:
    started = time.process_time()
    work(*args)
    return time.process_time() - started


def _look_up_all(archive: Archive, batches: list[list[str]]) -> None:
    for batch in batches:
        archive.look_up(batch)


def _record_all(archive: Archive, chunks: list[list[ArchivedFile]]) -> None:
    for chunk in chunks:
        archive.record(chunk)


def _hash_all(count: int) -> None:
    for _ in range(count):
        hashlib.sha256(BODY).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archived", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=1183)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("dir", nargs="?", default=str(HERE / "_work"))
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        archive = Archive(os.path.join(work, "archive.sqlite"))
        _fill(archive, args.archived)
        results: dict[str, list[float]] = {"look up": [], "record": [], "sha256": []}
        for round_ in range(args.rounds):
            urls = [f"https://cdn.example/r{round_}/{i}.jpg" for i in range(args.images)]
            batches = _batches(urls)
            results["look up"].append(_cpu(_look_up_all, archive, batches))
            files = [ArchivedFile(u, "cd" * 32, f"/srv/new/{u[-12:]}", 60_000) for u in urls]
            chunks = [files[i : i + FLUSH_ROWS] for i in range(0, len(files), FLUSH_ROWS)]
            results["record"].append(_cpu(_record_all, archive, chunks))
            results["sha256"].append(_cpu(_hash_all, args.images))
        archive.close()
    print(f"{args.images} images, {args.archived} rows archived, median of {args.rounds} rounds")
    total = 0.0
    for name, seconds in results.items():
        per_image = statistics.median(seconds) / args.images * 1e6
        if name != "sha256":
            total += per_image
        print(f"  {name:<8} {per_image:7.1f} µs per image (CPU)")
    print(f"  archive  {total:7.1f} µs per image (look up + record)")


if __name__ == "__main__":
    main()
