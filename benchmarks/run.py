"""`make bench`: imgdl-watch beside wget2, aria2c and curl, and daemon figures.

Each row runs on the same list at the same concurrency, in interleaved
rounds (so that a noisy minute hurts every row alike), and the medians are
printed, one table per set: wall time, CPU ms per image (user + system,
whole process), images/s, peak RSS, the images saved byte for byte, with
ratios to the best peer and to the set's physical limit. Rows marked `*`
are references, not peers: bare downloaders, a seed-style one, and
imgdl-watch itself with fsync turned into a no-op (`eatmydata`).

Sets: static (16 at once), latency (100 ms per answer, 64 at once) and mix
(24 loopback hosts of 20-500 ms, 404s, a stalling host and a 429 host; 128
at once, 8 per host; see `mix.py`). Then the daemon figures: pickup, a long
list (`--lines`), a flood of 1000 lists, and an optional soak.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from benchmarks import corpus, outputfs
from benchmarks import mix as mixes
from benchmarks import server as servers
from benchmarks.warm import WarmDaemon

HERE = Path(__file__).parent
WORK = HERE / "_work"
# Where the rows write their files: a journaled ext4 of their own mounted
# here when the run can make one (`outputfs`), else a plain folder.
OUTPUTS = WORK / "outputs"
# The command timed: by default the console script beside this Python; `make
# bench` passes the product installed as users get it (not editable: the
# editable install's import hook alone costs ~10 ms of start-up per command).
IMGDL = [str(Path(sys.executable).with_name("imgdl-watch"))]
LATENCY_S = 0.1
# The product's rows: each must save every image it can, byte for byte.
PRODUCT = "imgdl-watch"
DAEMON = "imgdl-watch daemon"
NOSYNC = "imgdl-watch (no sync)"
DAEMON_NOSYNC = "imgdl-watch daemon (no sync)"
# The daemon without download workers (`--workers 0`): what they buy.
DAEMON_ONE = "imgdl-watch daemon (one process)"
OURS = (PRODUCT, DAEMON, NOSYNC, DAEMON_NOSYNC, DAEMON_ONE)
# Reference rows, not peers: `bare.py`, our stack's own floor; `aiohttp_bare.py`
# and `aiohttp_seed.py`, the kind of program issue #6's CPU target is set
# against; and imgdl-watch under eatmydata, which durability is measured against.
BARE = "trio (bare)"
AIOHTTP = "aiohttp (bare)"
SEED = "aiohttp (seed-style)"
# wget2, then one `sync -f` of the filesystem its files are on: what getting
# them all onto the disk at once costs, the least any durability can cost.
WGET2_SYNC = "wget2, then sync -f"
REFERENCES = (BARE, AIOHTTP, SEED, NOSYNC, DAEMON_NOSYNC, DAEMON_ONE, WGET2_SYNC)
PEERS = ("wget2", "aria2c", "curl")
# How long a timed daemon job may take before the run gives up on it.
JOB_TIMEOUT_S = 300


def product_python() -> Path:
    """The Python that runs the timed imgdl-watch (it has trio, httpx and httpcore)."""
    python = Path(IMGDL[0]).with_name("python")
    return python if python.exists() else Path(sys.executable)


def nosync_env() -> dict[str, str] | None:
    """The environment that runs a command under eatmydata (fsync and fdatasync are
    no-ops), or None without it. Preloaded directly rather than through the
    `eatmydata` script, whose shell would add its start-up to the wall time."""
    for pattern in ("/usr/lib/*/libeatmydata.so*", "/usr/lib/libeatmydata/libeatmydata.so*"):
        found = sorted(glob.glob(pattern))
        if found:
            return {**os.environ, "LD_PRELOAD": found[0]}
    return None


@dataclass
class Run:
    tool: str
    wall_s: float
    cpu_s: float
    rss_mb: float
    files: int  # corpus images saved byte for byte
    other: int = 0  # any other file left in the output folder
    throttled: int = 0  # 429s the server sent (the mix only)


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


# -- rows ----------------------------------------------------------------------


class Row(Protocol):
    name: str

    def run(self, list_path: Path, out: Path, stem: str) -> tuple[float, float, float, Path]:
        """(wall s, CPU s, peak RSS MB, the folder its images are in) for one list."""
        ...


@dataclass
class Command:
    """A row that is one process per list, timed whole."""

    name: str
    argv: Callable[[Path, Path], list[str]]  # (list, output folder) -> command
    env: dict[str, str] | None = None

    def run(self, list_path: Path, out: Path, stem: str) -> tuple[float, float, float, Path]:
        return (*measure(self.argv(list_path, out), out, env=self.env), out)


@dataclass
class Warm:
    """A row that is one job of a daemon already running (see `warm.py`)."""

    name: str
    daemon: WarmDaemon

    def run(self, list_path: Path, out: Path, stem: str) -> tuple[float, float, float, Path]:
        wall, cpu, folder = self.daemon.job(list_path, stem, JOB_TIMEOUT_S)
        return wall, cpu, self.daemon.peak_rss_mb(), folder


def imgdl_fetch(options: list[str]) -> Callable[[Path, Path], list[str]]:
    return lambda list_path, out: [
        *IMGDL, "fetch", str(list_path), "--output", str(out), *options, "--log-format", "json",
    ]  # fmt: skip


def peer_commands(concurrency: int) -> list[Command]:
    """The reference programs and the peers, at `concurrency` (no per-host cap)."""
    c = str(concurrency)

    def script(name: str, python: Path | str, file: str) -> Command:
        return Command(
            name, lambda lst, out: [str(python), str(HERE / file), str(lst), str(out), c]
        )

    rows = [script(BARE, product_python(), "bare.py")]
    if importlib.util.find_spec("aiohttp") is not None:  # the bench extra installs it
        rows.append(script(AIOHTTP, sys.executable, "aiohttp_bare.py"))
        rows.append(script(SEED, sys.executable, "aiohttp_seed.py"))
    if shutil.which("wget2"):

        def wget2(lst: Path, out: Path) -> list[str]:
            return [
                "wget2", f"--max-threads={c}", "-q", "-i", str(lst), "-P", str(out),
                "--no-robots", "--no-compression", "--tries=1",
            ]  # fmt: skip

        rows.append(Command("wget2", wget2))
        # A shell runs both; no shell word comes from the list (paths only).
        rows.append(Command(WGET2_SYNC, lambda lst, out: [
            "sh", "-c", 'wget2 "$@" && sync -f "$0"', str(out), *wget2(lst, out)[1:],
        ]))  # fmt: skip
    if shutil.which("aria2c"):
        rows.append(Command("aria2c", lambda lst, out: [
            "aria2c", "-q", "-i", str(lst), "-d", str(out), "-j", c,
            "--max-connection-per-server=1", "--allow-overwrite=true", "--auto-file-renaming=false",
            "--file-allocation=none", "--max-tries=1",
        ]))  # fmt: skip
    if shutil.which("curl"):

        def curl(lst: Path, out: Path) -> list[str]:
            config = out.parent / f"{out.name}.curl"
            config.write_text("".join(f'url = "{u}"\n' for u in lst.read_text().split()))
            return [
                "curl", "-s", "--parallel", "--parallel-max", c, "--remote-name-all",
                "--output-dir", str(out), "-K", str(config),
            ]  # fmt: skip

        rows.append(Command("curl", curl))
    return rows


def mix_commands() -> list[Command]:
    """wget2 and aria2c on the mix, with the nearest equivalents of imgdl-watch's settings.

    Neither has a per-host cap across downloads: they run 128 at once over
    all hosts. Both get the same timeouts and attempts as imgdl-watch, and
    wait 1 s before a retry (imgdl-watch: its own backoff, or Retry-After).
    """
    c, attempts = str(mixes.CONCURRENCY), str(mixes.ATTEMPTS)
    connect, read = str(mixes.CONNECT_TIMEOUT_S), str(mixes.READ_TIMEOUT_S)
    rows = []
    if shutil.which("wget2"):
        rows.append(Command("wget2", lambda lst, out: [
            "wget2", f"--max-threads={c}", "-q", "-i", str(lst), "-P", str(out),
            "--no-robots", "--no-compression", f"--tries={attempts}", "--waitretry=1",
            f"--connect-timeout={connect}", f"--read-timeout={read}",
        ]))  # fmt: skip
    if shutil.which("aria2c"):
        rows.append(Command("aria2c", lambda lst, out: [
            "aria2c", "-q", "-i", str(lst), "-d", str(out), "-j", c,
            "--max-connection-per-server=1", "--allow-overwrite=true", "--auto-file-renaming=false",
            "--file-allocation=none", f"--max-tries={attempts}", "--retry-wait=1",
            f"--connect-timeout={connect}", f"--timeout={read}",
        ]))  # fmt: skip
    return rows


MIX_OPTIONS = [
    "--concurrency", str(mixes.CONCURRENCY), "--per-host", str(mixes.PER_HOST),
    "--retries", str(mixes.ATTEMPTS - 1), "--connect-timeout", str(mixes.CONNECT_TIMEOUT_S),
    "--read-timeout", str(mixes.READ_TIMEOUT_S),
]  # fmt: skip


@contextlib.contextmanager
def warm_daemons(
    set_name: str, options: list[str], warm_up: list[str], *, nosync: bool
) -> Iterator[list[Warm]]:
    """The daemon rows of a set: started, warmed up with a short list, stopped at the end."""
    root = Path(tempfile.mkdtemp(prefix=f"imgdl-bench-{set_name}-daemon-", dir=OUTPUTS))
    env = nosync_env() if nosync else None
    one = ["--workers", "0"]
    specs: list[tuple[str, dict[str, str] | None, list[str]]] = [(DAEMON, None, [])]
    if env:
        specs.append((DAEMON_NOSYNC, env, []))
    specs.append((DAEMON_ONE, None, one))
    rows: list[Warm] = []
    try:
        for name, environment, more in specs:
            folder = root / name.replace(" ", "-").replace("(", "").replace(")", "")
            daemon = WarmDaemon(IMGDL, folder, [*options, *more], env=environment)
            rows.append(Warm(name, daemon))
            first = folder / "warm-up.txt"
            first.write_text("".join(f"{url}?warm-up\n" for url in warm_up))
            _, _, done = daemon.job(first, "warm-up", JOB_TIMEOUT_S)
            shutil.rmtree(done, ignore_errors=True)
        yield rows
    finally:
        for row in rows:
            row.daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


class Throttled:
    """429s in nginx's access log since a mark (its lines: msec, URI, status, address,
    connection, request time)."""

    def __init__(self, access_log: Path) -> None:
        self.log = access_log

    def mark(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def since(self, mark: int) -> int:
        time.sleep(0.15)  # nginx flushes its access log buffer every 50 ms
        with self.log.open("rb") as handle:
            handle.seek(mark)
            return sum(line.split(b" ")[2:3] == [b"429"] for line in handle)


def compare(
    name: str,
    list_path: Path,
    rows: list[Row],
    rounds: int,
    known: corpus.Digests,
    expected: int,
    *,
    throttled: Throttled | None = None,
    require_all: bool = True,
) -> list[Run]:
    """Every row on the list, `rounds` times in turn. A row of ours that leaves a file that
    is not a corpus image, or (with `require_all`) saves fewer than `expected`, stops it."""
    runs: list[Run] = []
    scratch = Path(tempfile.mkdtemp(prefix=f"imgdl-bench-{name}-", dir=OUTPUTS))
    try:
        for round_no in range(rounds):
            for row in rows:
                out = scratch / row.name.replace(" ", "-").replace("(", "").replace(")", "")
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                mark = throttled.mark() if throttled else 0
                wall, cpu, rss, folder = row.run(list_path, out, f"{name}{round_no}")
                saved, other = corpus.verify(folder, known)
                runs.append(Run(row.name, wall, cpu, rss, saved, other,
                                throttled.since(mark) if throttled else 0))  # fmt: skip
                if row.name in OURS and (other or (require_all and saved < expected)):
                    raise SystemExit(
                        f"bench: {row.name} saved {saved} of {expected} images byte for byte "
                        f"and {other} other files, in {folder}"
                    )
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return runs


def table(
    title: str,
    runs: list[Run],
    urls: int,
    limit_of: Callable[[str], float | None],
    *,
    show_throttled: bool = False,
) -> list[dict[str, object]]:
    """Print one set's medians; return them as rows for results.json."""
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
            max(r.other for r in rs),
            max(r.throttled for r in rs),
        )
        for tool, rs in by_tool.items()
    }
    peers = [m[0] for t, m in medians.items() if t in PEERS]
    best_peer = min(peers) if peers else None
    limited = any(limit_of(t) for t in medians)
    print(f"\n{title}")
    header = (
        f"{'tool':34} {'wall s':>7} {'CPU ms/img':>10} {'img/s':>6} {'peak RSS MB':>11}"
        f" {'saved':>5} {'other':>5} {'x best peer':>11}"
    )
    header += f" {'x limit':>7}" if limited else ""
    header += f" {'429s':>5}" if show_throttled else ""
    print(header)
    for tool, (wall, cpu, rss, files, other, got_429) in sorted(
        medians.items(), key=lambda kv: kv[1][0]
    ):
        limit = limit_of(tool)
        shown = f"{tool} *" if tool in REFERENCES else tool
        line = f"{shown:34} {wall:7.2f} {cpu * 1000 / urls:10.2f} {files / wall:6.0f} {rss:11.1f} {files:5d} {other:5d}"
        line += f" {wall / best_peer:11.2f}" if best_peer else f" {'-':>11}"
        if limited:
            line += f" {wall / limit:7.2f}" if limit else f" {'-':>7}"
        line += f" {got_429:5.0f}" if show_throttled else ""
        print(line)
        row: dict[str, object] = {
            "tool": tool, "reference": tool in REFERENCES, "wall_s": round(wall, 3),
            "cpu_ms_per_img": round(cpu * 1000 / urls, 3), "img_per_s": round(files / wall),
            "peak_rss_mb": round(rss, 1), "files": files, "other_files": other,
        }  # fmt: skip
        if limit:
            row["x_limit"] = round(wall / limit, 3)
        if show_throttled:
            row["responses_429"] = got_429
        rows.append(row)
    print("* reference row (not a peer)")
    pairs = [
        (PRODUCT, BARE, "no fsync, checks or logs"),
        (PRODUCT, AIOHTTP, "no fsync, checks or logs"),
        (PRODUCT, SEED, "no fsync, a task per URL"),
        (PRODUCT, NOSYNC, "what fsync costs in fetch"),
        (DAEMON, DAEMON_NOSYNC, "what fsync costs in the daemon"),
        (WGET2_SYNC, "wget2", "what one sync of all its files costs wget2"),
        (DAEMON, PRODUCT, "a warm daemon against a fresh process"),
        (DAEMON, DAEMON_ONE, "what the download workers buy"),
    ]
    for ours, other_tool, what in pairs:
        if ours in medians and other_tool in medians:
            a, b = medians[ours], medians[other_tool]
            print(
                f"{ours} against {other_tool} ({what}): wall x{a[0] / b[0]:.2f} "
                f"({a[0] - b[0]:+.2f} s), CPU x{a[1] / b[1]:.2f} ({(a[1] - b[1]) * 1000 / urls:+.2f} ms/img)"
            )
    return rows


def side_by_side(
    name: str, list_path: Path, concurrency: int, rounds: int, known: corpus.Digests, images: int
) -> tuple[list[Run], dict[str, tuple[float, float]]]:
    """A set of the corpus on one host: imgdl-watch (fetch, warm daemon, and both under
    eatmydata), the references and the peers, all at `concurrency`."""
    options = ["--concurrency", str(concurrency), "--per-host", str(concurrency)]
    env = nosync_env()
    fetches: list[Row] = [Command(PRODUCT, imgdl_fetch(options))]
    if env:
        fetches.append(Command(NOSYNC, imgdl_fetch(options), env=env))
    warm_up = list_path.read_text().split()[:32]
    with warm_daemons(name, options, warm_up, nosync=True) as daemons:
        runs = compare(name, list_path, [*fetches, *daemons, *peer_commands(concurrency)],
                       rounds, known, images)  # fmt: skip
        memory = {row.name: job_memory(row, list_path, f"{name}-memory") for row in daemons
                  if row.name in (DAEMON, DAEMON_ONE)}  # fmt: skip
    return runs, memory


def show_memory(memory: dict[str, tuple[float, float]]) -> dict[str, object]:
    """Print what `side_by_side`'s memory jobs held; return it for results.json."""
    print(
        "memory of one more job of each warm daemon, sampled every 10 ms (untimed), peak: "
        + "; ".join(
            f"{tool}: {once:.1f} MB counted once, {summed:.1f} MB of RSS summed"
            for tool, (once, summed) in memory.items()
        )
    )
    return {tool: {"counted_once_mb": round(once, 1), "rss_summed_mb": round(summed, 1)}
            for tool, (once, summed) in memory.items()}  # fmt: skip


def job_memory(row: Warm, list_path: Path, stem: str) -> tuple[float, float]:
    """A warm daemon's peak memory over one job: (counted once, RSS summed)."""
    once, summed, folder = row.daemon.sampled_job(list_path, stem, JOB_TIMEOUT_S)
    shutil.rmtree(folder, ignore_errors=True)
    return once, summed


def mix_set(srv: servers.Servers, rounds: int, known: corpus.Digests) -> dict[str, object] | None:
    mix = srv.mix
    if mix is None or srv.access_log is None:
        print("\nmix set skipped: it needs nginx with the echo module")
        return None
    list_path = WORK / "mix.txt"
    list_path.write_text("".join(f"{line}\n" for line in mix.lines()))
    capped, capped_by = mixes.bound(mix, mixes.CONCURRENCY, mixes.PER_HOST)
    uncapped, uncapped_by = mixes.bound(mix, mixes.CONCURRENCY, mixes.CONCURRENCY)
    schedules = (
        mixes.schedule(mix, mixes.CONCURRENCY, mixes.PER_HOST),
        mixes.schedule(mix, mixes.CONCURRENCY, mixes.CONCURRENCY),
    )
    met = schedules[0] <= capped + 1e-6 and schedules[1] <= uncapped + 1e-6
    warm_up = [mix.url(h, h.paths[0]) for h in mix.hosts if h.role == "ordinary"]
    fetch = Command(PRODUCT, imgdl_fetch(MIX_OPTIONS))
    with warm_daemons("mix", MIX_OPTIONS, warm_up, nosync=False) as daemons:
        timed: list[Row] = [fetch, *daemons, *mix_commands()]
        throttled = Throttled(srv.access_log)
        runs = compare("mix", list_path, timed, rounds, known, mix.obtainable,
                       throttled=throttled, require_all=False)  # fmt: skip

    def limit_of(tool: str) -> float:
        return capped if tool in OURS else uncapped

    title = (
        f"mix: {mixes.describe(mix)}\n"
        f"  {mixes.CONCURRENCY} at once, {mixes.PER_HOST} per host (wget2, aria2c: no per-host cap); "
        f"{mixes.ATTEMPTS} attempts; timeouts {mixes.CONNECT_TIMEOUT_S} s to connect, "
        f"{mixes.READ_TIMEOUT_S} s to read; median of {rounds}\n"
        f"  physical limit {capped:.2f} s at {mixes.PER_HOST} per host ({capped_by}); "
        f"{uncapped:.2f} s without a per-host cap ({uncapped_by})\n"
        f"  a schedule that knows the whole list takes {schedules[0]:.2f} s and {schedules[1]:.2f} s"
        + (" (the limits are met)" if met else " (above the limits, which are lower bounds)")
    )
    rows = table(title, runs, mix.urls, limit_of, show_throttled=True)
    return {
        "rows": rows, "urls": mix.urls, "obtainable": mix.obtainable, "not_found": mix.not_found,
        "stalled": mix.stalled, "limit_s": round(capped, 3), "limit_no_per_host_cap_s": round(uncapped, 3),
        "hosts": [{"address": h.address, "role": h.role, "latency_s": h.latency_s, "urls": h.urls,
                   "not_found": len(h.missing), "alone_s": round(mixes.host_time(h, mixes.PER_HOST), 3)}
                  for h in mix.hosts],
        "runs": [asdict(r) for r in runs],
    }  # fmt: skip


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
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-pickup-", dir=OUTPUTS))
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


def long_list(srv: servers.Servers, lines: int) -> dict[str, Any]:
    """A list of `lines` distinct URLs.

    Time to the first request: `imgdl-watch fetch` on it (its URLs all 404 on
    the static server), stopped once nginx has logged that request. The whole
    list: `lines_probe.py`, the product's own job over all of it with
    downloads answered at once, for the job's intake in lines per second and
    its peak RSS (see that file for why not a real fetch: on this VM it would
    time 404s, at ~800 per second); and `lines_probe.py --reader`, the
    reading stage alone (read, parse, de-duplicate, name). The probes' list
    has host names, as real lists do (`img7.example.org`; they are never
    asked: the probe answers itself), where the fetch's list must name our
    server by its address.
    """
    assert srv.access_log is not None
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-lines-", dir=OUTPUTS))
    big, named = root / "long.txt", root / "named.txt"
    try:
        for path, base in ((big, srv.static), (named, None)):
            with path.open("w") as handle:
                for start in range(0, lines, 100_000):
                    handle.write("".join(
                        f"{base or f'http://img{i % 64}.example.org'}/m/{i}/image-{i}.jpg\n"
                        for i in range(start, min(lines, start + 100_000))
                    ))  # fmt: skip
        out = root / "out"
        out.mkdir()
        offset = srv.access_log.stat().st_size
        started = time.time()
        proc = subprocess.Popen(
            [*IMGDL, "fetch", str(big), "--output", str(out), "--concurrency", "64", "--per-host", "64",
             "--retries", "0", "--log-format", "json", "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        first = math.nan
        deadline = time.monotonic() + 20
        while math.isnan(first) and time.monotonic() < deadline:
            time.sleep(0.05)
            with srv.access_log.open("rb") as log:
                log.seek(offset)
                for line in log:
                    stamp, uri = line.split(b" ")[:2]
                    if uri == b"/m/0/image-0.jpg":
                        first = float(stamp) - started
                        break
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        probes = [
            json.loads(subprocess.run(
                [str(product_python()), str(HERE / "lines_probe.py"), *mode, str(named)],
                capture_output=True, text=True, check=True, timeout=120 + lines / 2000,
            ).stdout)
            for mode in ([], ["--reader"])
        ]  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"lines": lines, "first_request_s": round(first, 3), **probes[0], "reader": probes[1]}


def flood(srv: servers.Servers, paths: list[str], lists: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-flood-", dir=OUTPUTS))
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
    root = Path(tempfile.mkdtemp(prefix="imgdl-bench-soak-", dir=OUTPUTS))
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
    parser.add_argument(
        "--skip-daemon", action="store_true",
        help="only the tables: no pickup, long list or flood figures",
    )  # fmt: skip
    parser.add_argument("--skip-mix", action="store_true", help="no mix set")
    parser.add_argument(
        "--lines", type=int, default=1_000_000, metavar="N",
        help="lines of the long list (1000000: ~2 min; 10000000: ~15-30 min; 0: none)",
    )  # fmt: skip
    parser.add_argument("--imgdl", metavar="PATH", help="the imgdl-watch command to time")
    parser.add_argument(
        "--soak", type=int, default=0, metavar="LISTS",
        help="also run LISTS lists of 40 images through one daemon, for memory creep (1500: ~5 min)",
    )  # fmt: skip
    parser.add_argument(
        "--output-fs", choices=("own", "work"), default="own",
        help="where rows write: an ext4 of their own (as root; see outputfs.py) or the work folder",
    )  # fmt: skip
    args = parser.parse_args()
    if args.imgdl:
        IMGDL[:] = [os.path.abspath(args.imgdl)]  # the tools run in their own folders
    WORK.mkdir(exist_ok=True)
    with outputfs.output_root(OUTPUTS, own=args.output_fs == "own") as described:
        bench(args, described)


def bench(args: argparse.Namespace, outputs: str) -> None:
    root = WORK / "corpus"
    images, size = corpus.build(root)
    known = corpus.digests(root)
    srv = servers.start(
        root, latency=LATENCY_S, mix_paths=None if args.skip_mix else corpus.seed_paths()
    )
    print(
        f"corpus: {images} JPEGs, {size / 1e6:.1f} MB; server: {srv.kind}; {os.cpu_count()} cores; "
        f"no-sync rows: {'eatmydata' if nosync_env() else 'none (apt-get install eatmydata)'}; "
        f"load average {os.getloadavg()[0]:.2f} before the run\nrows write to {outputs}"
    )
    results: dict[str, object] = {
        "server": srv.kind,
        "outputs": outputs,
        "images": images,
        "load_at_start": os.getloadavg()[0],
    }
    began = time.monotonic()
    try:
        seed = corpus.SEED_LIST.read_text()
        lists = {}
        for name, base in (("static", srv.static), ("latency", srv.latency)):
            lists[name] = WORK / f"{name}.txt"
            lists[name].write_text(seed.replace("https://cdn.pixabay.com", base))
        static, memory = side_by_side("static", lists["static"], 16, args.rounds, known, images)
        results["static_c16"] = table(
            f"static files, 16 at once (median of {args.rounds})", static, images, lambda _: None
        )
        results["static_memory"] = show_memory(memory)
        limit = math.ceil(images / 64) * LATENCY_S
        latency, memory = side_by_side("latency", lists["latency"], 64, args.rounds, known, images)
        results["latency_c64"] = table(
            f"{LATENCY_S * 1000:.0f} ms per response, 64 at once (physical limit {limit:.2f} s; "
            f"median of {args.rounds})",
            latency, images, lambda _: limit,
        )  # fmt: skip
        results["latency_memory"] = show_memory(memory)
        results["runs"] = [asdict(r) for r in static + latency]
        floor = startup_floor()
        print(
            f"floor for any trio + httpx process: {floor:.2f} s to import them and be ready to "
            f"send, + {limit:.2f} s physical limit = {floor + limit:.2f} s"
        )
        results["trio_httpx_floor_s"] = round(floor + limit, 3)
        if not args.skip_mix:
            results["mix"] = mix_set(srv, args.rounds, known)
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
            if args.lines:
                long = long_list(srv, args.lines)
                print(
                    f"{args.lines:,}-line list: first request after {long['first_request_s']} s; "
                    f"the whole list through a job whose downloads cost nothing: {long['seconds']} s, "
                    f"{long['lines_per_s']:,} lines/s, peak RSS {long['peak_rss_mb']} MB "
                    f"({long['base_rss_mb']} MB before the job, {long['bytes_per_url']} bytes per URL); "
                    f"the reading stage alone: {long['reader']['lines_per_s']:,} lines/s, "
                    f"peak RSS {long['reader']['peak_rss_mb']} MB"
                )
                results["long_list"] = long
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
        srv.stop()
    results["load_at_end"] = os.getloadavg()[0]
    results["run_s"] = round(time.monotonic() - began)
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print(
        f"\nload average {os.getloadavg()[0]:.2f}; the run took {(time.monotonic() - began) / 60:.1f} min"
        f"\nresults: {WORK / 'results.json'}"
    )


if __name__ == "__main__":
    main()
