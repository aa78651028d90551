"""A job's counters, and the rates, ETA and progress events derived from them.

`JobSummary` is live while a job runs. `RateMeter` turns two looks at it into
rates over the time between them; the `job_progress` event, the status file,
systemd's STATUS= line and the terminal's progress bar all read it that way,
each at its own cadence.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

log = structlog.get_logger("imgdl_watch")


@dataclass(slots=True)
class JobSummary:
    """A job's counters, live while it runs and final when it ends."""

    job: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    # Images put in place from the archive (`--archive`), not downloaded.
    reused: int = 0
    invalid: int = 0
    duplicates: int = 0
    # Images that came whole and a filter dropped (not failures: not retried).
    filtered: int = 0
    bytes: int = 0
    # Unique URLs found so far; it is the total once `listed` is True.
    found: int = 0
    listed: bool = False
    # True when every URL of the list got an outcome.
    complete: bool = False
    # Why the list as a whole could not run (`job_failed`'s reason), if it could not.
    failure: str | None = None
    # What that failure said (job_failed's `detail`).
    failure_detail: str = ""
    # Seconds until the list is tried again, for a failure that leaves it in
    # processing/ (`inbox_error`); None when the failure is final.
    retry_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    # When the job's clock stopped (`stop_clock`); None while it runs.
    stopped: float | None = None

    @property
    def done(self) -> int:
        """URLs with the image in the folder: downloaded now, reused, or already there."""
        return self.ok + self.skipped + self.reused

    @property
    def elapsed_s(self) -> float:
        end = time.monotonic() if self.stopped is None else self.stopped
        return end - self.started

    def stop_clock(self) -> None:
        """The job's work is over: every later look at it (its end event, the
        hooks', a notification's) tells the same `elapsed_s`."""
        if self.stopped is None:
            self.stopped = time.monotonic()

    def finished_fields(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "reused": self.reused,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "filtered": self.filtered,
            "bytes": self.bytes,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A job's progress at one moment, with rates over the last interval."""

    job: str
    done: int
    failed: int
    total: int
    bytes: int
    rate_img_s: float
    rate_bytes_s: float
    # Seconds left at the current rate; None until the whole list is read.
    eta_s: float | None
    elapsed_s: float

    def fields(self) -> dict[str, Any]:
        """The fields of a `job_progress` event: all but `elapsed_s`."""
        fields = dataclasses.asdict(self)
        del fields["elapsed_s"]
        return fields


# Seconds of samples a rate is taken over. A paced host's requests come in
# bursts about once a second, so that a job's rate over one second's samples
# flickers between 0 and twice its true value (the status page showed
# "0.0 img/s" under `--rate-per-host 5`); over a few seconds it holds still.
RATE_WINDOW_S = 5.0


class RateMeter:
    """Rates of one job over its last samples (pure: the caller gives the time).

    Each `sample` is kept for `window_s` seconds; a rate is taken from the
    oldest kept to the newest, so a reader that samples once every few
    seconds gets the rate since its last look, and one that samples every
    second gets it over the last `window_s`.
    """

    __slots__ = ("_samples", "_window_s", "summary")

    def __init__(self, summary: JobSummary, now: float, *, window_s: float = RATE_WINDOW_S) -> None:
        self.summary = summary
        self._window_s = window_s
        # (time, finished, bytes), oldest first.
        self._samples: deque[tuple[float, int, int]] = deque(
            [(now, summary.ok + summary.failed, summary.bytes)]
        )

    def sample(self, now: float) -> Snapshot:
        summary = self.summary
        finished = summary.ok + summary.failed
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= self._window_s:
            samples.popleft()  # the next one is old enough to measure from
        at, finished_then, bytes_then = samples[0]
        span = max(now - at, 1e-9)
        rate = (finished - finished_then) / span
        byte_rate = (summary.bytes - bytes_then) / span
        samples.append((now, finished, summary.bytes))
        remaining = summary.found - summary.done - summary.failed - summary.filtered
        eta = round(remaining / rate, 1) if summary.listed and rate > 0 else None
        return Snapshot(
            job=summary.job,
            done=summary.done,
            failed=summary.failed,
            total=summary.found,
            bytes=summary.bytes,
            rate_img_s=round(rate, 2),
            rate_bytes_s=round(byte_rate),
            eta_s=eta,
            elapsed_s=round(summary.elapsed_s, 1),
        )


async def report_progress(summary: JobSummary, interval_s: float) -> None:
    """Log `job_progress` every `interval_s` seconds, until cancelled."""
    meter = RateMeter(summary, trio.current_time())
    while True:
        await trio.sleep(interval_s)
        log.info("job_progress", **meter.sample(trio.current_time()).fields())
