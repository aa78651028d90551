"""A job's crew: the worker tasks that take each item from the feed to its outcome.

Workers are hired as the feed finds none free, two per download slot at
most (`WORKERS_PER_SLOT`): a list of three URLs costs three tasks, not
2 x --concurrency (a flood of small lists runs --max-jobs at a time, and each
idle task costs ~4 KB). Each worker reuses the item from the archive when it
can, waits for room on the disk, downloads, and hands the outcome to
`outcomes`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio

from .. import errors as err
from ..download.fetcher import Fetcher
from ..download.rules import DownloadRules
from ..redact import log_url
from .feed import Feed, Work
from .folder import DiskSpace
from .outcomes import Outcomes

if TYPE_CHECKING:
    from .archive import ArchiveLog

log = structlog.get_logger("imgdl_watch")

# Worker tasks per download slot: while one writes its finished file to disk
# (fdatasync can take milliseconds), the other already uses the slot for the
# next download. With one, a slow disk left slots idle: the latency set's
# warm-daemon row of `make bench ARGS="--skip-mix --lines 0"` took 15% longer
# with this at 1 (measure it again against 2 in one run, as a ratio). More
# buy the static set a few percent of wall for a body's memory each a slot
# (benchmarks/README.md, "Durability"; `python -m benchmarks.trees` compares
# trees that differ only here).
WORKERS_PER_SLOT = 2


class Crew:
    """The workers of one job, in its folder `dir_fd`."""

    def __init__(
        self,
        *,
        fetcher: Fetcher,
        dir_fd: int,
        outcomes: Outcomes,
        space: DiskSpace,
        rules: DownloadRules | None,
        archive_log: ArchiveLog | None,
        slots: Callable[[], int],
    ) -> None:
        self._fetcher = fetcher
        self._dir_fd = dir_fd
        self._outcomes = outcomes
        self._space = space
        self._rules = rules
        self._archive_log = archive_log
        # Download slots the job may fill now (a reload may change it).
        self._slots = slots
        self.hired = 0
        # Set when a worker met the fetcher stopping: the list is not done.
        self.stopped_early = False

    async def run(self, feed: Feed) -> None:
        """Work through everything `feed` hands over, until it is done."""
        # No buffer: an item passes only from the feed's hand to a worker's,
        # so the feed knows when no worker is free.
        send, receive = trio.open_memory_channel[Work](0)
        async with receive, trio.open_nursery() as crew:

            def hire() -> None:
                if self.hired < max(1, self._slots()) * WORKERS_PER_SLOT:
                    self.hired += 1
                    crew.start_soon(self._work, feed, receive.clone())

            crew.start_soon(feed.run, send, hire)

    def _crashed(self, item: Work, failure: err.InternalError) -> None:
        """A bug of ours met on this URL (a header no one foresaw, say): this
        URL fails, with its traceback logged, and the job goes on, rather than
        the whole list failing with `job_crashed`."""
        bug = failure.__cause__ or failure
        where = "".join(traceback.format_exception(bug))
        # A worker's bug: where it raised it, in the worker, too.
        remote = getattr(bug, "remote_traceback", "")
        if remote:
            where += f"\nIn the download worker:\n{remote}"
        log.error("download_crashed", url=log_url(item.url), error=str(failure), traceback=where)
        self._outcomes.failed(item, failure)

    async def _work(self, feed: Feed, receive: trio.MemoryReceiveChannel[Work]) -> None:
        async with receive:
            async for item in receive:
                if not await self._one(item):
                    # The fetcher is stopping. The feed may be waiting to hand
                    # over an item that no worker will take.
                    self.stopped_early = True
                    feed.scope.cancel()
                    return

    async def _one(self, item: Work) -> bool:
        """Bring `item` to its outcome; False when the fetcher stopped it."""
        outcomes, archive_log = self._outcomes, self._archive_log
        if item.archived is not None and archive_log is not None:
            rules = self._rules or self._fetcher.rules
            got = await archive_log.reuse(
                item.url, item.archived, self._dir_fd, item.name, rules=rules.body
            )
            if got is not None:
                outcomes.reused(item, got)
                return True
        try:
            await self._space.wait()
            result = await self._fetcher.download(
                item.url, dir_fd=self._dir_fd, name=item.name, parsed=item.parsed, rules=self._rules
            )
        except err.Interrupted:
            return False
        except err.InternalError as exc:
            self._crashed(item, exc)
            return True
        except err.DownloadError as exc:
            outcomes.failed(item, exc)
            if isinstance(exc, err.DiskFull):
                self._space.full()
            return True
        except err.AlreadyThere as there:  # a look-alike's file, left as it is
            outcomes.skipped(item, there.file)
            return True
        except err.Filtered as exc:
            outcomes.filtered(item, exc)
            return True
        except Exception as exc:  # a bug outside the download (the archive's, say)
            self._crashed(item, err.InternalError.of(exc))
            return True
        outcomes.ok(item, result)
        if archive_log is not None and result.sha256:
            archive_log.downloaded(item.url, result.file, result.sha256, result.bytes)
        return True
