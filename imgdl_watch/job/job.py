"""A job: one URL list, downloaded into one folder.

The job reads its list as a stream, drops duplicate URLs (`dedupe`), names
each image (`naming`), skips the ones its folder already holds (`feed`), and
hands the rest, one at a time, to a crew of worker tasks that call the
fetcher. It never holds more of the list than two batches and the
de-duplication state. Every outcome is counted, logged and recorded in the
job's report (`outcomes`).

The job logs its own beginning and end: `job_started`, then `job_finished`,
`job_interrupted` (stopped, or cancelled) or `job_failed`. What becomes of
the list is not its business: it asks whoever runs it (`JobEnd`), the inbox
for the daemon, nothing for `fetch`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
import trio

from .. import errors as err
from ..download.fetcher import Fetcher
from ..download.rules import DownloadRules
from ..errors import JobError
from .archive import Archive, ArchiveLog
from .feed import Feed, Work
from .folder import DiskSpace, open_job_folder, sweep_temp_files
from .listformat import ListFormat
from .outcomes import Outcomes
from .progress import JobSummary, report_progress
from .report import JobReport, ReportPaths

# Worker tasks per download slot: while one writes its finished file to disk
# (fdatasync can take milliseconds), the other already uses the slot for the
# next download. With one, a slow disk left slots idle (measured: +15% wall
# time on the latency benchmark).
WORKERS_PER_SLOT = 2

log = structlog.get_logger("imgdl_watch")


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What shapes a job besides its downloads (`config.job_options` builds it)."""

    # Seconds between two `job_progress` events.
    progress_interval_s: float
    # No download starts while the folder's filesystem has less free (`--min-free`).
    min_free: int
    # The column (or key) of a structured list that holds the URL; None:
    # `url` or `image_url`, in any case.
    url_column: str | None


# Told that the output's disk is full: where it was seen ("download_failed":
# a download met ENOSPC, once per job; "disk_low": free space fell below
# `--min-free`), and the free bytes then.
DiskFullCallback = Callable[[str, int | None], None]


class JobEnd(Protocol):
    """What becomes of a job's list when it ends: the business of whoever runs it."""

    async def publish(self, summary: JobSummary) -> None:
        """Every URL has its outcome: move the list and its report on."""

    async def give_up(self, error: JobError) -> None:
        """The list cannot run at all."""

    def retry_in(self) -> float | None:
        """The inbox failed us (its disk is full): seconds until the list is
        tried again, or None when it is not."""


class NoInbox:
    """The end of a job with no inbox (`fetch`): nothing to move."""

    async def publish(self, summary: JobSummary) -> None:
        pass

    async def give_up(self, error: JobError) -> None:
        pass

    def retry_in(self) -> float | None:
        return None


def _cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


class Job:
    """Runs one list. `summary` is live while `run()` runs."""

    def __init__(
        self,
        *,
        name: str,
        list_fd: int,
        output: str,
        fetcher: Fetcher,
        options: JobOptions,
        workers: int | None = None,
        report: ReportPaths | None = None,
        on_disk_full: DiskFullCallback | None = None,
        archive: Archive | None = None,
        rules: DownloadRules | None = None,
        list_format: ListFormat | None = None,
        folder: str | None = None,
    ) -> None:
        """`name` is the job's, in its events; its folder is `output/folder`
        (`folder` defaults to `name`). `rules` shape its downloads (the
        fetcher's own when None), `list_format` is its list's (txt when None)."""
        self.name = name
        self._folder = folder or name
        self._rules = rules
        self._format = list_format or ListFormat()
        self.summary = JobSummary(name)
        self._list_fd = list_fd
        self._output = output
        self._fetcher = fetcher
        # Download slots this job may fill: a fixed number, or (None) the
        # fetcher's concurrency as it is now, so that a reload that raises it
        # reaches running jobs too. Two worker tasks per slot at most, hired
        # as needed (see `hire`).
        self._slots = workers
        self._hired = 0
        self._report_paths = report
        self._options = options
        # The whole job's: a report that cannot be written stops everything.
        self._whole = trio.CancelScope()
        self._stopped_early = False
        self._on_disk_full = on_disk_full
        # --archive: what is looked up, reused and recorded (see `archive`).
        self._archive = archive
        self._archive_log = (
            ArchiveLog(archive, os.path.join(output, name)) if archive is not None else None
        )
        # Set up by `_download_all`, for its workers.
        self._dir_fd = -1
        self._outcomes: Outcomes
        self._space: DiskSpace
        self._feed: Feed

    async def run(self, end: JobEnd | None = None) -> JobSummary:
        """Run the list to its end, or until the fetcher is stopping; then `end` it."""
        end = end or NoInbox()
        summary = self.summary
        # Every event of the job's task and of the tasks it starts names it;
        # its own beginning and end name it outright as well.
        structlog.contextvars.bind_contextvars(job=self.name)
        log.info("job_started", job=self.name)
        try:
            try:
                with self._open_report() as report:
                    await self._download_all(report)
                    summary.stop_clock()
                    if not summary.complete:
                        log.info("job_interrupted", job=self.name, **summary.finished_fields())
                        return summary
                    if report is not None:
                        report.close()
                    await end.publish(summary)
                    if report is not None:
                        report.commit()
                log.info("job_finished", job=self.name, **summary.finished_fields())
            except JobError as exc:
                summary.stop_clock()
                summary.failure = exc.reason
                log.error("job_failed", job=self.name, reason=exc.reason, detail=str(exc))
                await end.give_up(exc)
        except OSError as exc:
            # The inbox failed us (its disk is full, a folder was removed).
            summary.stop_clock()
            summary.failure = "inbox_error"
            retry = end.retry_in()
            log.error(
                "job_failed",
                job=self.name,
                reason="inbox_error",
                detail=f"{exc.strerror or exc} in {exc.filename or 'the inbox'}",
                **({"retry_s": retry} if retry is not None else {}),
            )
        except BaseException as exc:
            if _cancelled(exc):  # stopped after the grace period, or at once
                summary.stop_clock()
                log.info("job_interrupted", job=self.name, **summary.finished_fields())
            raise
        return summary

    def _open_report(self) -> contextlib.AbstractContextManager[JobReport | None]:
        if self._report_paths is None:
            return contextlib.nullcontext()
        return JobReport(self._report_paths)

    async def _download_all(self, report: JobReport | None) -> None:
        """Every URL of the list to its outcome, unless stopped."""
        self._outcomes = outcomes = Outcomes(self.summary, report, stop=self._whole.cancel)
        try:
            self._dir_fd = await trio.to_thread.run_sync(
                open_job_folder, self._output, self._folder
            )
        except OSError as exc:
            raise JobError(
                "folder_error", f"cannot use {self._output}/{self._folder}: {exc.strerror}"
            ) from exc
        try:
            self._space = DiskSpace(
                self._dir_fd,
                min_free=self._options.min_free,
                stopping=self._fetcher.stopping,
                on_full=self._on_disk_full,
            )
            await trio.to_thread.run_sync(self._prepare_folder)
            feed = self._feed = Feed(
                self._list_fd,
                outcomes=outcomes,
                folder_fd=self._dir_fd,
                stopping=self._fetcher.stopping,
                archive=self._archive,
                busy=self._fetcher.policy.busy,
                room=self._fetcher.hosts.given_back,
                fmt=self._format,
                url_column=self._options.url_column,
            )
            # No buffer: an item passes only from the feed's hand to a
            # worker's, so the feed knows when no worker is free.
            send, receive = trio.open_memory_channel[Work](0)
            with self._whole:
                async with trio.open_nursery() as nursery, receive:
                    nursery.start_soon(
                        report_progress, self.summary, self._options.progress_interval_s
                    )
                    if self._archive_log is not None:
                        nursery.start_soon(self._archive_log.run)
                    async with trio.open_nursery() as crew:

                        def hire() -> None:
                            # Up to two per download slot, hired as items find
                            # none free: a list of three URLs costs three tasks,
                            # not 2 x --concurrency (a flood of small lists runs
                            # --max-jobs at a time, and each idle task costs ~4 KB).
                            if self._hired < self._max_workers():
                                self._hired += 1
                                crew.start_soon(self._work, receive.clone())

                        crew.start_soon(feed.run, send, hire)
                    nursery.cancel_scope.cancel()
        finally:
            if self._archive_log is not None:
                await self._archive_log.last_flush()
            os.close(self._dir_fd)
        if outcomes.report_error is not None:
            raise outcomes.report_error
        if feed.error is not None:
            raise feed.error
        stopped = feed.stopped_early or self._stopped_early
        self.summary.complete = self.summary.listed and not stopped

    @property
    def workers(self) -> int:
        """Worker tasks hired so far (two per download slot at most)."""
        return self._hired

    def _prepare_folder(self) -> None:
        swept = sweep_temp_files(self._dir_fd)
        if swept:
            log.info("temp_files_removed", count=swept)

    def _max_workers(self) -> int:
        slots = self._fetcher.concurrency if self._slots is None else self._slots
        return max(1, slots) * WORKERS_PER_SLOT

    async def _work(self, receive: trio.MemoryReceiveChannel[Work]) -> None:
        async with receive:
            async for item in receive:
                if item.archived is not None and self._archive_log is not None:
                    got = await self._archive_log.reuse(
                        item.url, item.archived, self._dir_fd, item.name
                    )
                    if got is not None:
                        self._outcomes.reused(item, got)
                        continue
                try:
                    await self._space.wait()
                    result = await self._fetcher.download(
                        item.url,
                        dir_fd=self._dir_fd,
                        name=item.name,
                        parsed=item.parsed,
                        rules=self._rules,
                    )
                except err.Interrupted:
                    self._stopped_early = True
                    # The feed may be waiting to hand over an item that no
                    # worker will take: the job is stopping.
                    self._feed.scope.cancel()
                    return
                except err.DownloadError as exc:
                    self._outcomes.failed(item, exc)
                    if isinstance(exc, err.DiskFull):
                        self._space.full()
                    continue
                except err.AlreadyThere as there:  # a look-alike's file, left as it is
                    self._outcomes.skipped(item, there.file)
                    continue
                except err.Filtered as exc:
                    self._outcomes.filtered(item, exc)
                    continue
                self._outcomes.ok(item, result)
                if self._archive_log is not None and result.sha256:
                    self._archive_log.downloaded(item.url, result.file, result.sha256, result.bytes)
