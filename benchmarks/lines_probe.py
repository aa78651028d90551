"""How fast a job takes in a list, and what the whole list costs in memory.

    python lines_probe.py LIST            the whole job (below)
    python lines_probe.py --reader LIST   the reading stage alone

(Run it with the product's Python.)

`--reader` times what the feed's reader thread does, alone, with no event
loop and no worker: reading, parsing and validating each line,
de-duplication (in memory, then on disk past `dedupe.MEMORY_URLS`),
naming, and (in a folder that was not empty) the `stat` that looks for
each name in it. It is the
"reading and de-duplication" rate of issue #19.

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
(VmHWM after it) and bytes_per_url; with `--reader`, also the size of the
de-duplication's scratch file on disk at the end (scratch_mb, and per line).
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
from imgdl_watch.job.dedupe import Dedupe
from imgdl_watch.job.feed import PARSE_BATCH, read_entries
from imgdl_watch.job.feed import _take as take
from imgdl_watch.job.folder import is_empty
from imgdl_watch.job.job import Job
from imgdl_watch.service.logs import configure

CONCURRENCY = 64


class NeverBusy:
    """The host side of the fetcher that a job's feed asks: no host is ever busy."""

    def busy(self, host: str) -> bool:
        return False

    async def given_back(self) -> None:
        await trio.sleep_forever()  # never awaited: no host is ever busy


class NotFoundFetcher:
    """What a job asks of its fetcher, answering every URL at once with a 404."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.stopping = trio.Event()
        self.policy = self.hosts = NeverBusy()

    async def download(
        self, url: str, *, dir_fd: int, name: str, parsed: httpx.URL | None, rules: object = None
    ) -> Downloaded:
        failure = errors.RefusedStatus(404)
        failure.attempts = 1
        raise failure

    def forget_folder(self, dir_fd: int) -> None:
        pass


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


def reader(path: str) -> dict[str, float]:
    fd = os.open(path, os.O_RDONLY)
    base = high_water_mb()
    lines = 0
    with tempfile.TemporaryDirectory() as out:
        dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        dedupe = Dedupe(spill_dir_fd=dir_fd)
        entries = read_entries(fd)
        started = time.perf_counter()
        # As the job does: a new job's folder is empty, so no name is looked for.
        empty = is_empty(dir_fd)
        while batch := take(entries, PARSE_BATCH, dedupe, dir_fd, None, folder_empty=empty)[0]:
            lines += len(batch)
        seconds = time.perf_counter() - started
        # The de-duplication's scratch file on disk (none below dedupe.MEMORY_URLS).
        scratch = sum(entry.stat().st_size for entry in os.scandir(out))
        dedupe.close()
        os.close(dir_fd)
    return {
        "lines": lines, "seconds": round(seconds, 2), "lines_per_s": round(lines / seconds),
        "base_rss_mb": round(base, 1), "peak_rss_mb": round(high_water_mb(), 1),
        "scratch_mb": round(scratch / 1024**2, 1),
        "scratch_bytes_per_url": round(scratch / max(1, lines)),
    }  # fmt: skip


if __name__ == "__main__":
    configure(level="error", fmt="json")
    if sys.argv[1] == "--reader":
        print(json.dumps(reader(sys.argv[2])))
    else:
        print(json.dumps(trio.run(main, sys.argv[1])))
