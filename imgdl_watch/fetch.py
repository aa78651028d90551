"""The one-shot `fetch` command: the same job engine, without an inbox."""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import AsyncIterator

import structlog
import trio

from .config import Settings, fetch_options, job_options
from .fetcher import Fetcher
from .job import Job
from .naming import job_stem
from .terminal import ProgressView

log = structlog.get_logger("imgdl_watch")


class Outcome(enum.Enum):
    OK = "every URL succeeded"
    FAILED = "some URL failed or was invalid"
    INTERRUPTED = "stopped by SIGINT, SIGTERM or SIGHUP"


async def fetch_lists(
    settings: Settings, lists: list[tuple[str, int]], *, view: ProgressView | None = None
) -> Outcome:
    """Run each list in turn, until done or until SIGINT, SIGTERM or SIGHUP
    (the terminal was closed).

    A signal cancels everything at once (a one-shot command has no grace
    period): temporary files go, finished images stay, and the next run
    skips them.
    """
    output = os.path.abspath(settings.output)  # noqa: ASYNC240 - no I/O, only the cwd
    interrupted = False

    async def on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        nonlocal interrupted
        async for _signum in signals:  # pragma: no branch
            interrupted = True
            scope.cancel()

    all_ok = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with Fetcher(fetch_options(settings)) as fetcher, trio.open_nursery() as nursery:
            nursery.start_soon(on_signal, signals, nursery.cancel_scope)
            if view is not None:
                nursery.start_soon(view.refresh_loop)
            all_ok = await _run_lists(settings, lists, fetcher, output, view)
            nursery.cancel_scope.cancel()
    if interrupted:
        return Outcome.INTERRUPTED
    return Outcome.OK if all_ok else Outcome.FAILED


async def _run_lists(
    settings: Settings,
    lists: list[tuple[str, int]],
    fetcher: Fetcher,
    output: str,
    view: ProgressView | None,
) -> bool:
    all_ok = True
    for path, fd in lists:
        stem = job_stem(os.path.basename(path))
        job = Job(
            name=stem, list_fd=fd, output=output, fetcher=fetcher, options=job_options(settings)
        )
        if view is not None:
            view.add(job.summary)
        summary = await job.run()
        all_ok = all_ok and summary.failure is None and not (summary.failed or summary.invalid)
    return all_ok
