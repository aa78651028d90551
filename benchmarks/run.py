"""`make bench`: imgdl-watch beside wget2, aria2c and curl, and daemon figures.

Each tool runs on the same list at the same concurrency, in interleaved
rounds (so that a noisy minute hurts every tool alike), and the medians are
printed: wall time, CPU ms per image (user + system, whole process),
images/s and peak RSS, with ratios to the best peer and to the physical
limit of the latency set (ceil(images / concurrency) x latency).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from benchmarks import corpus
from benchmarks import server as servers

HERE = Path(__file__).parent
WORK = HERE / "_work"
# The command timed: by default the console script beside this Python; `make
# bench` passes the product installed as users get it (not editable: the
# editable install's import hook alone costs ~10 ms of start-up per command).
IMGDL = [str(Path(sys.executable).with_name("imgdl-watch"))]
LATENCY_S = 0.1
# Reference rows, not peers: `bare.py`, our stack's own floor, and
# `aiohttp_bare.py`, the kind of program issue #6's CPU target is set against.
BARE = "trio (bare)"
AIOHTTP = "aiohttp (bare)"
REFERENCES = (BARE, AIOHTTP)


def product_python() -> Path:
    """The Python that runs the timed imgdl-watch (it has trio, httpx and httpcore)."""
    python = Path(IMGDL[0]).with_name("python")
    return python if python.exists() else Path(sys.executable)


@dataclass
class Run:
    tool: str
    wall_s: float
    cpu_s: float
    rss_mb: float
    files: int


def measure(
    command: list[str], out: Path, *, env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one whole process.

    The process is started by GNU time when it is there: a child forked from
    this Python process would report Python's own pages in its peak RSS
    (Linux keeps the high-water mark of the memory it had before exec).
    """
    gnu_time = shutil.which("time") or (
        "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
    )
    report = out.parent / f".{out.name}.time"
    if gnu_time:
        command = [gnu_time, "-q", "-f", "%U %S %M", "-o", str(report), *command]
    started = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=out, env=env
    )
    _, _status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    if gnu_time:
        user, system, rss_kb = report.read_text().split()[-3:]
        return wall, float(user) + float(system), int(rss_kb) / 1024
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def commands(list_path: Path, out: Path, concurrency: int) -> dict[str, list[str]]:
    tools: dict[str, list[str]] = {
        "imgdl-watch": [
            *IMGDL, "fetch", str(list_path), "--output", str(out),
            "--concurrency", str(concurrency), "--per-host", str(concurrency), "--log-format", "json",
        ],
    }  # fmt: skip
    tools[BARE] = [
        str(product_python()), str(HERE / "bare.py"), str(list_path), str(out), str(concurrency),
    ]  # fmt: skip
    if importlib.util.find_spec("aiohttp") is not None:  # the bench extra installs it
        tools[AIOHTTP] = [
            sys.executable, str(HERE / "aiohttp_bare.py"), str(list_path), str(out), str(concurrency),
        ]  # fmt: skip
    if shutil.which("wget2"):
        tools["wget2"] = [
            "wget2", f"--max-threads={concurrency}", "-q", "-i", str(list_path), "-P", str(out),
            "--no-robots", "--no-compression", "--tries=1",
        ]  # fmt: skip
    if shutil.which("aria2c"):
        tools["aria2c"] = [
            "aria2c", "-q", "-i", str(list_path), "-d", str(out), "-j", str(concurrency),
            "--max-connection-per-server=1", "--allow-overwrite=true", "--auto-file-renaming=false",
            "--file-allocation=none", "--max-tries=1",
        ]  # fmt: skip
    if shutil.which("curl"):
        config = out.parent / f"{out.name}.curl"
        config.write_text("".join(f'url = "{u}"\n' for u in list_path.read_text().split()))
        tools["curl"] = [
            "curl", "-s", "--parallel", "--parallel-max", str(concurrency), "--remote-name-all",
            "--output-dir", str(out), "-K", str(config),
        ]  # fmt: skip
    return tools


def count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def compare(name: str, list_path: Path, concurrency: int, rounds: int, images: int) -> list[Run]:
    runs: list[Run] = []
    scratch = Path(tempfile.mkdtemp(prefix=f"imgdl-bench-{name}-", dir=WORK))
    tool_names = list(commands(list_path, scratch / "probe", concurrency))
    for _ in range(rounds):
        for tool in tool_names:
            out = scratch / tool
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            command = commands(list_path, out, concurrency)[tool]
            wall, cpu, rss = measure(command, out)
            runs.append(Run(tool, wall, cpu, rss, count_files(out)))
            if tool == "imgdl-watch" and runs[-1].files < images:
                raise SystemExit(
                    f"bench: imgdl-watch saved {runs[-1].files} of {images} images; "
                    f"try it by hand: {' '.join(command)}"
                )
    shutil.rmtree(scratch, ignore_errors=True)
    return runs


def table(
    title: str, runs: list[Run], images: int, limit_s: float | None
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    by_tool: dict[str, list[Run]] = {}
    for run in runs:
        by_tool.setdefault(run.tool, []).append(run)
    medians = {
        tool: (
            statistics.median(r.wall_s for r in rs),
            statistics.median(r.cpu_s for r in rs),
            max(r.rss_mb for r in rs),
            min(r.files for r in rs),
        )
        for tool, rs in by_tool.items()
    }
    peers = [m[0] for t, m in medians.items() if t != "imgdl-watch" and t not in REFERENCES]
    best_peer = min(peers) if peers else None
    print(f"\n{title}")
    header = f"{'tool':14} {'wall s':>7} {'CPU ms/img':>10} {'img/s':>7} {'peak RSS MB':>11} {'files':>6} {'x best peer':>11}"
    header += f" {'x limit':>7}" if limit_s else ""
    print(header)
    for tool, (wall, cpu, rss, files) in sorted(medians.items(), key=lambda kv: kv[1][0]):
        line = f"{tool:14} {wall:7.2f} {cpu * 1000 / images:10.2f} {images / wall:7.0f} {rss:11.1f} {files:6d}"
        line += f" {wall / best_peer:11.2f}" if best_peer else f" {'-':>11}"
        line += f" {wall / limit_s:7.2f}" if limit_s else ""
        print(line)
        rows.append({
            "tool": tool, "wall_s": round(wall, 3), "cpu_ms_per_img": round(cpu * 1000 / images, 3),
            "img_per_s": round(images / wall), "peak_rss_mb": round(rss, 1), "files": files,
        })  # fmt: skip
    for reference in REFERENCES:
        if "imgdl-watch" in medians and reference in medians:
            ours, bare = medians["imgdl-watch"], medians[reference]
            print(
                f"imgdl-watch against {reference} (no fsync, checks or logs): "
                f"wall x{ours[0] / bare[0]:.2f}, CPU x{ours[1] / bare[1]:.2f}"
            )
    return rows


# Ready to send: the interpreter up, trio and httpx imported, one transport
# built. No trio + httpx program can send its first request sooner.
READY_PROBE = "import time, trio, httpx; httpx.AsyncHTTPTransport(verify=False); print(time.time())"


def startup_floor(rounds: int = 9) -> float:
    """Median seconds from exec to ready-to-send for the product's Python."""
    python = product_python()
    times = []
    for _ in range(rounds):
        started = time.time()
        done = subprocess.run(
            [python, "-c", READY_PROBE], capture_output=True, text=True, check=True
        )
        times.append(float(done.stdout) - started)
    return statistics.median(times)


# -- daemon figures ----------------------------------------------------------


class Daemon:
    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.log = root / "daemon.log"
        self.proc = subprocess.Popen(
            [*IMGDL, "run", "--inbox", str(self.inbox), "--output", str(root / "downloads"),
             "--log-file", str(self.log), "--log-format", "json", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait(lambda evs: any(e["event"] == "daemon_started" for e in evs), 30)

    def events(self) -> list[dict[str, object]]:
        try:
            return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def wait(self, done: Callable[[list[dict[str, object]]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.events()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("daemon did not get there in time")
            time.sleep(0.01)

    def stop(self) -> float:
        self.proc.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(self.proc.pid, 0)
        return usage.ru_maxrss / 1024


def first_request_times(access_log: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    time.sleep(0.2)  # nginx flushes its access log buffer every 50 ms
    for line in access_log.read_text().splitlines():
        stamp, uri = line.split(" ")[:2]
        times.setdefault(uri, float(stamp))
    return times


def _finished_at_least(count: int, events: list[dict[str, object]]) -> bool:
    return sum(e["event"] == "job_finished" for e in events) >= count


def pickup(
    srv: servers.Servers, paths: list[str], count: int, *, in_place: bool, settle: float
) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-pickup-", dir=WORK))
    daemon = Daemon(root, "--settle", str(settle))
    dropped: dict[str, float] = {}
    try:
        for i in range(count):
            path = paths[i] + f"?pickup={in_place}-{i}"
            name = f"pick{i:03}.txt"
            if in_place:
                dropped[path] = time.time()
                (daemon.inbox / name).write_text(f"{srv.static}{path}\n")
            else:
                staged = root / name
                staged.write_text(f"{srv.static}{path}\n")
                os.utime(staged, (time.time() - 60, time.time() - 60))
                dropped[path] = time.time()
                os.rename(staged, daemon.inbox / name)
            daemon.wait(partial(_finished_at_least, i + 1), 30)
    finally:
        daemon.stop()
    assert srv.access_log is not None
    seen = first_request_times(srv.access_log)
    delays = sorted(seen[p] - t for p, t in dropped.items() if p in seen)
    shutil.rmtree(root, ignore_errors=True)
    return statistics.median(delays), delays[max(0, math.ceil(0.95 * len(delays)) - 1)]


def million_lines(srv: servers.Servers, lines: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-1m-", dir=WORK))
    big = root / "million.txt"
    with big.open("w") as handle:
        for i in range(lines):
            handle.write(f"{srv.static}/m/{i}/image-{i}.jpg\n")
    out = root / "out"
    out.mkdir()
    started = time.time()
    proc = subprocess.Popen(
        [*IMGDL, "fetch", str(big), "--output", str(out), "--concurrency", "64", "--per-host", "64",
         "--retries", "0", "--log-format", "json", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    _, _, usage = os.wait4(proc.pid, 0)
    assert srv.access_log is not None
    seen = first_request_times(srv.access_log)
    first = seen.get("/m/0/image-0.jpg", math.nan) - started
    # What de-duplication holds once the whole list has been read: the
    # same structures the job uses, filled from the same file.
    probe = subprocess.run(
        [sys.executable, "-c", _DEDUPE_PROBE, str(big)], capture_output=True, text=True, check=True
    )
    dedupe = json.loads(probe.stdout)
    shutil.rmtree(root, ignore_errors=True)
    return {"first_request_s": round(first, 3), "peak_rss_mb_8s": round(usage.ru_maxrss / 1024, 1),
            "rss_mb_after_whole_list_deduped": dedupe["rss_mb"], "bytes_per_url": dedupe["bytes_per_url"]}  # fmt: skip


_DEDUPE_PROBE = """
import json, os, resource, sys
from imgdl_watch.job import Dedupe, _read_entries
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fd = os.open(sys.argv[1], os.O_RDONLY)
dedupe = Dedupe()
n = 0
for entry in _read_entries(fd):
    if hasattr(entry, "url") and dedupe.first_time(entry.url):
        dedupe.name_for(entry.url)
        n += 1
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_mb": round(after / 1024, 1), "bytes_per_url": round((after - before) * 1024 / n)}))
"""


def flood(srv: servers.Servers, paths: list[str], lists: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-flood-", dir=WORK))
    daemon = Daemon(root)
    staging = root / "staging"
    staging.mkdir()
    for n in range(lists):
        chunk = [paths[(n * 3 + k) % len(paths)] for k in range(3)]
        (staging / f"flood{n:04}.txt").write_text("".join(f"{srv.static}{p}\n" for p in chunk))
    started = time.monotonic()
    for n in range(lists):
        os.rename(staging / f"flood{n:04}.txt", daemon.inbox / f"flood{n:04}.txt")
    daemon.wait(lambda evs: sum(e["event"] == "job_finished" for e in evs) >= lists, 600)
    total = time.monotonic() - started
    rss = daemon.stop()
    shutil.rmtree(root, ignore_errors=True)
    return {"lists": lists, "total_s": round(total, 2), "peak_rss_mb": round(rss, 1)}


def soak(
    srv: servers.Servers, paths: list[str], lists: int, per_list: int = 40
) -> dict[str, object]:
    """Many lists through one daemon, 50 at a time: does its memory or its count
    of open files creep? (Downloads are deleted after each batch.)"""
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-soak-", dir=WORK))
    daemon = Daemon(root)
    status = Path(f"/proc/{daemon.proc.pid}/status")
    samples: list[tuple[int, float, int]] = []  # (lists done, RSS MB, open files)
    try:
        for batch in range(math.ceil(lists / 50)):
            first, last = batch * 50, min(lists, batch * 50 + 50)
            for n in range(first, last):
                chunk = [paths[(n * per_list + k) % len(paths)] for k in range(per_list)]
                staged = root / f"soak{n:05}.txt"
                staged.write_text("".join(f"{srv.static}{p}?soak={n}\n" for p in chunk))
                os.rename(staged, daemon.inbox / staged.name)
            daemon.wait(partial(_finished_at_least, last), 600)
            rss = next(
                int(x.split()[1]) for x in status.read_text().splitlines() if x.startswith("VmRSS")
            )
            samples.append((last, rss / 1024, len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))))
            shutil.rmtree(root / "downloads", ignore_errors=True)
    finally:
        daemon.stop()
    shutil.rmtree(root, ignore_errors=True)
    half = samples[len(samples) // 2]
    return {"lists": lists, "images": lists * per_list,
            "rss_mb_first_batch": round(samples[0][1], 1), "rss_mb_half_way": round(half[1], 1),
            "rss_mb_end": round(samples[-1][1], 1),
            "open_files": sorted({s[2] for s in samples})}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-daemon", action="store_true", help="only the side-by-side table")
    parser.add_argument("--million", type=int, default=1_000_000, help="lines of the huge list")
    parser.add_argument("--imgdl", metavar="PATH", help="the imgdl-watch command to time")
    parser.add_argument(
        "--soak", type=int, default=0, metavar="LISTS",
        help="also run LISTS lists of 40 images through one daemon, for memory creep (1500: ~5 min)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.imgdl:
        IMGDL[:] = [os.path.abspath(args.imgdl)]  # the tools run in their own folders
    WORK.mkdir(exist_ok=True)
    root = WORK / "corpus"
    images, size = corpus.build(root)
    srv = servers.start(root, latency=LATENCY_S)
    print(
        f"corpus: {images} JPEGs, {size / 1e6:.1f} MB; server: {srv.kind}; {os.cpu_count()} cores"
    )
    results: dict[str, object] = {"server": srv.kind, "images": images}
    try:
        seed = corpus.SEED_LIST.read_text()
        lists = {}
        for name, base in (("static", srv.static), ("latency", srv.latency)):
            lists[name] = WORK / f"{name}.txt"
            lists[name].write_text(seed.replace("https://cdn.pixabay.com", base))
        static = compare("static", lists["static"], 16, args.rounds, images)
        results["static_c16"] = table(
            f"static files, 16 at once (median of {args.rounds})", static, images, None
        )
        limit = math.ceil(images / 64) * LATENCY_S
        latency = compare("latency", lists["latency"], 64, args.rounds, images)
        results["latency_c64"] = table(
            f"{LATENCY_S * 1000:.0f} ms per response, 64 at once (physical limit {limit:.2f} s)",
            latency, images, limit,
        )  # fmt: skip
        results["runs"] = [asdict(r) for r in static + latency]
        floor = startup_floor()
        print(
            f"floor for any trio + httpx process: {floor:.2f} s to import them and be ready to "
            f"send, + {limit:.2f} s physical limit = {floor + limit:.2f} s"
        )
        results["trio_httpx_floor_s"] = round(floor + limit, 3)
        if not args.skip_daemon and srv.access_log is not None:
            paths = corpus.seed_paths()
            p50, p95 = pickup(srv, paths, 20, in_place=False, settle=1.0)
            q50, q95 = pickup(srv, paths, 10, in_place=True, settle=1.0)
            print(
                f"\npickup, renamed in (settled): p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
            )
            print(
                f"pickup, written in place (--settle 1): p50 {q50 * 1000:.0f} ms, p95 {q95 * 1000:.0f} ms"
            )
            results["pickup"] = {"renamed_p50_ms": round(p50 * 1000), "renamed_p95_ms": round(p95 * 1000),
                                 "in_place_p50_ms": round(q50 * 1000), "in_place_p95_ms": round(q95 * 1000)}  # fmt: skip
            huge = million_lines(srv, args.million)
            print(f"{args.million}-line list: first request after {huge['first_request_s']} s, "
                  f"peak RSS {huge['peak_rss_mb_8s']} MB in the first 8 s; "
                  f"{huge['rss_mb_after_whole_list_deduped']} MB once the whole list is de-duplicated "
                  f"({huge['bytes_per_url']} bytes per URL)")  # fmt: skip
            results["million"] = huge
            flooded = flood(srv, paths, 1000)
            print(
                f"{flooded['lists']} lists at once: {flooded['total_s']} s, peak RSS {flooded['peak_rss_mb']} MB"
            )
            results["flood"] = flooded
        if args.soak:
            soaked = soak(srv, corpus.seed_paths(), args.soak)
            print(
                f"soak, {soaked['lists']} lists of 40 ({soaked['images']} images) through one daemon: "
                f"RSS {soaked['rss_mb_first_batch']} MB after the first 50, "
                f"{soaked['rss_mb_half_way']} MB half way, {soaked['rss_mb_end']} MB at the end; "
                f"open files {soaked['open_files']}"
            )
            results["soak"] = soaked
    finally:
        srv.stop()  # type: ignore[operator]
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {WORK / 'results.json'}")


if __name__ == "__main__":
    main()
