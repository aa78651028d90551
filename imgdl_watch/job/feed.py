"""Feeding a job's workers: its list read, classified, and handed over item by item.

    read        the list in batches, parsed in a worker thread (the first
                batch small, so that the first download starts at once)
    classify    invalid lines, duplicates and images the folder has already
                get their outcome here; what is left is work
    hand over   one item at a time, to a worker that is free, hiring one more
                when none is (up to the job's limit)

At most two batches of work are in memory, whatever the length of the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import httpx
import trio

from ..errors import JobError
from . import listformat
from .dedupe import Dedupe
from .listformat import ListFormat
from .listparse import InvalidLine, ListedUrl
from .outcomes import Outcomes
from .rows import ListError, Row

# Entries parsed per hop to a worker thread: the hop costs ~100 µs, parsing
# an entry ~20 µs (it is validated as a URL), so a batch amortises the hop.
# The first batch is small, so that the first download starts within a
# millisecond or two; each next one doubles, up to the largest.
FIRST_PARSE_BATCH = 32
PARSE_BATCH = 1024


@dataclass(frozen=True, slots=True)
class Work:
    """A URL of the list to download, and the name it wants."""

    line: int
    url: str
    name: str
    parsed: httpx.URL
    # Its row in a structured list, with its data; None for a txt list.
    row: Row | None = None


def read_entries(
    list_fd: int, fmt: ListFormat | None = None, *, url_column: str | None = None
) -> Iterator[ListedUrl | InvalidLine]:
    """The list open at `list_fd`, from its start, parsed as it is read."""
    return listformat.read_entries(list_fd, fmt or ListFormat(), url_column=url_column)


def _take(entries: Iterator[ListedUrl | InvalidLine], count: int) -> list[ListedUrl | InvalidLine]:
    return list(islice(entries, count))


class Feed:
    """A job's list on its way to the workers (see the module's notes)."""

    def __init__(
        self,
        list_fd: int,
        *,
        outcomes: Outcomes,
        existing: Callable[[str], str | None],
        stopping: trio.Event,
        fmt: ListFormat | None = None,
        url_column: str | None = None,
    ) -> None:
        self._list_fd = list_fd
        self._format = fmt or ListFormat()
        self._url_column = url_column
        self._outcomes = outcomes
        # The name of the file a download of this name left in the folder, if any.
        self._existing = existing
        self._stopping = stopping
        # Cancelled by a worker that met the stop: nothing more is handed over.
        self.scope = trio.CancelScope()
        self.stopped_early = False
        # A failure of the list itself. Kept here rather than raised, so that
        # it does not reach the job wrapped in the nursery's ExceptionGroup.
        self.error: JobError | None = None

    async def run(self, send: trio.MemorySendChannel[Work], hire: Callable[[], None]) -> None:
        """Hand every item to a worker, one batch behind the reader; `hire()`
        when an item finds no worker free (the job decides whether it may)."""
        batches_send, batches_receive = trio.open_memory_channel[list[Work]](1)
        with self.scope:
            async with send, trio.open_nursery() as nursery:
                nursery.start_soon(self._read, batches_send)
                async with batches_receive:
                    async for work in batches_receive:
                        for item in work:
                            if self._stopping.is_set():
                                self.stopped_early = True
                                nursery.cancel_scope.cancel()
                                return
                            try:
                                send.send_nowait(item)  # to a worker waiting for one
                            except trio.WouldBlock:
                                hire()
                                await send.send(item)

    async def _read(self, batches: trio.MemorySendChannel[list[Work]]) -> None:
        """Parse and classify the list in batches, the first one small."""
        dedupe = Dedupe()
        async with batches:
            try:
                entries = read_entries(self._list_fd, self._format, url_column=self._url_column)
            except OSError as exc:
                self.error = JobError("list_unreadable", exc.strerror or str(exc))
                return
            size = FIRST_PARSE_BATCH
            while not self._stopping.is_set():
                try:
                    batch = await trio.to_thread.run_sync(_take, entries, size)
                except OSError as exc:
                    self.error = JobError("list_unreadable", exc.strerror or str(exc))
                    return
                except ListError as exc:
                    self.error = JobError("bad_header", str(exc))
                    return
                if not batch:
                    self._outcomes.summary.listed = True
                    return
                size = min(size * 2, PARSE_BATCH)
                await batches.send(self._classify(batch, dedupe))
            self.stopped_early = True

    def _classify(self, batch: list[ListedUrl | InvalidLine], dedupe: Dedupe) -> list[Work]:
        """Settle what needs no download; return what does."""
        outcomes = self._outcomes
        work = []
        for entry in batch:
            if isinstance(entry, InvalidLine):
                outcomes.invalid(entry)
            elif not dedupe.first_time(entry.url):
                outcomes.duplicate(entry)
            else:
                outcomes.summary.found += 1
                name = dedupe.name_for(entry.url)
                existing = self._existing(name)
                if existing is not None:
                    outcomes.skipped(entry, existing)
                else:
                    work.append(Work(entry.line, entry.url, name, entry.parsed, entry.row))
        return work
