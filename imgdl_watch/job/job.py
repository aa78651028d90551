"""A job: one URL list, downloaded into one folder.

The job reads its list as a stream, drops duplicate URLs (`dedupe`), names
each image (`naming`), skips the ones its folder already holds (`feed`), and
hands the rest, one at a time, to its `crew` of worker tasks that call the
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
from typing import TYPE_CHECKING, Protocol

import structlog
import trio

from ..download.fetcher import Fetcher
from ..download.filesink import sweep_temp_files
from ..download.rules import DownloadRules
from ..errors import JobError, inbox_error_detail
from .crew import Crew
from .feed import Feed
from .folder import DiskSpace, is_empty, open_job_folder
from .listformat import ListFormat
from .outcomes import Outcomes
from .progress import JobSummary, report_progress
from .report import JobReport, ReportPaths

if TYPE_CHECKING:
    from .archive import Archive

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
        # reaches running jobs too (see `crew`).
        self._slots = workers
        self._report_paths = report
        self._options = options
        # The whole job's: a report that cannot be written stops everything.
        self._whole = trio.CancelScope()
        self._on_disk_full = on_disk_full
        # --archive: what is looked up, reused and recorded (see `archive`).
        self._archive = archive
        self._archive_log = (
            archive.job_log(os.path.join(output, name)) if archive is not None else None
        )
        # The workers, once the list runs.
        self._crew: Crew | None = None
        # The bytes of the list read, and its mtime, at its end (`Feed.read_whole`).
        self._read_whole: tuple[int, int] | None = None

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
                # Only once the list is done with: a list kept for another
                # try (an inbox_error) is read whole again then.
                self._say_if_changed()
                log.info("job_finished", job=self.name, **summary.finished_fields())
            except JobError as exc:
                summary.stop_clock()
                summary.failure, summary.failure_detail = exc.reason, str(exc)
                log.error("job_failed", job=self.name, reason=exc.reason, detail=str(exc))
                await end.give_up(exc)
        except OSError as exc:
            # The inbox failed us (its disk is full, a folder was removed).
            summary.stop_clock()
            summary.failure = "inbox_error"
            summary.failure_detail = inbox_error_detail(exc)
            retry = summary.retry_s = end.retry_in()
            log.error(
                "job_failed",
                job=self.name,
                reason="inbox_error",
                detail=summary.failure_detail,
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
        outcomes = Outcomes(self.summary, report, stop=self._whole.cancel)
        dir_fd = await self._open_folder()
        try:
            empty = await trio.to_thread.run_sync(self._prepare_folder, dir_fd)
            feed = self._feed_of(dir_fd, outcomes, folder_empty=empty)
            crew = self._crew = Crew(
                fetcher=self._fetcher,
                dir_fd=dir_fd,
                outcomes=outcomes,
                space=DiskSpace(
                    dir_fd,
                    min_free=self._options.min_free,
                    stopping=self._fetcher.stopping,
                    on_full=self._on_disk_full,
                ),
                rules=self._rules,
                archive_log=self._archive_log,
                slots=self._slots_now,
            )
            with self._whole:
                async with trio.open_nursery() as nursery:
                    interval = self._options.progress_interval_s
                    nursery.start_soon(report_progress, self.summary, interval)
                    if self._archive_log is not None:
                        nursery.start_soon(self._archive_log.run)
                    await crew.run(feed)
                    nursery.cancel_scope.cancel()
        finally:
            if self._archive_log is not None:
                await self._archive_log.last_flush()
            self._fetcher.forget_folder(dir_fd)
            os.close(dir_fd)
        if outcomes.report_error is not None:
            raise outcomes.report_error
        if feed.error is not None:
            raise feed.error
        stopped = feed.stopped_early or crew.stopped_early
        self.summary.complete = self.summary.listed and not stopped
        self._read_whole = feed.read_whole

    def _say_if_changed(self) -> None:
        """A list written on after it was read to its end (taken as settled
        while its writer paused for longer than --settle, and went on into
        the file) holds lines no download was made for: said once its job
        is done with it, since the list kept (in done/) holds them."""
        if self._read_whole is None:
            return
        try:
            st = os.fstat(self._list_fd)
        except OSError:
            return
        size, mtime_ns = self._read_whole
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            log.warning(
                "list_changed",
                job=self.name,
                unread_bytes=max(0, st.st_size - size),
                detail="it was written to after it was read to its end, and what was "
                "written then was not read: write a list whole before it is taken "
                "(elsewhere, then mv it in), and give what is missing as a list of its own",
            )

    async def _open_folder(self) -> int:
        try:
            return await trio.to_thread.run_sync(open_job_folder, self._output, self._folder)
        except OSError as exc:
            raise JobError(
                "folder_error", f"cannot use {self._output}/{self._folder}: {exc.strerror}"
            ) from exc

    def _feed_of(self, dir_fd: int, outcomes: Outcomes, *, folder_empty: bool) -> Feed:
        fetcher = self._fetcher
        return Feed(
            self._list_fd,
            outcomes=outcomes,
            folder_fd=dir_fd,
            stopping=fetcher.stopping,
            archive=self._archive,
            busy=fetcher.policy.busy,
            room=fetcher.hosts.given_back,
            fmt=self._format,
            url_column=self._options.url_column,
            folder_empty=folder_empty,
        )

    @property
    def workers(self) -> int:
        """Worker tasks hired so far (two per download slot at most)."""
        return 0 if self._crew is None else self._crew.hired

    @staticmethod
    def _prepare_folder(dir_fd: int) -> bool:
        """Sweep a killed run's temporary files; whether the folder is empty then."""
        swept = sweep_temp_files(dir_fd)
        if swept:
            log.info("temp_files_removed", count=swept)
        return is_empty(dir_fd)

    def _slots_now(self) -> int:
        return self._fetcher.concurrency if self._slots is None else self._slots
