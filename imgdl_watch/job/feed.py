"""Feeding a job's workers: its list read, classified, and handed over item by item.

    read        the list in batches, parsed in a worker thread (the first
                batch small, so that the first download starts at once)
    classify    invalid lines, duplicates and images the folder has already
                get their outcome here; what is left is work (with its
                archived file, if `--archive` knows the URL: looked up in
                the same thread hop as the parsing, one query per batch)
    queue       the work waits in a queue per host, a batch at a time while
                fewer than `READ_AHEAD` items are queued (more while every
                queued host is busy, up to `QUEUED_MAX`)
    hand over   one item at a time, to a worker that is free (hiring one more
                when none is, up to the job's limit), taken from the hosts in
                turn: each host that is not busy (`busy(host)`: its every
                slot taken, as a paced or paused host's soon are) gives its
                oldest item, then the next host does. So a host with few URLs
                spread through a long list (a slow or stalling one) starts
                them as soon as the others do, rather than when the list
                reaches them, and one slow host does not take every worker
                of a list that mixes it with fast ones.

Within a host, items go in list order; names are given in list order by
the reader whatever the order they are downloaded in. The queues take a
reader's batch (up to `PARSE_BATCH`) at a time, so they hold at most
`QUEUED_MAX` items and one batch more, and two batches are in the reader's
hands, whatever the length of the list: past `QUEUED_MAX` with every
queued host busy, the oldest item of the first host in turn is handed over
all the same (a worker then waits for its host), so memory stays bounded.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, NamedTuple

import httpx
import trio

from ..errors import JobError
from ..naming import wide_name
from . import listformat
from .dedupe import Dedupe
from .folder import existing_file
from .listformat import ListFormat
from .listparse import InvalidLine, ListedUrl
from .namestore import ScratchError
from .outcomes import Outcomes
from .rows import ListError, Row

if TYPE_CHECKING:
    from .archive import Archive, ArchivedFile

# Entries parsed per hop to a worker thread: the hop costs ~100 µs, parsing
# an entry 2-20 µs (it is validated as a URL), so a batch amortises the hop.
# The first batch is small, so that the first download starts within a
# millisecond or two; each next one doubles, up to the largest.
FIRST_PARSE_BATCH = 32
PARSE_BATCH = 1024
# Items queued before the feed hands any over while the reader has more
# ready: the hosts it takes turns between are those of this many items. On
# the mix set of `make bench` (24 hosts, one that stalls), list order
# started the stalling host's last URL ~2 s in, as the list reached it;
# taking turns between the hosts of the first 1024 items starts all 8 of
# them within ~0.3 s of the first (their first timeouts in a `fetch
# --log-level debug` of the mix, 2026-12-02; `benchmarks/README.md`, "The
# mix set").
READ_AHEAD = 1024
# Items queued at most (~200 bytes each) while every queued host is busy,
# and one reader's batch more.
QUEUED_MAX = 4096


def _never_busy(host: str) -> bool:
    return False


# Not frozen: one is made for each URL to download, and a frozen
# dataclass's `__init__` costs ~1 µs more (see `listparse.ListedUrl`).
@dataclass(slots=True)
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

# A list past `dedupe.MEMORY_URLS` keeps what it gave out in the job folder.
SCRATCH_FAILED = "cannot write the de-duplication's scratch file in the job folder"


class _Named(NamedTuple):
    """What the reader found of a batch's URLs, one place each in `names`."""

    # Its name, or None for a duplicate. A list of strings, not an object a
    # URL: nearly every URL has nothing more (~0.35 µs a URL saved).
    names: list[str | None]
    # By place: the file the folder has under that name already.
    existing: dict[int, str]
    # By place: its file in the archive (`--archive`), if the folder has none.
    archived: dict[int, ArchivedFile]


def _take(
    entries: Iterator[ListedUrl | InvalidLine],
    count: int,
    dedupe: Dedupe,
    folder_fd: int,
    archive: Archive | None,
    *,
    folder_empty: bool = False,
) -> tuple[_Batch, _Named]:
    """The next `count` entries, and for each URL among them its name and
    existing file (None: a duplicate), or its archived one. Blocking, in the
    reader's thread: de-duplication may ask its disk state, the folder is
    asked by `stat` (unless it was empty when the job began), and the
    archive by one query for the batch."""
    batch = list(islice(entries, count))
    listed = [e for e in batch if isinstance(e, ListedUrl)]
    urls = [e.url for e in listed]
    names = dedupe.classify(urls, [e.base for e in listed])
    existing: dict[int, str] = {}
    if not folder_empty:
        for at, name in enumerate(names):
            if name is None:
                continue
            found, another = existing_file(folder_fd, name, urls[at])
            if found is None:
                continue
            if another:
                # Another URL's image (an earlier list of the same name's):
                # this URL takes the wide hash of its URL, which no other URL
                # of this list is given (the de-duplication gives this URL
                # no other name, and a look-alike's short hash could clash).
                alias = names[at] = wide_name(name, urls[at])
                # (Its own file, from a run before; or, for a list built to
                # clash, another's: left as it is, as any name taken.)
                if (found := existing_file(folder_fd, alias, urls[at])[0]) is None:
                    continue
            existing[at] = found
    named = _Named(names, existing, {})
    if archive is None:
        return batch, named
    wanted = [
        url
        for at, (url, name) in enumerate(zip(urls, names, strict=True))
        if name is not None and at not in existing
    ]
    archived = archive.look_up_or_nothing(wanted) if wanted else {}
    for at, (url, name) in enumerate(zip(urls, names, strict=True)):
        if name is not None and at not in existing and url in archived:
            named.archived[at] = archived[url]
    return batch, named


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
        # look-alike's file) is still never replaced: the download takes its
        # wide-hash name (`FileSink.rename`).
        self._folder_empty = folder_empty
        # Whether a download of a host would wait for one of its slots now.
        self._busy = busy
        # Returns once some host may have room again (a slot was given back).
        self._room = room
        # The items waiting, by host, in list order; the hosts in turn.
        self._queues: dict[str, deque[Work]] = {}
        self._turns: deque[str] = deque()
        self._queued = 0
        self._outcomes = outcomes
        self._stopping = stopping
        self._archive = archive
        # Cancelled by a worker that met the stop: nothing more is handed over.
        self.scope = trio.CancelScope()
        self.stopped_early = False
        # A failure of the list itself. Kept here rather than raised, so that
        # it does not reach the job wrapped in the nursery's ExceptionGroup.
        self.error: JobError | None = None
        # The bytes of the list read, and its mtime, once the reader reached
        # its end: a list written to after that says so (`Job`'s `list_changed`).
        self.read_whole: tuple[int, int] | None = None

    async def run(self, send: trio.MemorySendChannel[Work], hire: Callable[[], None]) -> None:
        """Hand every item to a worker, the hosts taking turns (see the module's
        notes); `hire()` when an item finds no worker free (the job decides
        whether it may)."""
        batches_send, batches_receive = trio.open_memory_channel[list[Work]](1)
        with self.scope:
            async with send, trio.open_nursery() as nursery:
                nursery.start_soon(self._read, batches_send)
                async with batches_receive:
                    reading = True
                    while reading or self._queued:
                        if self._stopping.is_set():
                            self.stopped_early = True
                            nursery.cancel_scope.cancel()
                            return
                        if reading and self._queued < READ_AHEAD:
                            # What the reader has ready; waited for only when
                            # nothing is queued.
                            try:
                                self._enqueue(batches_receive.receive_nowait())
                                continue
                            except trio.WouldBlock:
                                if not self._queued:
                                    reading = await self._receive(batches_receive)
                                    continue
                            except trio.EndOfChannel:
                                reading = False
                                continue
                        item = self._next()
                        if item is None and self._queued > QUEUED_MAX:
                            item = self._take(self._turns[0])  # the bound holds
                        if item is None:
                            # Every queued host is busy: read on (for a host
                            # further down that is not) until a host has room.
                            if reading:
                                reading = await self._receive_or_room(batches_receive)
                            else:
                                await self._room()
                            continue
                        await self._hand_over(send, item, hire)

    async def _receive(self, batches: trio.MemoryReceiveChannel[list[Work]]) -> bool:
        """Queue the reader's next batch; False when there is none (the list is read)."""
        try:
            self._enqueue(await batches.receive())
        except trio.EndOfChannel:
            return False
        return True

    async def _receive_or_room(self, batches: trio.MemoryReceiveChannel[list[Work]]) -> bool:
        """`_receive`, unless a host has room first (the reader may take a while:
        the de-duplication moving to disk, the archive's look-ups); False
        when the list is read."""
        reading = True
        async with trio.open_nursery() as race:

            async def read() -> None:
                nonlocal reading
                reading = await self._receive(batches)
                race.cancel_scope.cancel()

            async def room() -> None:
                await self._room()
                race.cancel_scope.cancel()

            # (A receive cancelled before it got a batch leaves it in the channel.)
            race.start_soon(read)
            race.start_soon(room)
        return reading

    @staticmethod
    async def _hand_over(
        send: trio.MemorySendChannel[Work], item: Work, hire: Callable[[], None]
    ) -> None:
        try:
            send.send_nowait(item)  # to a worker waiting for one
        except trio.WouldBlock:
            hire()
            await send.send(item)

    def _enqueue(self, work: list[Work]) -> None:
        queues, turns = self._queues, self._turns
        for item in work:
            waiting = queues.get(item.host)
            if waiting is None:
                waiting = queues[item.host] = deque()
                turns.append(item.host)
            waiting.append(item)
        self._queued += len(work)

    def _next(self) -> Work | None:
        """The oldest item of the next host in turn that is not busy, if any."""
        turns = self._turns
        for _ in range(len(turns)):
            host = turns[0]
            turns.rotate(-1)
            if not self._busy(host):
                return self._take(host)
        return None

    def _take(self, host: str) -> Work:
        waiting = self._queues[host]
        item = waiting.popleft()
        if not waiting:
            del self._queues[host]
            turns = self._turns
            # At the end when it has just had its turn, first when it is the bound's.
            if turns[-1] == host:
                turns.pop()
            elif turns[0] == host:
                turns.popleft()
            else:
                turns.remove(host)
        self._queued -= 1
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
                            self._take_noting_end,
                            entries,
                            size,
                            dedupe,
                        )
                    )
                except OSError as exc:
                    self.error = JobError("list_unreadable", exc.strerror or str(exc))
                    return
                except ListError as exc:
                    self.error = JobError("bad_header", str(exc))
                    return
                except ScratchError as exc:
                    self.error = JobError("folder_error", f"{SCRATCH_FAILED}: {exc}")
                    return
                if not batch:
                    self._outcomes.summary.listed = True
                    return
                size = min(size * 2, PARSE_BATCH)
                await batches.send(self._classify(batch, names))
            self.stopped_early = True

    def _take_noting_end(
        self, entries: Iterator[ListedUrl | InvalidLine], count: int, dedupe: Dedupe
    ) -> tuple[_Batch, _Named]:
        """`_take`, and where the list ended when a batch found its end (fewer
        entries than asked): the bytes read, exactly (the list is read in
        order), and its mtime then. Blocking, in the reader's thread."""
        batch, named = _take(
            entries, count, dedupe, self._folder_fd, self._archive, folder_empty=self._folder_empty
        )
        if len(batch) < count and self.read_whole is None:
            read = os.lseek(self._list_fd, 0, os.SEEK_CUR)
            self.read_whole = (read, os.fstat(self._list_fd).st_mtime_ns)
        return batch, named

    def _classify(self, batch: _Batch, named: _Named) -> list[Work]:
        """Settle what needs no download; return what does. `named`: what
        the reader found of the batch's URLs, one place each, in order."""
        outcomes = self._outcomes
        names, existing, archived = named
        work = []
        at = -1  # the place of the URL among the batch's
        for entry in batch:
            if isinstance(entry, InvalidLine):
                outcomes.invalid(entry)
                continue
            at += 1
            if (name := names[at]) is None:
                outcomes.duplicate(entry)
                continue
            outcomes.summary.found += 1
            if at in existing:
                outcomes.skipped(entry, existing[at])
            else:
                work.append(
                    Work(
                        entry.line,
                        entry.url,
                        name,
                        entry.parsed,
                        entry.host,
                        archived=archived.get(at),
                        row=entry.row,
                    )
                )
        return work
