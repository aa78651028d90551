"""The daemon's task tree.

    run()                                   one root nursery
    ├── _signals                            SIGTERM/SIGINT: stop; SIGHUP: reload
    ├── watchdog_loop, _notify_loop         systemd WATCHDOG= and STATUS= (under systemd)
    ├── _status_loop                        the status file and the metrics gauges
    └── work nursery
        ├── intake nursery                  cancelled first on stop
        │   ├── _watch_loop → watcher.watch pokes on inbox changes
        │   └── _intake                     scan → settle → claim → start a job
        └── _run_job (at most max_jobs)     each with its own nursery of downloads

Stopping (first SIGTERM or SIGINT): the intake is cancelled, so no new list is
taken; `fetcher.stopping` is set, so no new download starts; in-flight
downloads get `grace` seconds, then the work nursery is cancelled. An
unfinished job stays in `processing/` for the next run. A second signal
cancels at once. All cleanup is plain system calls, which run even inside a
cancelled scope.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import AsyncIterator, Callable

import structlog
import trio

from . import metrics
from .config import Settings
from .errors import first_leaf
from .fetcher import Fetcher, FetchOptions
from .inbox import Claim, Inbox, SettleTracker
from .job import Job, JobError
from .logs import LogOutput
from .openfiles import ensure_open_files, files_needed
from .progress import RateMeter, Snapshot
from .report import JobReport
from .sdnotify import Notifier
from .status import STATUS_INTERVAL_S, StatusFile, adopt_history
from .watcher import ChangeSource, WatchBroken, watch, watchfiles_source

# Names reported by `file_ignored` are remembered so each is reported once;
# past this many, the memory is cleared rather than grown.
MAX_IGNORED_REMEMBERED = 10_000
# Seconds before a watcher that stopped on its own is replaced: the daemon
# was poked to scan at once, and this keeps a stream of unreadable names from
# spinning the loop.
WATCH_RESTART_DELAY_S = 0.1
# A job that the inbox failed (its disk full, say) stays in processing/ and is
# tried again at a rescan: first at the next one, then after twice as long
# each time, up to this many seconds. So a disk that stays full costs a re-run
# of the list (and its log lines) every few minutes, not every few seconds.
INBOX_RETRY_MAX_S = 300.0

log = structlog.get_logger("imgdl_watch")


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        change_source: ChangeSource | None = None,
        notifier: Notifier | None = None,
        reload: Callable[[], Settings] | None = None,
        log_output: LogOutput | None = None,
    ) -> None:
        self.settings = settings
        self.inbox = Inbox(settings.inbox)
        self.output = os.path.abspath(settings.output or "downloads")
        self._source = change_source or watchfiles_source(
            rescan_interval_s=settings.rescan_interval, force_polling=settings.force_polling
        )
        self._notifier = notifier or Notifier()
        self._reload = reload
        self._log_output = log_output
        self.fetcher = Fetcher(FetchOptions.from_settings(settings))
        self._job_slots = trio.CapacityLimiter(settings.max_jobs)
        self.jobs: dict[str, Job] = {}
        self._queued: list[Claim] = []
        self._wake_send, self._wake_receive = trio.open_memory_channel[None](1)
        self._stopping = False
        self._watch_stop = trio.Event()
        self._ignored: set[str] = set()
        self._status = StatusFile(self.inbox, self.output)
        self._meters: dict[str, RateMeter] = {}
        self._snapshots: list[Snapshot] = []
        self._queued_lists = 0
        # Jobs the inbox failed: stem -> (not before this time, last delay).
        self._held_back: dict[str, tuple[float, float]] = {}

    # -- the tree ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            await trio.to_thread.run_sync(self._prepare_folders)
            async with self.fetcher, trio.open_nursery() as root:
                async with trio.open_nursery() as work:
                    intake = await work.start(self._intake_tree, work)
                    root.start_soon(self._signals, signals, work, intake)
                    root.start_soon(self._notifier.watchdog_loop)
                    root.start_soon(self._status_loop)
                    root.start_soon(self._notify_loop)
                    log.info(
                        "daemon_started", inbox=self.inbox.root, output=self.output, pid=os.getpid()
                    )
                    await self._notifier.ready(self._status_text())
                    task_status.started()
                root.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await self._write_status("stopped")
        log.info("daemon_stopped")
        self._notifier.close()

    def _prepare_folders(self) -> None:
        self.inbox.ensure_layout()
        os.makedirs(self.output, exist_ok=True)
        adopt_history(self._status)

    async def _intake_tree(
        self, work: trio.Nursery, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        # Jobs that an earlier run left in processing/ come first.
        self._queued.extend(await trio.to_thread.run_sync(self.inbox.leftovers))
        for claim in self._queued:
            log.info("job_resumed", job=claim.stem)
        async with trio.open_nursery() as intake:
            await intake.start(self._watch_loop)
            intake.start_soon(self._intake, work)
            task_status.started(intake.cancel_scope)

    async def _watch_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the watcher; start a new one when the inbox folder was recreated."""
        status = task_status
        while not self._stopping:
            self._watch_stop = trio.Event()
            try:
                await watch(
                    self.inbox.root,
                    self.poke,
                    source=self._source,
                    stop=self._watch_stop,
                    task_status=status,
                )
            except OSError as exc:
                # No inotify (watch limit reached, odd filesystem): the
                # rescans still find every list, only later.
                # (watch() reports itself started before it iterates, which is
                # where such errors surface.)
                log.error("watch_failed", inbox=self.inbox.root, detail=str(exc), fallback="rescan")
                await trio.sleep(self.settings.rescan_interval)
            except WatchBroken as exc:
                # A name the watcher cannot read; the daemon's scans can.
                log.warning(
                    "watch_failed", inbox=self.inbox.root, detail=str(exc), fallback="restart"
                )
                await trio.sleep(WATCH_RESTART_DELAY_S)
            status = trio.TASK_STATUS_IGNORED

    def poke(self) -> None:
        """Wake the intake: something may have changed."""
        try:
            self._wake_send.send_nowait(None)
        except trio.WouldBlock:
            pass  # a wake-up is already pending; one is enough

    # -- intake -----------------------------------------------------------

    async def _intake(self, work: trio.Nursery) -> None:
        tracker = SettleTracker(self.settings.settle)
        next_rescan = trio.current_time()
        while True:
            while self._queued:
                claim = self._queued.pop(0)
                token = object()
                await self._job_slots.acquire_on_behalf_of(token)
                work.start_soon(self._run_job, claim, token)
            now = trio.current_time()
            if now >= next_rescan:
                next_rescan = now + self.settings.rescan_interval
                # A daemon that shares this inbox may have died: its jobs are ours now.
                try:
                    leftovers = await trio.to_thread.run_sync(self.inbox.leftovers)
                except FileNotFoundError:
                    leftovers = []  # the scan below reports the missing folder and recreates it
                for claim in leftovers:
                    if not self._due(claim):
                        claim.release()
                        continue
                    log.info("job_resumed", job=claim.stem)
                    self._queued.append(claim)
                if self._queued:
                    continue
            await self._scan(tracker)
            for name in tracker.ready(trio.current_time()):
                # A list is claimed only once a job slot is free, so that
                # daemons sharing the inbox share its lists too.
                token = object()
                await self._job_slots.acquire_on_behalf_of(token)
                taken = await trio.to_thread.run_sync(self.inbox.claim, name)
                if taken is None:
                    # Taken by another daemon, or its stem is busy: a finished
                    # job or the next rescan wakes us to try again.
                    self._job_slots.release_on_behalf_of(token)
                    continue
                tracker.forget(name)
                log.info("list_claimed", job=taken.stem, file=name)
                work.start_soon(self._run_job, taken, token)
            wake_at = next_rescan
            deadline = tracker.next_deadline(trio.current_time())
            if deadline is not None:
                wake_at = min(wake_at, deadline)
            with trio.move_on_at(wake_at):
                await self._wake_receive.receive()

    async def _scan(self, tracker: SettleTracker) -> None:
        try:
            found, ignored = await trio.to_thread.run_sync(self.inbox.scan)
        except FileNotFoundError:
            try:
                await trio.to_thread.run_sync(self._prepare_folders)
            except (FileNotFoundError, FileExistsError) as exc:
                # Deleted again while we create it (an `rm -rf` still at work):
                # makedirs then fails either way. The next scan tries again.
                log.error("inbox_missing", inbox=self.inbox.root, action="retry", detail=str(exc))
                return
            log.error("inbox_missing", inbox=self.inbox.root, action="recreated")
            self._watch_stop.set()  # the watcher watched the old folder: start anew
            return
        for name in ignored:
            if name not in self._ignored:
                if len(self._ignored) >= MAX_IGNORED_REMEMBERED:
                    self._ignored.clear()
                self._ignored.add(name)
                log.info("file_ignored", file=name, reason="not a regular *.txt file")
        now, wall = trio.current_time(), time.time()
        for name, seen in found.items():
            tracker.observe(name, seen, now, wall - seen.mtime_ns / 1e9)
        tracker.forget_missing(set(found))
        self._queued_lists = len(found)

    # -- jobs -------------------------------------------------------------

    async def _run_job(self, claim: Claim, slot_token: object) -> None:
        paths = self.inbox.report_paths(claim.stem)
        report: JobReport | None = None
        tried = self._held_back.pop(claim.stem, None)
        try:
            report = JobReport(paths)
            job = Job.from_settings(
                self.settings,
                name=claim.stem,
                list_fd=claim.fd,
                output=self.output,
                fetcher=self.fetcher,
                report=report,
            )
            self.jobs[claim.stem] = job
            summary = await job.run()
            if summary.complete:
                report.close()
                await trio.to_thread.run_sync(
                    lambda: self.inbox.finish(claim, paths, failed=summary.failed)
                )
                log.info("job_finished", job=claim.stem, **summary.finished_fields())
                self._status.finished(claim.stem, summary.finished_fields())
            else:
                report.discard()
                log.info("job_interrupted", job=claim.stem, **summary.finished_fields())
        except JobError as exc:
            log.error("job_failed", job=claim.stem, reason=exc.reason, detail=str(exc))
            if report is not None:
                report.discard()
            await trio.to_thread.run_sync(lambda: self.inbox.fail(claim, paths))
        except OSError as exc:
            # The inbox itself failed us (full disk, folder removed): leave the
            # list where it is, so that a later rescan (or run) takes it again.
            log.error(
                "job_failed",
                job=claim.stem,
                reason="inbox_error",
                detail=f"{exc.strerror or exc} in {exc.filename or self.inbox.processing}",
                retry_s=self._hold_back(claim.stem, tried=tried),
            )
            if report is not None:
                report.discard()
        except Exception as exc:
            # A bug, met on this list. The list goes to failed/, so that a
            # restart does not meet it again (a crash loop); the daemon goes on.
            leaf = first_leaf(exc)
            log.error(
                "job_crashed",
                job=claim.stem,
                error=f"{type(leaf).__name__}: {leaf}",
                traceback="".join(traceback.format_exception(exc)),
            )
            if report is not None:
                report.discard()
            await trio.to_thread.run_sync(lambda: self.inbox.fail(claim, paths))
        except BaseException:
            # Cancelled (stop after grace, or a second signal). Plain syscalls:
            # they run inside the cancelled scope. The list stays in processing/.
            if report is not None:
                report.discard()
            raise
        finally:
            # The stem is let go only after the outcome is logged, so that no
            # daemon's `list_claimed` of the stem comes before our last word on it.
            claim.release()
            self.jobs.pop(claim.stem, None)
            self._job_slots.release_on_behalf_of(slot_token)
            self.poke()

    def _hold_back(self, stem: str, *, tried: tuple[float, float] | None) -> float:
        """Seconds before a job that the inbox failed is tried again; `tried`
        is what was held back of it before this run."""
        last = 0.0 if tried is None else tried[1]
        delay = min(max(2 * last, self.settings.rescan_interval), INBOX_RETRY_MAX_S)
        self._held_back[stem] = (trio.current_time() + delay, delay)
        return delay

    def _due(self, claim: Claim) -> bool:
        held = self._held_back.get(claim.stem)
        return held is None or trio.current_time() >= held[0]

    # -- signals and systemd ----------------------------------------------

    async def _signals(
        self, signals: AsyncIterator[int], work: trio.Nursery, intake: trio.CancelScope
    ) -> None:
        async for signum in signals:  # pragma: no branch
            if signum == signal.SIGHUP:
                await self._reload_config()
                continue
            name = signal.Signals(signum).name
            if self._stopping:
                log.warning("daemon_stop_now", signal=name)
                work.cancel_scope.cancel()
                continue
            self._stopping = True
            log.info(
                "daemon_stopping", signal=name, grace_s=self.settings.grace, jobs=len(self.jobs)
            )
            await self._notifier.stopping()
            self._watch_stop.set()
            intake.cancel()
            self.fetcher.stopping.set()
            work.cancel_scope.deadline = trio.current_time() + self.settings.grace

    async def _reload_config(self) -> None:
        if self._log_output is not None:
            self._log_output.reopen()
        if self._reload is None:
            return
        await self._notifier.reloading()
        try:
            new = self._reload()
            ensure_open_files(files_needed(new, jobs=new.max_jobs))
        except Exception as exc:  # a bad edit must not stop a running daemon
            log.error("config_reload_failed", detail=str(exc))
            await self._notifier.ready()
            return
        self.fetcher.set_limits(concurrency=new.concurrency, per_host=new.per_host)
        self._job_slots.total_tokens = new.max_jobs
        self.settings = self.settings.replace(
            concurrency=new.concurrency, per_host=new.per_host, max_jobs=new.max_jobs
        )
        log.info(
            "config_reloaded",
            concurrency=new.concurrency,
            per_host=new.per_host,
            max_jobs=new.max_jobs,
        )
        await self._notifier.ready()

    def _status_text(self) -> str:
        jobs = len(self.jobs)
        rate = sum(s.rate_img_s for s in self._snapshots)
        flight, queued = self.fetcher.in_flight, self._queued_lists
        return f"{jobs} jobs, {rate:.0f} img/s, {flight} in flight, {queued} queued"

    async def _write_status(self, state: str) -> None:
        now = trio.current_time()
        self._snapshots = [
            self._meters.setdefault(name, RateMeter(job.summary, now)).sample(now)
            for name, job in self.jobs.items()
        ]
        for gone in [name for name in self._meters if name not in self.jobs]:
            del self._meters[gone]
        metrics.recorder.gauges(
            jobs=len(self.jobs), queued=self._queued_lists, in_flight=self.fetcher.in_flight
        )
        try:
            await trio.to_thread.run_sync(
                lambda: self._status.write(
                    state=state,
                    jobs=self._snapshots,
                    in_flight=self.fetcher.in_flight,
                    queued=self._queued_lists,
                )
            )
        except OSError as exc:  # the inbox may be gone for a moment: the scan recreates it
            log.debug("status_write_failed", detail=str(exc))

    async def _status_loop(self) -> None:
        """The status file (for `imgdl-watch status`) and the metrics gauges."""
        while True:
            await self._write_status("running")
            await trio.sleep(STATUS_INTERVAL_S)

    async def _notify_loop(self) -> None:
        """systemd's STATUS= line, sent when it changes."""
        if not self._notifier.enabled:
            return
        while True:
            await trio.sleep(STATUS_INTERVAL_S)
            await self._notifier.status(self._status_text())
