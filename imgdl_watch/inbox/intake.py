"""The intake: which lists to take, and when.

    watch loop      watchfiles pokes on changes; a watcher that broke, or that
                    watched a folder since deleted, is replaced
    scan            the inbox folder itself, at each poke and every
                    `rescan_interval` (events can be missed)
    settle          a list is taken once unchanged for `settle` seconds
                    (`SettleTracker`)
    claim           only with a free job slot, so that daemons sharing the
                    inbox share its lists (`Inbox.claim`)
    resume          jobs left in processing/ by a daemon that is gone come first
    hold back       a job the inbox failed (its disk full) waits, twice as
                    long each time
    ignored names   reported once each (`file_ignored`)

The intake hands each claim to `start(claim, token)` with the job slot it
holds for it; whoever runs the job gives the slot back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from .lifecycle import STRANDED, Claim, Inbox, PlantedFolder
from .settle import SettleTracker
from .watcher import ChangeSource, WatchBroken, watch

# Names reported by `file_ignored` are remembered so each is reported once;
# past this many, the memory is cleared rather than grown.
MAX_IGNORED_REMEMBERED = 10_000
# Seconds before a watcher that stopped on its own is replaced: the intake
# was poked to scan at once, and this keeps a stream of unreadable names from
# spinning the loop.
WATCH_RESTART_DELAY_S = 0.1
# A job that the inbox failed (its disk full, say) stays in processing/ and is
# tried again at a rescan: first at the next one, then after twice as long
# each time, up to this many seconds. So a disk that stays full costs a re-run
# of the list (and its log lines) every few minutes, not every few seconds.
INBOX_RETRY_MAX_S = 300.0

log = structlog.get_logger("imgdl_watch")

StartJob = Callable[[Claim, object], None]


class HoldBack:
    """Jobs the inbox failed, and when each may be tried again (the caller gives the time)."""

    __slots__ = ("_first_s", "_held")

    def __init__(self, *, first_s: float) -> None:
        self._first_s = first_s
        # stem -> (not before this time, the delay that led to it)
        self._held: dict[str, tuple[float, float]] = {}

    def started(self, stem: str) -> float:
        """A job of `stem` starts: the delay it was held back by last (0: none)."""
        held = self._held.pop(stem, None)
        return 0.0 if held is None else held[1]

    def failed(self, stem: str, *, last: float, now: float) -> float:
        """The inbox failed the job again: seconds to hold it back now."""
        delay = min(max(2 * last, self._first_s), INBOX_RETRY_MAX_S)
        self._held[stem] = (now + delay, delay)
        return delay

    def due(self, stem: str, now: float) -> bool:
        held = self._held.get(stem)
        return held is None or now >= held[0]


class Intake:
    """Scan, settle and claim lists, and start a job for each (see the module's notes)."""

    def __init__(
        self,
        inbox: Inbox,
        *,
        source: ChangeSource,
        settle_s: float,
        rescan_interval_s: float,
        job_slots: trio.CapacityLimiter,
        prepare_folders: Callable[[], None],
    ) -> None:
        self.inbox = inbox
        self._source = source
        self._tracker = SettleTracker(settle_s)
        self._rescan_s = rescan_interval_s
        self._job_slots = job_slots
        # Makes the inbox's folders again when they were deleted.
        self._prepare_folders = prepare_folders
        self.hold_back = HoldBack(first_s=rescan_interval_s)
        self._queued: list[Claim] = []
        self._wake_send, self._wake_receive = trio.open_memory_channel[None](1)
        self._watch_stop = trio.Event()
        self._stopped = False
        self._ignored: set[str] = set()
        # The planted folder that the last scan found, said once.
        self._planted: str | None = None
        # Lists the last scan found in the inbox, waiting to be taken.
        self.waiting = 0

    def poke(self) -> None:
        """Wake the intake: something may have changed."""
        try:
            self._wake_send.send_nowait(None)
        except trio.WouldBlock:
            pass  # a wake-up is already pending; one is enough

    def rewatch(self) -> None:
        """Start a new watcher: the folders to watch changed (a reload's categories)."""
        self._watch_stop.set()

    def stop(self) -> None:
        """No more watching (cancel the intake's tasks after this)."""
        self._stopped = True
        self._watch_stop.set()

    async def run(
        self, start: StartJob, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Resume leftovers, watch and take lists until cancelled. Started once
        leftovers are queued and the inbox is watched."""
        # Jobs that an earlier run left in processing/ come first.
        self._queued.extend(await trio.to_thread.run_sync(self.inbox.leftovers))
        for claim in self._queued:
            log.info("job_resumed", job=claim.job)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._watch_loop)
            nursery.start_soon(self._take, start)
            task_status.started()

    async def _watch_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the watcher; start a new one when the inbox folder was recreated,
        or when it stopped on its own, and say so (`watch_restarted`)."""
        status = task_status
        restarted: Callable[[], None] | None = None
        while not self._stopped:
            self._watch_stop = trio.Event()
            try:
                await watch(
                    self.inbox.root,
                    self.poke,
                    source=self._source,
                    stop=self._watch_stop,
                    on_watching=restarted,
                    task_status=status,
                )
            except OSError as exc:
                # No inotify (watch limit reached, odd filesystem): the
                # rescans still find every list, only later.
                # (watch() reports itself started before it iterates, which is
                # where such errors surface.)
                log.error("watch_failed", inbox=self.inbox.root, detail=str(exc), fallback="rescan")
                await trio.sleep(self._rescan_s)
            except WatchBroken as exc:
                # A name the watcher cannot read; the scans can.
                log.warning(
                    "watch_failed", inbox=self.inbox.root, detail=str(exc), fallback="restart"
                )
                await trio.sleep(WATCH_RESTART_DELAY_S)
            status = trio.TASK_STATUS_IGNORED
            restarted = self._watching_again

    def _watching_again(self) -> None:
        log.info("watch_restarted", inbox=self.inbox.root)
        # A list dropped while no watcher ran was seen by none: scan now,
        # rather than at the next rescan.
        self.poke()

    async def _take(self, start: StartJob) -> None:
        next_rescan = trio.current_time()
        while True:
            while self._queued:
                await self._start(start, self._queued.pop(0))
            now = trio.current_time()
            if now >= next_rescan:
                next_rescan = now + self._rescan_s
                await self._resume_orphans()
                if self._queued:
                    continue
            await self._scan()
            for name in self._tracker.ready(trio.current_time()):
                await self._claim(start, name)
            wake_at = next_rescan
            deadline = self._tracker.next_deadline(trio.current_time())
            if deadline is not None:
                wake_at = min(wake_at, deadline)
            with trio.move_on_at(wake_at):
                await self._wake_receive.receive()

    async def _start(self, start: StartJob, claim: Claim) -> None:
        token = object()
        await self._job_slots.acquire_on_behalf_of(token)
        start(claim, token)

    async def _resume_orphans(self) -> None:
        """A daemon that shares this inbox may have died: its jobs are ours now."""
        try:
            leftovers = await trio.to_thread.run_sync(self.inbox.leftovers)
        except FileNotFoundError:
            return  # the scan reports the missing folder and recreates it
        now = trio.current_time()
        for claim in leftovers:
            if not self.hold_back.due(claim.job, now):
                claim.release()
                continue
            log.info("job_resumed", job=claim.job)
            self._queued.append(claim)

    async def _claim(self, start: StartJob, name: str) -> None:
        # A list is claimed only once a job slot is free, so that daemons
        # sharing the inbox share its lists too.
        token = object()
        await self._job_slots.acquire_on_behalf_of(token)
        taken = await trio.to_thread.run_sync(self.inbox.claim, name)
        if taken is None:
            # Taken by another daemon, or its stem is busy: a finished job or
            # the next rescan wakes us to try again.
            self._job_slots.release_on_behalf_of(token)
            return
        self._tracker.forget(name)
        log.info("list_claimed", job=taken.job, file=name)
        start(taken, token)

    async def _scan(self) -> None:
        try:
            found, ignored = await trio.to_thread.run_sync(self.inbox.scan)
        except PlantedFolder as exc:
            # Said once, not at every scan: it stays until someone moves it.
            if exc.filename != self._planted:
                self._planted = exc.filename
                log.error("inbox_unusable", folder=exc.filename, reason=exc.strerror)
            return
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
        self._planted = None
        self._report_ignored(ignored)
        now, wall = trio.current_time(), time.time()
        for name, seen in found.items():
            self._tracker.observe(name, seen, now, wall - seen.mtime_ns / 1e9)
        self._tracker.forget_missing(set(found))
        self.waiting = len(found)

    def _report_ignored(self, entries: list[tuple[str, str]]) -> None:
        for name, reason in entries:
            if name not in self._ignored:
                if len(self._ignored) >= MAX_IGNORED_REMEMBERED:
                    self._ignored.clear()
                self._ignored.add(name)
                if reason == STRANDED:  # a job nobody will resume: a warning
                    log.warning("job_stranded", file=name, reason=reason)
                else:
                    log.info("file_ignored", file=name, reason=reason)
