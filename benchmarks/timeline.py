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

That time is also printed where it is spent: each connection's gaps, from
the end of one response (nginx's `$msec`, to the millisecond) to the start
of the next request on it (`$msec - $request_time`): the client's time to
read the response, hand it on and send its next request. With `--wget2`,
wget2 runs the same list in the same rounds, interleaved, as a reference:
its gaps are what a C client with a thread per connection needs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import shutil
import statistics
import subprocess
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
    parser.add_argument("--wget2", action="store_true", help="wget2 in the same rounds")
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
            if args.wget2:
                _wget2(lag, folder / "wget2", srv.access_log)
            stem = f"lag{n}"
            offset = _mark(srv.access_log)
            wall, cpu, done = daemon.job(lag, stem, 60)
            dropped = _stamp(daemon_event(daemon.log, stem, "job_finished")) - wall
            rows = _logged(srv.access_log, offset)
            answered = sorted(row[0] for row in rows)
            started = _stamp(daemon_event(daemon.log, stem, "job_started"))
            last_ok = max(
                _stamp(e) for e in events(daemon.log, stem) if e["event"] == "download_ok"
            )
            print(
                f"wall {wall:.3f} s, CPU {cpu / len(paths) * 1e3:.2f} ms/img; after the drop: "
                f"job_started +{started - dropped:.3f}, first response +{answered[0] - dropped:.3f}, "
                f"last response +{answered[-1] - dropped:.3f}, last download_ok "
                f"+{last_ok - dropped:.3f} s ({len(answered)} responses); {_gaps(rows)}"
            )
            shutil.rmtree(done)
    finally:
        daemon.stop()
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _mark(access_log: Path) -> int:
    """Where the next run's lines will start, once the last run's are written."""
    time.sleep(0.2)  # nginx writes its log every 50 ms (`flush=50ms`)
    return access_log.stat().st_size


def _logged(access_log: Path, offset: int) -> list[tuple[float, str, float]]:
    """(end of the response, connection, request time) of each line since `offset`."""
    time.sleep(0.2)  # nginx writes its log every 50 ms (`flush=50ms`)
    rows = []
    for line in access_log.read_bytes()[offset:].decode().splitlines():
        fields = line.split()
        rows.append((float(fields[0]), fields[4], float(fields[5])))
    return rows


def _gaps(rows: list[tuple[float, str, float]]) -> str:
    """Each connection's gaps between a response's end and its next request."""
    by_connection: dict[str, list[tuple[float, float]]] = {}
    for end, connection, took in rows:
        by_connection.setdefault(connection, []).append((end - took, end))
    gaps = sorted(
        later[0] - earlier[1]
        for requests in by_connection.values()
        for earlier, later in itertools.pairwise(sorted(requests))
    )
    if not gaps:
        return "no connection was reused"
    p90 = gaps[int(0.9 * (len(gaps) - 1))]
    return (
        f"gaps on {len(by_connection)} connections: mean {statistics.mean(gaps) * 1e3:.1f} ms, "
        f"p90 {p90 * 1e3:.0f} ms"
    )


def _wget2(listed: Path, out: Path, access_log: Path) -> None:
    offset = _mark(access_log)
    started = time.time()
    subprocess.run(
        ["wget2", f"--max-threads={CONCURRENCY}", "-q", "-i", str(listed), "-P", str(out)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.time() - started
    rows = _logged(access_log, offset)
    answered = sorted(row[0] for row in rows)
    print(
        f"wget2: wall {wall:.3f} s; after exec: first response +{answered[0] - started:.3f}, "
        f"last response +{answered[-1] - started:.3f} s ({len(answered)} responses); {_gaps(rows)}"
    )
    shutil.rmtree(out)


def events(log: Path, job: str) -> list[dict[str, object]]:
    lines = log.read_text().splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e.get("job") == job]


def daemon_event(log: Path, job: str, name: str) -> dict[str, object]:
    return next(e for e in events(log, job) if e["event"] == name)


if __name__ == "__main__":
    main()
