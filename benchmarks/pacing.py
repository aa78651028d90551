"""Does `--rate-per-host` hold on a real server's own log? `python -m benchmarks.pacing`.

nginx (`benchmarks.server`) serves 200 small images. One list names them 200
times on a paced host (`127.0.0.1`) and 200 times on a host that a `[hosts]`
entry exempts (`localhost`, the same server under another name), interleaved;
`imgdl-watch fetch --rate-per-host 5` downloads it. nginx's access log
(`$msec`, the time the answer went, to the millisecond; the query string
says which host the URL named) then gives, per host: requests, the span from
the first request of the run to the host's last, and the most requests in
any window of one second. Issue #16's promise: 5 at most in any second for
the paced host, about 41 s for its 200, and the exempt host done at full
speed (well under a second). Not part of `make test`: a real clock.
"""

from __future__ import annotations

import argparse
import bisect
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import server as servers

IMAGES = 200
RATE = 5
# A JPEG's magic and padding: the fetcher checks the type, not the pixels.
JPEG = b"\xff\xd8\xff\xe0" + b"p" * 2000


def most_in_a_second(times: list[float]) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


def run_once(imgdl: str, static: str, access_log: Path, work: Path) -> None:
    port = static.rsplit(":", 1)[1]
    lines = []
    for i in range(IMAGES):
        lines.append(f"{static}/p/{i}.jpg?host=paced")
        lines.append(f"http://localhost:{port}/p/{i}.jpg?host=exempt")
    listed = work / "paced.txt"
    listed.write_text("\n".join(lines) + "\n")
    config = work / "config.toml"
    config.write_text('[hosts."localhost"]\nrate = 0\n')
    out = work / f"out-{time.monotonic_ns()}"
    access_log.write_text("")  # nginx appends; the run's own lines only
    command = [imgdl, "fetch", "--config", str(config), "--rate-per-host", str(RATE)]
    command += ["--output", str(out), "--log-level", "warning", str(listed)]
    done = subprocess.run(command, check=False)
    time.sleep(0.2)  # the log's buffer is flushed every 50 ms
    hits: dict[str, list[float]] = {"paced": [], "exempt": []}
    for row in access_log.read_text().splitlines():
        at, uri = row.split()[:2]
        if "host=" in uri:
            hits[uri.rsplit("host=", 1)[1]].append(float(at))
    start = min(min(t) for t in hits.values() if t)
    for host, times in hits.items():
        print(
            f"  {host:7} {len(times)} requests, last {max(times) - start:6.2f} s after the "
            f"first; most in any second: {most_in_a_second(times)}"
        )
    if done.returncode:
        print(f"  fetch exited {done.returncode}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgdl", default="imgdl-watch", help="the imgdl-watch command")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgdl-pacing-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's workers (www-data, under root) read the images
        root = work / "root"
        (root / "p").mkdir(parents=True)
        for i in range(IMAGES):
            (root / "p" / f"{i}.jpg").write_bytes(JPEG)
        served = servers.start(root)
        try:
            if served.access_log is None:
                sys.exit("needs nginx with the echo module (see benchmarks/README.md)")
            for run in range(args.runs):
                print(f"run {run + 1}: {IMAGES} + {IMAGES} URLs, --rate-per-host {RATE}")
                run_once(args.imgdl, served.static, served.access_log, work)
        finally:
            served.stop()


if __name__ == "__main__":
    main()
