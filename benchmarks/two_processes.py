"""Would a second process pay? (issue #19, item 4)

    python -m benchmarks.two_processes [--rounds 7] [--concurrency 16]

The most a worker-process design could gain on the static set: two
`imgdl-watch fetch` processes at once, each with half the list and half
the concurrency, against one process with all of it, in interleaved rounds
(medians). Two processes share nothing here (no global limits, no common
report, no names to agree on), so a real design could only do worse.
Run it on the product as `make bench` installs it (benchmarks/_work/product).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks import corpus
from benchmarks import server as servers

HERE = Path(__file__).parent
WORK = HERE / "_work"
PRODUCT = WORK / "product" / "bin" / "imgdl-watch"


def fetch(lists: list[Path], out: Path, concurrency: int, expected: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    limits = ["--concurrency", str(concurrency), "--per-host", str(concurrency)]
    procs = [
        subprocess.Popen(
            [
                str(PRODUCT),
                "fetch",
                str(path),
                "--output",
                str(out),
                *limits,
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for path in lists
    ]
    for proc in procs:
        proc.wait()
    wall = time.monotonic() - started
    files = sum(1 for p in out.rglob("*") if p.is_file())
    assert files == expected, f"{files} files saved of {expected}"
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    root = WORK / "corpus"
    corpus.build(root)
    srv = servers.start(root)
    try:
        urls = [f"{srv.static}{p}" for p in corpus.seed_paths()]
        whole = WORK / "two-whole.txt"
        whole.write_text("".join(u + "\n" for u in urls))
        halves = [WORK / "two-a.txt", WORK / "two-b.txt"]
        halves[0].write_text("".join(u + "\n" for u in urls[0::2]))
        halves[1].write_text("".join(u + "\n" for u in urls[1::2]))
        one, two = [], []
        for _ in range(args.rounds):
            one.append(fetch([whole], WORK / "two-out-1", args.concurrency, len(urls)))
            two.append(fetch(halves, WORK / "two-out-2", args.concurrency // 2, len(urls)))
        a, b = statistics.median(one), statistics.median(two)
        print(f"static set, {len(urls)} images, median of {args.rounds} interleaved rounds:")
        print(f"  one process, {args.concurrency} at once:         {a:.2f} s")
        print(f"  two processes, {args.concurrency // 2} at once each: {b:.2f} s (x{b / a:.2f})")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
