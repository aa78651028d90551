"""Feeding a job's workers: its list read, classified, and handed over item by item.

    read        the list in batches, parsed in a worker thread (the first
                batch small, so that the first download starts at once)
    classify    invalid lines, duplicates and images the folder has already
                get their outcome here; what is left is work (with its
                archived file, if `--archive` knows the URL: looked up in
                the same thread hop as the parsing, one query per batch)
    hand over   one item at a time, to a worker that is free, hiring one more
                when none is (up to the job's limit)
    set aside   an item whose host is busy (`busy(host)`: its every slot taken,
                as a paced or paused host's soon are) waits here, not in a
                worker, until its host has room: so one slow host does not
                take every worker of a list that mixes it with fast ones

At most two batches of work are in memory, whatever the length of the list,
and `SET_ASIDE_MAX` items set aside: past that, the oldest is handed over
(a worker then waits for its host), so memory stays bounded whatever the list.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice

import httpx
import trio

from ..errors import JobError
from . import listformat
from .archive import Archive, ArchivedFile
from .archive import failed as archive_failed
from .dedupe import Dedupe
from .folder import existing_file
from .listformat import ListFormat
from .listparse import InvalidLine, ListedUrl
from .outcomes import Outcomes
from .rows import ListError, Row

# Entries parsed per hop to a worker thread: the hop costs ~100 µs, parsing
# an entry 2-20 µs (it is validated as a URL), so a batch amortises the hop.
# The first batch is small, so that the first download starts within a
# millisecond or two; each next one doubles, up to the largest.
FIRST_PARSE_BATCH = 32
PARSE_BATCH = 1024
# Items of busy hosts kept aside at most (~200 bytes each).
SET_ASIDE_MAX = 4096


def _never_busy(host: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Work:
    """A URL of the list to download, and the name it wants."""

    line: int
    url: str
    name: str
    # As httpx parsed it, if the reader did (see `listparse.ListedUrl`).
    parsed: httpx.URL | None
    # Its host, which the busy check keys on.
    host: str
    # The URL's file in the archive, to reuse rather than download.
    archived: ArchivedFile | None = None
    # Its row in a structured list, with its data; None for a txt list.
    row: Row | None = None


def read_entries(
    list_fd: int, fmt: ListFormat | None = None, *, url_column: str | None = None
) -> Iterator[ListedUrl | InvalidLine]:
    """The list open at `list_fd`, from its start, parsed as it is read."""
    return listformat.read_entries(list_fd, fmt or ListFormat(), url_column=url_column)


_Batch = list[ListedUrl | InvalidLine]


@dataclass(frozen=True, slots=True)
class _Named:
    """What the reader found of one URL: its name, and its file if the folder has it."""

    name: str
    existing: str | None
    # Its file in the archive (`--archive`), if the folder has none.
    archived: ArchivedFile | None = None


def _take(
    entries: Iterator[ListedUrl | InvalidLine],
    count: int,
    dedupe: Dedupe,
    folder_fd: int,
    archive: Archive | None,
    *,
    folder_empty: bool = False,
) -> tuple[_Batch, list[_Named | None]]:
    """The next `count` entries, and for each URL among them its name and
    existing file (None: a duplicate), or its archived one. Blocking, in the
    reader's thread: de-duplication may ask its disk state, the folder is
    asked by `stat` (unless it was empty when the job began), and the
    archive by one query for the batch."""
    batch = list(islice(entries, count))
    urls = [e.url for e in batch if isinstance(e, ListedUrl)]
    names = dedupe.classify(urls)
    if folder_empty:
        named = [None if name is None else _Named(name, None) for name in names]
    else:
        named = [
            None if name is None else _Named(name, existing_file(folder_fd, name)) for name in names
        ]
    if archive is None:
        return batch, named
    wanted = [url for url, n in zip(urls, named, strict=True) if n is not None and not n.existing]
    try:
        archived = archive.look_up(wanted) if wanted else {}
    except sqlite3.Error as exc:
        archive_failed("look_up", exc)
        return batch, named
    return batch, [
        _Named(n.name, None, archived[url]) if n is not None and url in archived else n
        for url, n in zip(urls, named, strict=True)
    ]


class Feed:
    """A job's list on its way to the workers (see the module's notes)."""

    def __init__(
        self,
        list_fd: int,
        *,
        outcomes: Outcomes,
        folder_fd: int,
        stopping: trio.Event,
        archive: Archive | None = None,
        busy: Callable[[str], bool] = _never_busy,
        room: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint,
        fmt: ListFormat | None = None,
        url_column: str | None = None,
        folder_empty: bool = False,
    ) -> None:
        self._list_fd = list_fd
        self._format = fmt or ListFormat()
        self._url_column = url_column
        # The job folder: asked for what it has already, and where the
        # de-duplication state goes when a list is too long for memory.
        self._folder_fd = folder_fd
        # A folder that was empty when the job began holds no image of this
        # list but those its own downloads put there, under names given once
        # each: so no name is looked for in it (a `stat` a URL, a quarter of
        # the reader's time on a new job; `benchmarks/lines_probe.py --reader`
        # measures it again). A name taken meanwhile all the same (a
        # look-alike's file) is still never replaced: its download is skipped.
        self._folder_empty = folder_empty
        # Whether a download of a host would wait for one of its slots now.
        self._busy = busy
        # Returns once some host may have room again (a slot was given back).
        self._room = room
        # Items of busy hosts, by host, in list order; hosts in order of arrival.
        self._aside: dict[str, deque[Work]] = {}
        self._aside_count = 0
        self._outcomes = outcomes
        self._stopping = stopping
        self._archive = archive
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
                            for earlier in self._ready_aside():
                                await self._hand_over(send, earlier, hire)
                            if self._set_aside(item):
                                if (oldest := self._overflow()) is not None:
                                    await self._hand_over(send, oldest, hire)
                                continue
                            await self._hand_over(send, item, hire)
                    # The list is read: what is left aside goes as its host has room.
                    while self._aside:
                        if self._stopping.is_set():
                            self.stopped_early = True
                            return
                        ready = self._ready_aside()
                        if not ready:
                            await self._room()
                        for left in ready:
                            await self._hand_over(send, left, hire)

    @staticmethod
    async def _hand_over(
        send: trio.MemorySendChannel[Work], item: Work, hire: Callable[[], None]
    ) -> None:
        try:
            send.send_nowait(item)  # to a worker waiting for one
        except trio.WouldBlock:
            hire()
            await send.send(item)

    def _set_aside(self, item: Work) -> bool:
        """Keep `item` aside if its host is busy (or has items aside already, to keep
        their order)."""
        host = item.host
        waiting = self._aside.get(host)
        if waiting is None and not self._busy(host):
            return False
        if waiting is None:
            waiting = self._aside[host] = deque()
        waiting.append(item)
        self._aside_count += 1
        return True

    def _overflow(self) -> Work | None:
        """Past `SET_ASIDE_MAX`, the oldest item aside, to be handed over all the same."""
        if self._aside_count <= SET_ASIDE_MAX:
            return None
        return self._take_aside(next(iter(self._aside)))

    def _ready_aside(self) -> list[Work]:
        """The first item aside of each host that has room now."""
        if not self._aside:
            return []
        return [self._take_aside(h) for h in [h for h in self._aside if not self._busy(h)]]

    def _take_aside(self, host: str) -> Work:
        waiting = self._aside[host]
        item = waiting.popleft()
        if not waiting:
            del self._aside[host]
        self._aside_count -= 1
        return item

    async def _read(self, batches: trio.MemorySendChannel[list[Work]]) -> None:
        """Parse and classify the list in batches, the first one small."""
        dedupe = Dedupe(spill_dir_fd=self._folder_fd)
        try:
            await self._read_with(dedupe, batches)
        finally:
            dedupe.close()

    async def _read_with(self, dedupe: Dedupe, batches: trio.MemorySendChannel[list[Work]]) -> None:
        async with batches:
            try:
                entries = read_entries(self._list_fd, self._format, url_column=self._url_column)
            except OSError as exc:
                self.error = JobError("list_unreadable", exc.strerror or str(exc))
                return
            size = FIRST_PARSE_BATCH
            while not self._stopping.is_set():
                try:
                    batch, names = await trio.to_thread.run_sync(
                        partial(
                            _take,
                            entries,
                            size,
                            dedupe,
                            self._folder_fd,
                            self._archive,
                            folder_empty=self._folder_empty,
                        )
                    )
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
                await batches.send(self._classify(batch, names))
            self.stopped_early = True

    def _classify(self, batch: _Batch, names: list[_Named | None]) -> list[Work]:
        """Settle what needs no download; return what does. `names`: one per
        URL of the batch, in order (None: a duplicate)."""
        outcomes = self._outcomes
        work = []
        named = iter(names)
        for entry in batch:
            if isinstance(entry, InvalidLine):
                outcomes.invalid(entry)
            elif (found := next(named)) is None:
                outcomes.duplicate(entry)
            else:
                outcomes.summary.found += 1
                if found.existing is not None:
                    outcomes.skipped(entry, found.existing)
                else:
                    work.append(
                        Work(
                            entry.line,
                            entry.url,
                            found.name,
                            entry.parsed,
                            entry.host,
                            archived=found.archived,
                            row=entry.row,
                        )
                    )
        return work
