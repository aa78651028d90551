"""What a running daemon shows of itself, each at its own cadence.

    status file     INBOX/.imgdl-watch/status-<host>-<pid>.json, every
                    `STATUS_INTERVAL_S` (what `imgdl-watch status` reads), with
                    the `STATUS_HOSTS` busiest hosts
    metrics         the gauges: jobs running, lists waiting, downloads in flight,
                    the output's free bytes, each shown host's concurrency,
                    ceiling and rate limit, and a heartbeat (the loop is alive)
    systemd         `STATUS=` when its text changes, and `WATCHDOG=1` pings

Everything here reads the daemon's state through `DaemonView`; nothing here
changes it.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog
import trio

from .. import metrics
from ..download.hoststats import HostState
from ..job.progress import JobSummary, RateMeter, Snapshot
from .sdnotify import Notifier
from .status import STATUS_INTERVAL_S, StatusFile

log = structlog.get_logger("imgdl_watch")


class DaemonView(Protocol):
    """What the reporter reads: running jobs' summaries, lists waiting, downloads in flight."""

    @property
    def running(self) -> Mapping[str, JobSummary]: ...

    @property
    def waiting(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    def hosts(self, count: int) -> Sequence[HostState]: ...

    @property
    def workers(self) -> tuple[int, int]:
        """The download workers: (ready now, asked for)."""
        ...


# Hosts in the status file: those with downloads in flight first, then those
# seen last.
STATUS_HOSTS = 20
# Samples (one a second) over which a host's request rate is shown.
HOST_RATE_SAMPLES = 5


class StatusReporter:
    """Writes the status file and the gauges, and tells systemd how it goes."""

    def __init__(
        self, view: DaemonView, *, status: StatusFile, notifier: Notifier, min_free: int = 0
    ) -> None:
        self._view = view
        self.status = status
        self._notifier = notifier
        self._min_free = min_free
        self._meters: dict[str, RateMeter] = {}
        self._snapshots: list[Snapshot] = []
        # Each shown host's last samples of (time, requests sent), for its rate.
        self._host_samples: dict[str, deque[tuple[float, int]]] = {}
        # What the status file says the daemon is doing: "running", then
        # "stopping" within a stop's grace (`stopping`), "stopped" at the end.
        self._state = "running"
        # Set to have the status file written now, not at the next second.
        self._wake = trio.Event()

    def text(self) -> str:
        """One line for systemd's STATUS=."""
        jobs = len(self._view.running)
        rate = sum(s.rate_img_s for s in self._snapshots)
        flight, waiting = self._view.in_flight, self._view.waiting
        return f"{jobs} jobs, {rate:.0f} img/s, {flight} in flight, {waiting} queued"

    async def run(self) -> None:
        """The status file, the gauges, STATUS= and the watchdog, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._notifier.watchdog_loop)
            nursery.start_soon(self._status_loop)
            if self._notifier.enabled:
                nursery.start_soon(self._notify_loop)

    async def write(self, state: str) -> None:
        """Sample the jobs' rates, set the gauges, and rewrite the status file."""
        now = trio.current_time()
        running = self._view.running
        self._snapshots = [
            self._meters.setdefault(name, RateMeter(summary, now)).sample(now)
            for name, summary in running.items()
        ]
        for gone in [name for name in self._meters if name not in running]:
            del self._meters[gone]
        waiting, in_flight = self._view.waiting, self._view.in_flight
        metrics.recorder.gauges(jobs=len(running), queued=waiting, in_flight=in_flight)
        ready, count = self._view.workers
        metrics.recorder.workers(ready=ready, count=count)
        metrics.recorder.heartbeat()
        states = self._view.hosts(STATUS_HOSTS)
        metrics.recorder.hosts(states)
        hosts = self._host_rows(states, now)
        snapshots = self._snapshots
        try:
            free = await trio.to_thread.run_sync(
                lambda: self._write(
                    state, snapshots, in_flight, waiting, hosts=hosts, workers=(ready, count)
                )
            )
        except OSError as exc:  # the inbox may be gone for a moment: the scan recreates it
            log.debug("status_write_failed", detail=str(exc))
            return
        if free is not None:
            metrics.recorder.disk(free=free, min_free=self._min_free)

    def _write(
        self,
        state: str,
        jobs: list[Snapshot],
        in_flight: int,
        queued: int,
        *,
        hosts: list[dict[str, Any]],
        workers: tuple[int, int],
    ) -> int | None:
        """The output's free bytes, then the status file (in a worker thread)."""
        try:
            st = os.statvfs(self.status.output)
            free: int | None = st.f_bavail * st.f_frsize
        except OSError:  # the output folder is gone for a moment
            free = None
        self.status.write(
            state=state,
            jobs=jobs,
            in_flight=in_flight,
            queued=queued,
            free_bytes=free,
            hosts=hosts,
            workers={"ready": workers[0], "count": workers[1]},
        )
        return free

    def _host_rows(self, states: Sequence[HostState], now: float) -> list[dict[str, Any]]:
        """Each host as the status file has it, with its requests per second over
        the last `HOST_RATE_SAMPLES` samples (a paced host's bursts come about
        once a second, so one sample would flicker between 0 and twice the rate)."""
        rows, samples = [], {}
        for state in states:
            history = self._host_samples.get(state.host) or deque(maxlen=HOST_RATE_SAMPLES)
            then, before = history[0] if history else (now, state.requests)
            rate = (state.requests - before) / (now - then) if now > then else 0.0
            history.append((now, state.requests))
            samples[state.host] = history
            rows.append({**dataclasses.asdict(state), "req_s": round(rate, 2)})
        self._host_samples = samples
        return rows

    def stopping(self) -> None:
        """A stop began: the status file says so at once, and until the end.
        Not awaited: the stop must not wait for a disk (a hung NFS inbox) to
        begin; the one writer, `_status_loop`, writes it now."""
        self._state = "stopping"
        self._wake.set()

    async def _status_loop(self) -> None:
        # The status file's one writer: two writes at once would share its
        # temporary file.
        while True:
            await self.write(self._state)
            with trio.move_on_after(STATUS_INTERVAL_S):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _notify_loop(self) -> None:
        """systemd's STATUS= line, sent when it changes."""
        while True:
            await trio.sleep(STATUS_INTERVAL_S)
            await self._notifier.status(self.text())
