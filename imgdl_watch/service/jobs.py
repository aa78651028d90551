"""The daemon's jobs: each claimed list run to its end in the inbox.

    Jobs.run      one claimed list: its job (with its category's settings, into
                  its folder), its end in the inbox, and what the world is told
    _InboxEnd     a job's end: its list published in done/ (failures in failed/),
                  moved to failed/ as it is, or held back in processing/

A job that crashes (a bug met on its list) sends the list to failed/, so that
a restart does not meet it again; the daemon goes on.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio

from ..config import Settings, category_settings, download_rules, job_options
from ..download.fetcher import Fetcher
from ..errors import JobError, first_leaf, inbox_error_detail
from ..inbox.intake import Intake
from ..inbox.layout import REPORT_SUFFIX
from ..inbox.lifecycle import Claim, Inbox
from ..job.job import Job
from ..job.listformat import ListFormat
from ..job.progress import JobSummary
from ..job.report import ReportPaths
from .events import Event
from .status import StatusFile

if TYPE_CHECKING:
    from ..job.archive import Archive

log = structlog.get_logger("imgdl_watch")


class Jobs:
    """The jobs running now, at most `max_jobs` (`slots`), each to its end."""

    def __init__(
        self,
        *,
        inbox: Inbox,
        output: str,
        fetcher: Fetcher,
        intake: Intake,
        status: StatusFile,
        slots: trio.CapacityLimiter,
        settings: Callable[[], Settings],
        announce: Callable[[Event], None],
        archive: Archive | None = None,
    ) -> None:
        self.inbox = inbox
        self.output = output
        self._fetcher = fetcher
        self._intake = intake
        self._status = status
        self._slots = slots
        # The daemon's settings now: a reload changes what the next job follows.
        self._settings = settings
        self._announce = announce
        self._archive = archive
        self.running: dict[str, Job] = {}

    async def run(self, claim: Claim, slot_token: object) -> None:
        """Run the claim's list as a job; always let go of its claim and its slot."""
        folder = os.path.join(self._output_of(claim), claim.stem)
        end = _InboxEnd(self.inbox, self._intake, self._status, claim)
        try:
            job = self._job_of(claim, folder)
            self.running[claim.job] = job
            summary = await job.run(end)
            self._announce_end(claim.job, summary, end, folder)
        except Exception as exc:
            # A bug, met on this list. The list goes to failed/, so that a
            # restart does not meet it again (a crash loop); the daemon goes on.
            leaf = first_leaf(exc)
            log.error(
                "job_crashed",
                job=claim.job,
                error=f"{type(leaf).__name__}: {leaf}",
                traceback="".join(traceback.format_exception(exc)),
            )
            try:
                await trio.to_thread.run_sync(lambda: self.inbox.fail(claim))
            except OSError as exc_moved:
                # failed/ or the state folder cannot be used now (planted, say):
                # the list stays in processing/, to be taken up again once held
                # back, and the daemon goes on (the scan says what is wrong).
                moved, retry = inbox_error_detail(exc_moved), end.retry_in()
                log.error(
                    "job_failed", job=claim.job, reason="inbox_error", detail=moved, retry_s=retry
                )
                self._announce(
                    Event.job_failed(
                        claim.job, "inbox_error", {}, folder=folder, detail=moved, retry_s=retry
                    )
                )
                return
            detail = type(leaf).__name__
            self._announce(Event.job_failed(claim.job, "crashed", {}, folder=folder, detail=detail))
        finally:
            # Cancelled too (stop after grace, or a second signal): the list
            # stays in processing/. Plain syscalls, which run in a cancelled scope.
            # The stem is let go only after the job logged its end, so that no
            # daemon's `list_claimed` of the stem comes before our last word on it.
            claim.release()
            self.running.pop(claim.job, None)
            self._slots.release_on_behalf_of(slot_token)
            self._intake.poke()

    def _output_of(self, claim: Claim) -> str:
        """Where the jobs of a claim's category go: OUTPUT, or OUTPUT/<category>."""
        return os.path.join(self.output, claim.category) if claim.category else self.output

    def _job_of(self, claim: Claim, folder: str) -> Job:
        """The job of a claim: with its category's settings, into its folder."""
        settings = category_settings(self._settings(), claim.category)
        list_format = ListFormat.of(claim.original)
        # A category's own (lower) concurrency is also the number of slots its
        # jobs' workers fill; else they follow the fetcher's, reloads included.
        own_slots = settings.concurrency < self._settings().concurrency
        return Job(
            name=claim.job,
            folder=claim.stem,
            list_fd=claim.fd,
            output=self._output_of(claim),
            fetcher=self._fetcher,
            options=job_options(settings),
            rules=download_rules(settings),
            list_format=list_format,
            workers=settings.concurrency if own_slots else None,
            report=ReportPaths(
                *self.inbox.parts_of(claim), format=list_format, folder_fd=claim.folder_fd
            ),
            on_disk_full=lambda source, free: self._announce(
                Event.disk_full(claim.job, folder=folder, source=source, free_bytes=free)
            ),
            archive=self._archive,
        )

    def _announce_end(self, job: str, summary: JobSummary, end: _InboxEnd, folder: str) -> None:
        """A finished or failed job, to the hooks and notifications (an
        interrupted one is neither: it resumes on the next start)."""
        counts = summary.finished_fields()
        if summary.failure is not None:
            # The summary's last word: a failure whose move to failed/ then
            # failed too (an inbox_error, tried again) has the move's detail.
            detail = summary.failure_detail or end.detail
            self._announce(
                Event.job_failed(
                    job,
                    summary.failure,
                    counts,
                    folder=folder,
                    detail=detail,
                    retry_s=summary.retry_s,
                )
            )
        elif summary.complete:
            self._announce(Event.job_finished(job, counts, folder=folder, report=end.report))


class _InboxEnd:
    """A daemon's job ends in the inbox: its list published in done/ (failures
    in failed/), moved to failed/ as it is, or held back in processing/."""

    def __init__(self, inbox: Inbox, intake: Intake, status: StatusFile, claim: Claim) -> None:
        self._inbox = inbox
        self._intake = intake
        self._status = status
        self._claim = claim
        self._held_back = intake.hold_back.started(claim.job)
        # Where the published report is, once it is.
        self.report: str | None = None
        # What `give_up` was told, for the hooks.
        self.detail = ""

    async def publish(self, summary: JobSummary) -> None:
        inbox, claim = self._inbox, self._claim
        done = await trio.to_thread.run_sync(lambda: inbox.finish(claim, failed=summary.failed))
        # `Inbox.finish` puts the report beside the list, under the list's stem.
        name = os.path.basename(done)[: -len(claim.suffix)] + REPORT_SUFFIX
        self.report = os.path.join(os.path.dirname(done), name)
        fields = summary.finished_fields()
        # The status page serves it as /report/NAME, or /report/CATEGORY/NAME.
        fields["report"] = f"{claim.category}/{name}" if claim.category else name
        self._status.finished(claim.job, fields)

    async def give_up(self, error: JobError) -> None:
        inbox, claim = self._inbox, self._claim
        self.detail = str(error)
        await trio.to_thread.run_sync(lambda: inbox.fail(claim))

    def retry_in(self) -> float:
        hold_back = self._intake.hold_back
        return hold_back.failed(self._claim.job, last=self._held_back, now=trio.current_time())
