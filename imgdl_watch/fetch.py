"""The one-shot `fetch` command: the same job engine, without an inbox."""

from __future__ import annotations

import os

import structlog
import trio

from .config import Settings
from .fetcher import Fetcher, FetchOptions
from .job import Job, JobError
from .naming import job_stem
from .terminal import ProgressView

log = structlog.get_logger("imgdl_watch")


async def fetch_lists(
    settings: Settings, lists: list[tuple[str, int]], *, view: ProgressView | None = None
) -> bool:
    """Run each list in turn. True when every URL of every list succeeded."""
    output = os.path.abspath(settings.output or ".")  # noqa: ASYNC240 - no I/O, only the cwd
    async with Fetcher(FetchOptions.from_settings(settings)) as fetcher:
        if view is None:
            return await _run_lists(settings, lists, fetcher, output, None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(view.refresh_loop)
            all_ok = await _run_lists(settings, lists, fetcher, output, view)
            nursery.cancel_scope.cancel()
        return all_ok


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
            name=stem,
            list_fd=fd,
            output=output,
            fetcher=fetcher,
            workers=settings.concurrency,
            progress_interval_s=settings.progress_interval,
            min_free=settings.min_free,
        )
        if view is not None:
            view.add(job.summary)
        try:
            summary = await job.run()
        except JobError as exc:
            log.error("job_failed", job=stem, reason=exc.reason, detail=str(exc))
            all_ok = False
            continue
        log.info("job_finished", job=stem, **summary.finished_fields())
        all_ok = all_ok and not (summary.failed or summary.invalid)
    return all_ok
