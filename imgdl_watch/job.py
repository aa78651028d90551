"""A job: one URL list, downloaded into one folder.

The job reads its list as a stream (`listparse`), drops duplicate URLs, names
each image (`naming`), skips the ones its folder already holds, and feeds the
rest through a bounded channel to a nursery of worker tasks that call the
fetcher. It never holds more of the list than the channel and two digest sets
(one for URLs seen, one for names given out). Every outcome is logged and
recorded in the job's report.

The job does not know where its list came from or where it goes afterwards:
that is the inbox's business (or the `fetch` command's).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import httpx
import structlog
import trio

from . import errors as err
from . import metrics
from .config import Settings
from .fetcher import Fetcher
from .filesink import existing_images, open_job_folder, sweep_temp_files
from .listparse import InvalidLine, ListedUrl, parse_chunks
from .naming import ADDED_EXTENSIONS, FingerprintSet, NameRegistry, has_extension
from .progress import PROGRESS_INTERVAL_S, JobSummary, report_progress
from .redact import excerpt, log_url
from .report import JobReport

# Bytes of the list read per system call.
READ_CHUNK_BYTES = 256 * 1024
# Entries parsed per hop to a worker thread: the hop costs ~100 µs, parsing
# an entry ~20 µs (it is validated as a URL), so a batch amortises the hop.
# The first batch is small, so that the first download starts within a
# millisecond or two; each next one doubles, up to the largest.
FIRST_PARSE_BATCH = 32
PARSE_BATCH = 1024
# Worker tasks per download slot: while one writes its finished file to disk
# (fdatasync can take milliseconds), the other already uses the slot for the
# next download. With one, a slow disk left slots idle (measured: +15% wall
# time on the latency benchmark).
WORKERS_PER_SLOT = 2
# Seconds between checks of free space while it is below --min-free.
DISK_POLL_S = 5.0

log = structlog.get_logger("imgdl_watch")


class JobError(Exception):
    """The job as a whole cannot run: its list is unreadable, or its folder unusable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Work:
    line: int
    url: str
    name: str
    parsed: httpx.URL


def _take(entries: Iterator[ListedUrl | InvalidLine], count: int) -> list[ListedUrl | InvalidLine]:
    return list(islice(entries, count))


class Dedupe:
    """What a job remembers of its list: each URL seen, and each name given out.

    Both as fingerprints (`FingerprintSet`), so that a list of a million URLs
    costs ~160 bytes per URL (measured by `make bench`), not the URLs
    themselves. In the unlikely case of two distinct URLs sharing a
    fingerprint (~4e-7 for a million), the second is reported as a duplicate.
    """

    __slots__ = ("_names", "_seen")

    def __init__(self) -> None:
        self._seen = FingerprintSet()
        self._names = NameRegistry()

    def first_time(self, url: str) -> bool:
        """True the first time `url` is offered, False for a duplicate."""
        return self._seen.add(url)

    def name_for(self, url: str) -> str:
        return self._names.assign(url)


def _read_entries(list_fd: int) -> Iterator[ListedUrl | InvalidLine]:
    os.lseek(list_fd, 0, os.SEEK_SET)
    return parse_chunks(iter(lambda: os.read(list_fd, READ_CHUNK_BYTES), b""))


class Job:
    """Runs one list. `summary` is live while `run()` runs."""

    def __init__(
        self,
        *,
        name: str,
        list_fd: int,
        output: str,
        fetcher: Fetcher,
        workers: int | None = None,
        report: JobReport | None = None,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
        min_free: int = 0,
    ) -> None:
        self.name = name
        self.summary = JobSummary(name)
        self._list_fd = list_fd
        self._output = output
        self._fetcher = fetcher
        # Download slots this job may fill: a fixed number, or (None) the
        # fetcher's concurrency as it is now, so that a reload that raises it
        # reaches running jobs too. Two worker tasks per slot at most, hired
        # as needed (see `_produce`).
        self._slots = workers
        self._hired = 0
        # The producer's scope: a worker that meets the stop ends the feeding.
        self._feeding = trio.CancelScope()
        self._report = report
        self._progress_interval_s = progress_interval_s
        self._min_free = min_free
        self._disk_low = False
        self._existing: set[str] = set()
        self._dir_fd = -1
        self._stopped_early = False
        # A failure of the list itself, found by the producer task. It is kept
        # here rather than raised there, so that it does not reach the caller
        # wrapped in the nursery's ExceptionGroup.
        self._list_error: JobError | None = None
        # The report could not be written (the inbox's disk is full): the job
        # cannot finish without it, so it stops, and the caller decides when
        # to try again. Kept, not raised, for the same reason as above.
        self._report_error: OSError | None = None
        self._whole = trio.CancelScope()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        name: str,
        list_fd: int,
        output: str,
        fetcher: Fetcher,
        report: JobReport | None = None,
    ) -> Job:
        """A job shaped by the options of `settings`, for the daemon and `fetch` alike."""
        return cls(
            name=name,
            list_fd=list_fd,
            output=output,
            fetcher=fetcher,
            report=report,
            progress_interval_s=settings.progress_interval,
            min_free=settings.min_free,
        )

    async def run(self) -> JobSummary:
        """Run the list to its end, or until the fetcher is stopping."""
        structlog.contextvars.bind_contextvars(job=self.name)
        log.info("job_started")
        try:
            self._dir_fd = await trio.to_thread.run_sync(open_job_folder, self._output, self.name)
        except OSError as exc:
            raise JobError(
                "folder_error", f"cannot use {self._output}/{self.name}: {exc.strerror}"
            ) from exc
        try:
            self._existing = await trio.to_thread.run_sync(self._prepare_folder)
            # No buffer: an item passes only from the producer's hand to a
            # worker's, so the producer knows when no worker is free.
            send, receive = trio.open_memory_channel[_Work](0)
            with self._whole:
                async with trio.open_nursery() as nursery, receive:
                    nursery.start_soon(report_progress, self.summary, self._progress_interval_s)
                    async with trio.open_nursery() as crew:

                        def hire() -> None:
                            self._hired += 1
                            crew.start_soon(self._work, receive.clone())

                        crew.start_soon(self._produce, send, hire)
                    nursery.cancel_scope.cancel()
        finally:
            os.close(self._dir_fd)
        if self._report_error is not None:
            raise self._report_error
        if self._list_error is not None:
            raise self._list_error
        summary = self.summary
        summary.complete = summary.listed and not self._stopped_early
        return summary

    def _prepare_folder(self) -> set[str]:
        swept = sweep_temp_files(self._dir_fd)
        if swept:
            log.info("temp_files_removed", count=swept)
        return existing_images(self._dir_fd)

    def _existing_file(self, name: str) -> str | None:
        if name in self._existing:
            return name
        if not has_extension(name):
            for ext in ADDED_EXTENSIONS:
                if name + ext in self._existing:
                    return name + ext
        return None

    def _max_workers(self) -> int:
        slots = self._fetcher.concurrency if self._slots is None else self._slots
        return max(1, slots) * WORKERS_PER_SLOT

    def _record(self, **fields: Any) -> None:
        if self._report is None or self._report_error is not None:
            return
        try:
            self._report.record(**fields)
        except OSError as exc:
            self._report_error = exc
            self._whole.cancel()

    async def _produce(self, send: trio.MemorySendChannel[_Work], hire: Callable[[], None]) -> None:
        """Feed the workers, one batch behind the reader, hiring them as needed.

        The reader classifies whole batches (so that `total`, the URLs found
        so far, runs ahead of the downloads) and keeps one in hand; this task
        passes their items on as workers take them. At most two batches of
        work are in memory, whatever the length of the list.

        Workers are hired when an item finds none free, up to two per
        download slot. So a list of three URLs costs three tasks, not
        `2 x --concurrency`, which matters when a flood of small lists runs
        `--max-jobs` at a time: each idle task still costs some 4 KB and its
        start-up.
        """
        stopping = self._fetcher.stopping
        batches_send, batches_receive = trio.open_memory_channel[list[_Work]](1)
        with self._feeding:
            async with send, trio.open_nursery() as nursery:
                nursery.start_soon(self._read, batches_send)
                async with batches_receive:
                    async for work in batches_receive:
                        for item in work:
                            if stopping.is_set():
                                self._stopped_early = True
                                nursery.cancel_scope.cancel()
                                return
                            try:
                                send.send_nowait(item)  # to a worker waiting for one
                            except trio.WouldBlock:
                                if self._hired < self._max_workers():
                                    hire()
                                await send.send(item)

    async def _read(self, batches: trio.MemorySendChannel[list[_Work]]) -> None:
        """Parse and classify the list in batches, the first one small."""
        dedupe = Dedupe()
        async with batches:
            try:
                entries = _read_entries(self._list_fd)
            except OSError as exc:
                self._list_error = JobError("list_unreadable", exc.strerror or str(exc))
                return
            size = FIRST_PARSE_BATCH
            while not self._fetcher.stopping.is_set():
                try:
                    batch = await trio.to_thread.run_sync(_take, entries, size)
                except OSError as exc:
                    self._list_error = JobError("list_unreadable", exc.strerror or str(exc))
                    return
                if not batch:
                    self.summary.listed = True
                    return
                size = min(size * 2, PARSE_BATCH)
                await batches.send(self._classify(batch, dedupe))
            self._stopped_early = True

    def _classify(self, batch: list[ListedUrl | InvalidLine], dedupe: Dedupe) -> list[_Work]:
        """Log and record what needs no download; return what does."""
        summary = self.summary
        work = []
        for entry in batch:
            if isinstance(entry, InvalidLine):
                summary.invalid += 1
                log.warning(
                    "url_invalid", line=entry.line, reason=entry.reason, excerpt=entry.excerpt
                )
                self._record(
                    outcome="invalid", line=entry.line, reason=entry.reason, excerpt=entry.excerpt
                )
                continue
            if not dedupe.first_time(entry.url):
                summary.duplicates += 1
                log.debug("url_duplicate", line=entry.line, url=log_url(entry.url))
                self._record(outcome="duplicate", line=entry.line, url=entry.url)
                continue
            summary.found += 1
            name = dedupe.name_for(entry.url)
            existing = self._existing_file(name)
            if existing is not None:
                summary.skipped += 1
                metrics.recorder.download("skipped")
                log.info("download_skipped", url=log_url(entry.url), file=existing)
                self._record(outcome="skipped", line=entry.line, url=entry.url, file=existing)
                continue
            work.append(_Work(entry.line, entry.url, name, entry.parsed))
        return work

    async def _work(self, receive: trio.MemoryReceiveChannel[_Work]) -> None:
        summary = self.summary
        async with receive:
            async for item in receive:
                try:
                    if self._min_free:
                        await self._wait_for_space()
                    result = await self._fetcher.download(
                        item.url, dir_fd=self._dir_fd, name=item.name, parsed=item.parsed
                    )
                except err.Interrupted:
                    self._stopped_early = True
                    # The producer may be waiting to hand over an item that
                    # no worker will take: the job is stopping.
                    self._feeding.cancel()
                    return
                except err.DownloadError as exc:
                    summary.failed += 1
                    metrics.recorder.download("failed")
                    status, attempts = exc.status, exc.attempts
                    extra = {"status": status} if status is not None else {}
                    log.warning(
                        "download_failed",
                        url=log_url(item.url),
                        reason=exc.reason,
                        detail=excerpt(exc.detail, 120),
                        attempts=attempts,
                        **extra,
                    )
                    self._record(
                        outcome="failed",
                        line=item.line,
                        url=item.url,
                        reason=exc.reason,
                        attempts=attempts,
                        **extra,
                    )
                    continue
                summary.ok += 1
                metrics.recorder.download("ok", size=result.bytes, seconds=result.elapsed_s)
                summary.bytes += result.bytes
                self._existing.add(result.file)
                log.info(
                    "download_ok",
                    url=log_url(item.url),
                    file=result.file,
                    bytes=result.bytes,
                    elapsed_s=round(result.elapsed_s, 4),
                )
                self._record(
                    outcome="ok",
                    line=item.line,
                    url=item.url,
                    file=result.file,
                    bytes=result.bytes,
                    attempts=result.attempts,
                )

    def _free_bytes(self) -> int:
        # fstatvfs on the folder we hold: one fast system call, no thread hop.
        st = os.fstatvfs(self._dir_fd)
        return st.f_bavail * st.f_frsize

    async def _wait_for_space(self) -> None:
        """Hold this worker while free space is below --min-free."""
        stopping = self._fetcher.stopping
        while (free := self._free_bytes()) < self._min_free:
            if not self._disk_low:
                self._disk_low = True
                log.warning("disk_low", free_bytes=free, min_free=self._min_free)
            with trio.move_on_after(DISK_POLL_S):
                await stopping.wait()
            if stopping.is_set():
                raise err.Interrupted
        if self._disk_low:
            self._disk_low = False
            log.info("disk_ok", free_bytes=free, min_free=self._min_free)
