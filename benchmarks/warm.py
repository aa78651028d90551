"""A warm daemon, timed job by job: the `imgdl-watch run` rows of `make bench`.

The daemon is started once per set and left idle; it has run one small
warm-up list before the first timed one. Each timed job is a list renamed
into its inbox (written beside it first, with an mtime a minute old, so that
it counts as settled and is taken at once). Its wall time runs from that
rename to the timestamp of its `job_finished` event in the daemon's JSON log
file; its CPU is the daemon's utime + stime from `/proc/PID/stat` just before
the rename and just after the event is seen (the daemon is idle around the
job, so this is the job's CPU); its peak RSS is the daemon's VmHWM so far.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


class DaemonFailed(RuntimeError):
    pass


class WarmDaemon:
    def __init__(
        self, command: list[str], root: Path, args: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.output = root / "downloads"
        self.staging = root / "staging"
        self.log = root / "daemon.log"
        self.staging.mkdir(parents=True, exist_ok=True)
        self._offset = 0
        self._partial = b""
        self.proc = subprocess.Popen(
            [*command, "run", "--inbox", str(self.inbox), "--output", str(self.output),
             "--log-file", str(self.log), "--log-format", "json", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            self._wait_for(lambda e: e["event"] == "daemon_started", 30)
        except BaseException:
            self.stop()
            raise

    def _new_events(self) -> list[dict[str, object]]:
        """Events logged since the last call: the log is read on from where it was left."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]

    def _wait_for(
        self, match: Callable[[dict[str, object]], bool], timeout: float
    ) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self._new_events():
                if match(event):
                    return event
                if event["event"] in ("job_failed", "job_crashed", "crashed"):
                    raise DaemonFailed(f"daemon {self.proc.args!r}: {event}")
            if self.proc.poll() is not None:
                raise DaemonFailed(f"daemon exited ({self.proc.returncode}); its log: {self.log}")
            if time.monotonic() > deadline:
                raise DaemonFailed(f"daemon: nothing matched in {timeout} s; its log: {self.log}")
            time.sleep(0.02)

    def _tree(self) -> list[int]:
        """The daemon's pid and its children's (its download workers, `--workers`)."""
        pids = [self.proc.pid]
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def cpu_s(self) -> float:
        """utime + stime of the daemon and of its live children."""
        total = 0
        for pid in self._tree():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])
        return total * CLOCK_TICK_S

    def peak_rss_mb(self) -> float:
        """The daemon's VmHWM, plus each live child's: the most they can have held
        at once (each peak counted whole, shared pages included)."""
        total = 0
        for pid in self._tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        return total / 1024 if total else float("nan")

    def memory_mb(self) -> tuple[float, float]:
        """What the daemon and its live children hold now, in MB: (counted
        once, summed RSS). Counted once is the daemon's RSS plus each child's
        private pages: a worker's pages that it shares with the daemon (the
        interpreter, the libraries) are already in the daemon's RSS, where a
        sum of RSS counts them twice (`/proc/PID/smaps_rollup`)."""
        once = summed = 0
        for at, pid in enumerate(self._tree()):
            fields: dict[str, int] = {}
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                    key, _, value = line.partition(":")
                    fields[key] = int(value.split()[0])
            rss = fields.get("Rss", 0)
            summed += rss
            once += (
                rss if at == 0 else fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
            )
        return once / 1024, summed / 1024

    def sampled_job(
        self, list_path: Path, stem: str, timeout: float, *, every_s: float = 0.01
    ) -> tuple[float, float, Path]:
        """One job, its memory sampled every `every_s` by a thread (untimed: the
        sampling costs CPU): (peak counted once, peak summed RSS, its folder)."""
        peaks = [0.0, 0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(every_s):
                peaks[:] = map(max, peaks, self.memory_mb())

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            folder = self.job(list_path, stem, timeout)[2]
        finally:
            done.set()
            sampler.join()
        return peaks[0], peaks[1], folder

    def job(self, list_path: Path, stem: str, timeout: float) -> tuple[float, float, Path]:
        """Run one list; (wall seconds, CPU seconds, its folder)."""
        staged = self.staging / f"{stem}.txt"
        shutil.copyfile(list_path, staged)
        old = time.time() - 60
        os.utime(staged, (old, old))
        cpu = self.cpu_s()
        dropped = time.time()
        os.rename(staged, self.inbox / staged.name)
        event = self._wait_for(
            lambda e: e["event"] == "job_finished" and e.get("job") == stem, timeout
        )
        cpu = self.cpu_s() - cpu
        finished = dt.datetime.fromisoformat(str(event["timestamp"])).timestamp()
        return finished - dropped, cpu, self.output / stem

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
