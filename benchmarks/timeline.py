"""Where a warm daemon's time goes on the lag set, from drop to `job_finished`.

    python -m benchmarks.timeline [--imgdl PATH] [--workers N] [--rounds N]

Starts the bench's nginx (100 ms before each response) and one warm daemon,
then drops the lag list `--rounds` times and prints, for each, from the
moment the list is renamed into the inbox: the wall to `job_finished` and
the CPU per image (the daemon and its workers, from `/proc`), when the job
started (`job_started`: the pickup), the first and the last response in
nginx's access log, and the last `download_ok`. The first request went out
0.1 s before the first response. Whatever the span from the first response
to the last exceeds 1.8 s (the 18 rounds of 64 after the first) is time the
daemon took between rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

from . import corpus, outputfs
from . import server as servers
from .run import IMGDL, LATENCY_S, OUTPUTS, WORK
from .warm import WarmDaemon

CONCURRENCY = 64


def _stamp(event: dict[str, object]) -> float:
    return dt.datetime.fromisoformat(str(event["timestamp"])).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgdl", default=IMGDL[0], help="the imgdl-watch to run")
    parser.add_argument("--workers", default="auto", help="the daemon's --workers")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    root = WORK / "corpus"
    corpus.build(root)
    srv = servers.start(root, latency=LATENCY_S, mix_paths=None)
    assert srv.access_log is not None, "the timeline needs nginx's access log"
    paths = corpus.seed_paths()
    with outputfs.output_root(OUTPUTS) as described:
        print(f"the daemon writes to {described}")
        folder = Path(tempfile.mkdtemp(prefix="imgdl-bench-timeline-", dir=OUTPUTS))
        _timeline(args, srv, paths, folder)


def _timeline(
    args: argparse.Namespace, srv: servers.Servers, paths: list[str], folder: Path
) -> None:
    assert srv.access_log is not None
    daemon = WarmDaemon(
        [args.imgdl],
        folder / "daemon",
        ["--concurrency", str(CONCURRENCY), "--per-host", str(CONCURRENCY),
         "--workers", args.workers],
    )  # fmt: skip
    try:
        warm_up = folder / "warm-up.txt"
        warm_up.write_text("".join(f"{srv.latency}{p}?warm-up\n" for p in paths[:32]))
        shutil.rmtree(daemon.job(warm_up, "warm-up", 60)[2])
        lag = folder / "lag.txt"
        lag.write_text("".join(f"{srv.latency}{p}\n" for p in paths))
        for n in range(args.rounds):
            stem = f"lag{n}"
            offset = srv.access_log.stat().st_size
            wall, cpu, done = daemon.job(lag, stem, 60)
            dropped = _stamp(daemon_event(daemon.log, stem, "job_finished")) - wall
            # nginx writes its log every 50 ms (`flush=50ms`).
            time.sleep(0.2)
            answered = sorted(
                float(line.split()[0])
                for line in srv.access_log.read_bytes()[offset:].decode().splitlines()
            )
            started = _stamp(daemon_event(daemon.log, stem, "job_started"))
            last_ok = max(
                _stamp(e) for e in events(daemon.log, stem) if e["event"] == "download_ok"
            )
            print(
                f"wall {wall:.3f} s, CPU {cpu / len(paths) * 1e3:.2f} ms/img; after the drop: "
                f"job_started +{started - dropped:.3f}, first response +{answered[0] - dropped:.3f}, "
                f"last response +{answered[-1] - dropped:.3f}, last download_ok "
                f"+{last_ok - dropped:.3f} s ({len(answered)} responses)"
            )
            shutil.rmtree(done)
    finally:
        daemon.stop()
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


def events(log: Path, job: str) -> list[dict[str, object]]:
    lines = log.read_text().splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e.get("job") == job]


def daemon_event(log: Path, job: str, name: str) -> dict[str, object]:
    return next(e for e in events(log, job) if e["event"] == name)


if __name__ == "__main__":
    main()
