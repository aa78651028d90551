"""How closely `--max-rate` holds on a real clock: `python -m benchmarks.bandwidth`.

A threaded server on 127.0.0.1 serves one 10 MiB body (as fast as loopback
goes); `imgdl-watch fetch --max-rate 2M` downloads it, then again with the
cap as a `[hosts]` entry's `max_rate`. Each run's wall time is printed
beside the ideal, (10 MiB - the bucket's burst of 0.1 s) / 2 MiB/s = 4.9 s,
and the process's start-up is part of it (~0.2 s here). Not part of
`make test`: a timed assertion on a shared machine would be flaky.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SIZE = 10 * 1024**2
RATE = "2M"
IDEAL_S = (SIZE - 0.1 * 2 * 1024**2) / (2 * 1024**2)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        chunk = b"\xff\xd8\xff\xe0" + b"\0" * (64 * 1024 - 4)
        for _ in range(SIZE // len(chunk)):
            self.wfile.write(chunk)


def timed_fetch(imgdl: list[str], url: str, work: Path, *args: str) -> float:
    listed = work / "big.txt"
    listed.write_text(url + "\n")
    out = work / "out"
    start = time.monotonic()
    subprocess.run(
        [*imgdl, "fetch", str(listed), "--output", str(out), "--log-format", "json", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    took = time.monotonic() - start
    got = (out / "big" / "big.jpg").stat().st_size
    assert got == SIZE, got
    (out / "big" / "big.jpg").unlink()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--imgdl", metavar="PATH", help="the imgdl-watch command to time")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    imgdl = [args.imgdl] if args.imgdl else [sys.executable, "-m", "imgdl_watch"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/big.jpg"
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            config = work / "config.toml"
            config.write_text(f'[hosts."127.0.0.1"]\nmax_rate = "{RATE}"\n')
            print(f"10 MiB at {RATE}/s: ideal {IDEAL_S:.2f} s (+ start-up)")
            uncapped = timed_fetch(imgdl, url, work)
            print(f"  no cap:            {uncapped:6.2f} s")
            for _ in range(args.rounds):
                process = timed_fetch(imgdl, url, work, "--max-rate", RATE)
                host = timed_fetch(imgdl, url, work, "--config", str(config))
                print(
                    f"  --max-rate {RATE}:     {process:6.2f} s    [hosts] max_rate: {host:6.2f} s"
                )
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    os.environ.setdefault("IMGDL_WATCH_LOG_LEVEL", "warning")
    main()
