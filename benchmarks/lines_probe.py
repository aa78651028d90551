"""How fast a job takes in a list, and what the whole list costs in memory.

    python lines_probe.py LIST     (run it with the product's Python)

It runs the product's own `Job` over the whole list, as `fetch` does, with
one thing changed: the fetcher answers every URL at once with a 404, with no
network and no file. What is left is what a job does per line whatever its
downloads cost: reading, parsing and validating, de-duplication, naming, the
hand-over to a worker, and the failure's bookkeeping (its log line is
filtered out by level, as `--log-level error` would). So the lines per second
printed are the most a job can take in, and the peak RSS is that of a job
that has held the de-duplication state of every line.

Why not a real `fetch` over a list whose URLs all 404: on this VM each 404
costs ~1.2 ms through HTTP (800 lines/s, measured), forty times the reading,
so it would time the downloads, and a 10M-line list would take hours.

Prints one JSON object: lines (the job's lines: URLs found + duplicates +
invalid), seconds (job start to end, as `job_finished`'s `elapsed_s`),
lines_per_s, base_rss_mb (the process before the job), peak_rss_mb
(VmHWM after it) and bytes_per_url.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import cast

import httpx
import trio

from imgdl_watch import config, errors
from imgdl_watch.download.fetcher import Downloaded, Fetcher
from imgdl_watch.job.job import Job
from imgdl_watch.service.logs import configure

CONCURRENCY = 64


class NotFoundFetcher:
    """What a job asks of its fetcher, answering every URL at once with a 404."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.stopping = trio.Event()

    async def download(self, url: str, *, dir_fd: int, name: str, parsed: httpx.URL) -> Downloaded:
        failure = errors.RefusedStatus(404)
        failure.attempts = 1
        raise failure


def high_water_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def main(path: str) -> dict[str, float]:
    fd = os.open(path, os.O_RDONLY)
    base = high_water_mb()
    with tempfile.TemporaryDirectory() as out:
        fetcher = cast(Fetcher, NotFoundFetcher(CONCURRENCY))
        options = config.job_options(config.defaults("fetch"))
        job = Job(name="lines", list_fd=fd, output=out, fetcher=fetcher, options=options)
        started = time.perf_counter()
        summary = await job.run()
        seconds = time.perf_counter() - started
    lines = summary.found + summary.duplicates + summary.invalid
    peak = high_water_mb()
    return {
        "lines": lines, "seconds": round(seconds, 2), "lines_per_s": round(lines / seconds),
        "base_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
        "bytes_per_url": round((peak - base) * 1024 * 1024 / max(1, summary.found)),
    }  # fmt: skip


if __name__ == "__main__":
    configure(level="error", fmt="json")
    print(json.dumps(trio.run(main, sys.argv[1])))
