"""The daemon's task tree.

    run()                                   one root nursery
    ├── _signals                            SIGTERM/SIGINT: stop; SIGHUP: reload
    ├── StatusReporter.run                  the status file, the metrics gauges, and
    │                                       systemd's STATUS= and WATCHDOG= (statusreport)
    ├── Hooks.run                           the operator's hooks, off the jobs' path (hooks)
    ├── Notifications.run                   --notify, through Apprise in a thread (notify)
    └── work nursery
        ├── Intake.run                      cancelled first on stop (intake)
        │   ├── the watch loop              watcher.watch pokes on inbox changes
        │   └── take                        scan -> settle -> claim -> start a job
        └── Jobs.run (at most max_jobs)     each list's job, with its own nursery of
                                            downloads, to its end in the inbox (jobs)

Stopping (first SIGTERM or SIGINT): the intake is cancelled, so no new list is
taken; `fetcher.stopping` is set, so no new download starts; in-flight
downloads get `grace` seconds, then the work nursery is cancelled. An
unfinished job stays in `processing/` for the next run. A second signal
cancels at once. All cleanup is plain system calls, which run even inside a
cancelled scope. Hooks and notifications live in the root nursery, so the
stop never waits for them: they are cancelled once the jobs have stopped
(`hooks` says what that does to a hook's process).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

import structlog
import trio

from ..config import Settings, check_categories, fetch_options
from ..download.fetcher import Fetcher
from ..download.hoststats import HostState
from ..download.prefork import Spare
from ..inbox.intake import Intake
from ..inbox.lifecycle import Claim, Inbox
from ..inbox.watcher import ChangeSource, watchfiles_source
from ..job.progress import JobSummary
from .events import Event
from .hooks import Hooks, commands_of
from .jobs import Jobs
from .logs import LogOutput
from .notify import Notifications, Target
from .openfiles import ensure_open_files, files_needed
from .sdnotify import Notifier
from .status import StatusFile, adopt_history
from .statusreport import StatusReporter

if TYPE_CHECKING:
    from ..job.archive import Archive

log = structlog.get_logger("imgdl_watch")

# The settings that SIGHUP applies to a running daemon.
RELOADED = (
    "concurrency",
    "per_host",
    "max_jobs",
    "rate_per_host",
    "min_gap",
    "max_rate",
    "hosts",
    "categories",
    "on_finished",
    "on_failed",
    "on_disk_full",
    "hook_timeout",
)
# What `config_not_reloaded` says of the settings a reload left as they were.
NOT_RELOADED = (
    "a reload does not change these; the running values stay until the daemon is"
    " restarted (systemctl restart imgdl-watch)"
)


def unreloaded(running: Settings, new: Settings) -> list[str]:
    """The settings that `new` changes and a reload does not apply (`RELOADED`), by name."""
    return sorted(
        f.name
        for f in dataclasses.fields(new)
        if f.name not in RELOADED and getattr(new, f.name) != getattr(running, f.name)
    )


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        change_source: ChangeSource | None = None,
        notifier: Notifier | None = None,
        reload: Callable[[], Settings] | None = None,
        log_output: LogOutput | None = None,
        notify: Sequence[Target] = (),
        archive: Archive | None = None,
        spares: Sequence[Spare] = (),
    ) -> None:
        """`spares`: the download workers forked at start-up (`prefork`)."""
        self.settings = settings
        self.inbox = Inbox(settings.inbox, categories=[c.name for c in settings.categories])
        self.output = os.path.abspath(settings.output)
        self._notifier = notifier or Notifier()
        self._reload = reload
        self._log_output = log_output
        self.fetcher = Fetcher(fetch_options(settings), spares=spares)
        self._job_slots = trio.CapacityLimiter(settings.max_jobs)
        self._stopping = False
        self.intake = Intake(
            self.inbox,
            source=change_source
            or watchfiles_source(
                rescan_interval_s=settings.rescan_interval,
                force_polling=settings.force_polling,
                also=self.inbox.category_folders,
            ),
            settle_s=settings.settle,
            rescan_interval_s=settings.rescan_interval,
            job_slots=self._job_slots,
            prepare_folders=self._prepare_folders,
        )
        self.reporter = StatusReporter(
            self,
            status=StatusFile(self.inbox, self.output),
            notifier=self._notifier,
            min_free=settings.min_free,
        )
        self.hooks = Hooks(commands_of(settings))
        self.notifications = Notifications(notify)
        self.jobs = Jobs(
            inbox=self.inbox,
            output=self.output,
            fetcher=self.fetcher,
            intake=self.intake,
            status=self.reporter.status,
            slots=self._job_slots,
            settings=lambda: self.settings,
            announce=self.announce,
            archive=archive,
        )

    # -- what the status reporter reads -----------------------------------

    @property
    def running(self) -> Mapping[str, JobSummary]:
        return {name: job.summary for name, job in self.jobs.running.items()}

    @property
    def waiting(self) -> int:
        return self.intake.waiting

    @property
    def in_flight(self) -> int:
        return self.fetcher.in_flight

    def hosts(self, count: int) -> list[HostState]:
        return self.fetcher.policy.states(count)

    @property
    def workers(self) -> tuple[int, int]:
        workers = self.fetcher.workers
        if workers is None:
            return 0, 0
        return sum(link.ready for link in workers.links), len(workers.links)

    # -- the tree ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            await trio.to_thread.run_sync(self._prepare_folders)
            async with self.fetcher, trio.open_nursery() as root:
                async with trio.open_nursery() as work:
                    intake = await work.start(self._run_intake, work)
                    root.start_soon(self._signals, signals, work, intake)
                    root.start_soon(self.reporter.run)
                    root.start_soon(self.hooks.run)
                    if self.notifications.enabled:
                        root.start_soon(self.notifications.run)
                    log.info(
                        "daemon_started", inbox=self.inbox.root, output=self.output, pid=os.getpid()
                    )
                    await self._notifier.ready(self.reporter.text())
                    task_status.started()
                root.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await self.reporter.write("stopped")
        log.info("daemon_stopped")
        self._notifier.close()

    def _prepare_folders(self) -> None:
        self.inbox.ensure_layout()
        os.makedirs(self.output, exist_ok=True)
        adopt_history(self.reporter.status)

    async def _run_intake(
        self, work: trio.Nursery, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """The intake, in a scope of its own: the stop cancels it first."""
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.intake.run, partial(self._start_job, work))
                task_status.started(scope)

    def _start_job(self, work: trio.Nursery, claim: Claim, slot_token: object) -> None:
        work.start_soon(self.jobs.run, claim, slot_token)

    def announce(self, event: Event) -> None:
        """Tell the hooks and the notifications (neither is awaited)."""
        self.hooks.fire(event)
        self.notifications.fire(event)

    # -- signals and reload -----------------------------------------------

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
                "daemon_stopping",
                signal=name,
                grace_s=self.settings.grace,
                jobs=len(self.jobs.running),
            )
            self.intake.stop()
            intake.cancel()
            self.fetcher.stop()
            work.cancel_scope.deadline = trio.current_time() + self.settings.grace
            self.reporter.stopping()
            await self._notifier.stopping()

    async def _reload_config(self) -> None:
        if self._log_output is not None:
            self._log_output.reopen()
        if self._reload is None:
            return
        await self._notifier.reloading()
        try:
            new = self._reload()
            ensure_open_files(files_needed(new, jobs=new.max_jobs))
            check_categories(
                self.settings.replace(
                    concurrency=new.concurrency,
                    per_host=new.per_host,
                    max_jobs=new.max_jobs,
                    categories=new.categories,
                )
            )
        except Exception as exc:  # a bad edit must not stop a running daemon
            log.error("config_reload_failed", detail=str(exc))
            await self._notifier.ready()
            return
        # Before the running settings take the new ones, which they keep out.
        kept = unreloaded(self.settings, new)
        self.fetcher.set_limits(concurrency=new.concurrency, per_host=new.per_host)
        self.fetcher.set_politeness(fetch_options(new))
        self._job_slots.total_tokens = new.max_jobs
        self.hooks.commands = commands_of(new)
        self.settings = self.settings.replace(**{k: getattr(new, k) for k in RELOADED})
        # New lists of a category follow its new settings; running jobs keep theirs.
        names = [c.name for c in new.categories]
        if tuple(sorted(names)) != self.inbox.categories:
            self.inbox.set_categories(names)
            try:
                await trio.to_thread.run_sync(self.inbox.ensure_layout)
            except OSError:
                pass  # the next scan finds the folders missing, and makes them
            self.intake.rewatch()  # a watcher of the new folders too
        log.info(
            "config_reloaded",
            concurrency=new.concurrency,
            per_host=new.per_host,
            max_jobs=new.max_jobs,
            rate_per_host=new.rate_per_host,
            min_gap_s=new.min_gap,
            max_rate=new.max_rate,
            hosts=len(new.hosts.rules),
            categories=names,
        )
        if kept:
            # Said, not dropped without a word: an operator must not believe
            # `block_private` on, say, when it is not.
            log.warning("config_not_reloaded", settings=kept, detail=NOT_RELOADED)
        await self._notifier.ready()
