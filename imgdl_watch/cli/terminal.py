"""`fetch` at a terminal: a live progress bar, then a one-paragraph summary.

Used only when stdout is a terminal and the log format is `auto`; otherwise
`fetch` prints JSON lines like the daemon. rich is imported here, on first
use, so that non-interactive runs do not pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ..job.progress import JobSummary, RateMeter

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# Seconds between two refreshes of the bar.
REFRESH_S = 0.2
# Seconds over which the shown rate is measured.
RATE_WINDOW_S = 1.0


@dataclass(slots=True)
class _Bar:
    task: TaskID
    summary: JobSummary
    meter: RateMeter
    sampled_at: float
    rate: str = ""


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class ProgressView:
    """One bar per list: images done/total, MB, rate and ETA."""

    def __init__(self) -> None:
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress: Progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[mb]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            redirect_stdout=True,
            transient=False,
        )
        self._bars: list[_Bar] = []
        self.summaries: list[JobSummary] = []

    def __enter__(self) -> ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def add(self, summary: JobSummary) -> None:
        task = self._progress.add_task(summary.job, total=None, mb=_mb(0), rate="")
        now = trio.current_time()
        self._bars.append(_Bar(task, summary, RateMeter(summary, now), now))
        self.summaries.append(summary)

    def _refresh(self) -> None:
        now = trio.current_time()
        for bar in self._bars:
            if now - bar.sampled_at >= RATE_WINDOW_S:
                bar.rate = f"{bar.meter.sample(now).rate_img_s:.0f} img/s"
                bar.sampled_at = now
            summary = bar.summary
            self._progress.update(
                bar.task,
                total=summary.found if summary.listed else None,
                completed=summary.done + summary.failed + summary.filtered,
                mb=_mb(summary.bytes),
                rate=bar.rate,
            )

    async def refresh_loop(self) -> None:
        """Redraw until cancelled, and once more then, so the bars end complete."""
        try:
            while True:
                self._refresh()
                await trio.sleep(REFRESH_S)
        finally:
            self._refresh()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary_paragraph(summaries: list[JobSummary], output: str) -> str:
    ok = sum(s.ok for s in summaries)
    skipped = sum(s.skipped for s in summaries)
    reused = sum(s.reused for s in summaries)
    filtered = sum(s.filtered for s in summaries)
    failed = sum(s.failed for s in summaries)
    invalid = sum(s.invalid for s in summaries)
    duplicates = sum(s.duplicates for s in summaries)
    size = sum(s.bytes for s in summaries)
    elapsed = max((s.elapsed_s for s in summaries), default=0.0)
    lists = ", ".join(s.job for s in summaries)
    text = (
        f"Fetched {_count(ok, 'image')} ({_mb(size)}) in {elapsed:.1f} s into {output} ({lists})"
        f"; {skipped} {'was' if skipped == 1 else 'were'} already there."
    )
    if duplicates:
        text += f" {_count(duplicates, 'line')} repeated a URL of the list, fetched once."
    if reused:
        text += f" {reused} came from the archive (--archive), not fetched."
    if filtered:
        were = "was" if filtered == 1 else "were"
        text += f" {filtered} {were} dropped by a filter (a placeholder, too small, too large)."
    if failed or invalid:
        lines = "line was not a valid URL" if invalid == 1 else "lines were not valid URLs"
        text += (
            f" {failed} failed and {invalid} {lines}: the log says why"
            " (run with --log-format json for every event)."
        )
    else:
        text += " Nothing failed."
    return text
