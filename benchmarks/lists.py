"""A million-row list as .txt and as .csv.gz: how soon `fetch` makes its first
request, and the memory of the whole list read and de-duplicated as a job does
(issue #17: a csv.gz first requests in < 1 s and keeps within the .txt's bound).

Runs alone, against a local server that answers nothing but counts the first
request (the lists' URLs never leave 127.0.0.1):

    .venv/bin/python -m benchmarks.lists [--rows 1000000] [--rounds 3]

It writes its lists (about 65 MB) to a temporary folder and removes them.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_FIRST = threading.Event()


class _Counting(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        _FIRST.set()
        time.sleep(1)  # no answer worth having: only the first request counts
        self.send_response(503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _write_lists(folder: Path, rows: int, port: int) -> list[Path]:
    url = f"http://127.0.0.1:{port}/slow/{{n}}/img{{n}}.jpg"
    txt, csv = folder / "big.txt", folder / "big.csv.gz"
    with open(txt, "w") as plain, gzip.open(csv, "wt", compresslevel=6, newline="") as packed:
        packed.write("id,url,caption\r\n")
        for n in range(rows):
            plain.write(url.format(n=n) + "\n")
            packed.write(f'{n},{url.format(n=n)},"caption number {n}, a cat"\r\n')
    return [txt, csv]


def _first_request(imgdl: str, listing: Path, output: Path) -> float:
    _FIRST.clear()
    started = time.monotonic()
    process = subprocess.Popen(
        [imgdl, "fetch", str(listing), "--output", str(output), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = _FIRST.wait(60)
    took = time.monotonic() - started
    process.send_signal(signal.SIGINT)
    process.wait(60)
    return took if seen else float("nan")


_MEMORY = """
import os, resource, sys
from itertools import islice
from imgdl_watch.job.dedupe import Dedupe
from imgdl_watch.job.listformat import ListFormat, read_entries
from imgdl_watch.job.listparse import ListedUrl
name = sys.argv[1]
entries = read_entries(os.open(name, os.O_RDONLY), ListFormat.of(name))
dedupe = Dedupe()
while batch := list(islice(entries, 1024)):  # the feed's batches
    for entry in batch:
        if isinstance(entry, ListedUrl) and dedupe.first_time(entry.url):
            dedupe.name_for(entry.url)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_mb(listing: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY, str(listing)], capture_output=True, text=True, check=True
    )
    return int(done.stdout) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--imgdl", default=str(Path(sys.executable).parent / "imgdl-watch"))
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = Path(tempfile.mkdtemp(prefix="imgdl-lists-"))
    try:
        lists = _write_lists(folder, args.rows, server.server_address[1])
        for listing in lists:
            firsts = [
                _first_request(args.imgdl, listing, folder / "out") for _ in range(args.rounds)
            ]
            print(
                f"{listing.name} ({args.rows} rows, {listing.stat().st_size / 1e6:.0f} MB):"
                f" first request {min(firsts):.3f}-{max(firsts):.3f} s after `fetch` starts;"
                f" peak RSS read and de-duplicated {_peak_rss_mb(listing):.0f} MB"
            )
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
