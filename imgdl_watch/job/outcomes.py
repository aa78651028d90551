"""What became of each line of a job's list, in one place.

Every outcome does the same four things, here and nowhere else: it counts
(the job's `JobSummary`), records the metric, logs its event, and writes its
record to the report.

    outcome     event                   metric: downloads_total   report record
    invalid     url_invalid             -                         line, reason, excerpt
    duplicate   url_duplicate (debug)   -                         line, url
    skipped     download_skipped        {result="skipped"}        line, url, file
    reused      download_reused         {result="reused"}         line, url, file, bytes,
                                                                  sha256, source
    failed      download_failed         {result="failed"}         line, url, reason, detail,
                                                                  attempts, status
    filtered    download_filtered       {result="filtered"}       line, url, reason, detail,
                                                                  bytes, sha256, content_type,
                                                                  width, height, attempts
    ok          download_ok             {result="ok"}, bytes,     line, url, file, bytes,
                                        duration                  sha256, content_type, width,
                                                                  height, attempts

A URL from a structured list (csv, tsv, jsonl) also carries its row's other
columns, as read, in its record's `columns`.

A report that cannot be written (the inbox's disk is full) stops the job:
its first error is kept in `report_error`, and `stop()` is called once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from .. import errors as err
from .. import metrics
from ..download.fetcher import Downloaded
from ..redact import excerpt, log_url
from .listparse import InvalidLine, ListedUrl
from .progress import JobSummary
from .rows import Row

if TYPE_CHECKING:
    from .archive import Reused

log = structlog.get_logger("imgdl_watch")

# How much of a failure's detail a log line carries; the reason is the identifier.
DETAIL_CHARS = 120


class Report(Protocol):
    def record(self, fields: dict[str, Any], row: Row | None = None) -> None: ...


class Item(Protocol):
    """A URL of the list on its way to a download."""

    @property
    def line(self) -> int: ...

    @property
    def url(self) -> str: ...

    @property
    def row(self) -> Row | None: ...


class Outcomes:
    """Counts, metrics, log lines and report records of one job's URLs."""

    __slots__ = ("_report", "_stop", "report_error", "summary")

    def __init__(
        self, summary: JobSummary, report: Report | None, *, stop: Callable[[], None]
    ) -> None:
        self.summary = summary
        self._report = report
        self._stop = stop
        self.report_error: OSError | None = None

    def invalid(self, entry: InvalidLine) -> None:
        self.summary.invalid += 1
        log.warning("url_invalid", line=entry.line, reason=entry.reason, excerpt=entry.excerpt)
        self._record(
            {"outcome": "invalid", "line": entry.line, "reason": entry.reason},
            None,
            excerpt=entry.excerpt,
        )

    def duplicate(self, entry: ListedUrl) -> None:
        self.summary.duplicates += 1
        log.debug("url_duplicate", line=entry.line, url=log_url(entry.url))
        self._record({"outcome": "duplicate", "line": entry.line, "url": entry.url}, entry.row)

    def skipped(self, entry: Item, file: str) -> None:
        self.summary.skipped += 1
        metrics.recorder.download("skipped")
        log.info("download_skipped", url=log_url(entry.url), file=file)
        self._record(
            {"outcome": "skipped", "line": entry.line, "url": entry.url}, entry.row, file=file
        )

    def reused(self, item: Item, got: Reused) -> None:
        self.summary.reused += 1
        metrics.recorder.download("reused")
        log.info(
            "download_reused", url=log_url(item.url), file=got.file, source=got.source, how=got.how
        )
        self._record(
            {"outcome": "reused", "line": item.line, "url": item.url},
            item.row,
            file=got.file,
            bytes=got.bytes,
            sha256=got.sha256,
            source=got.source,
        )

    def failed(self, item: Item, exc: err.DownloadError) -> None:
        self.summary.failed += 1
        metrics.recorder.download("failed", reason=exc.reason)
        extra = {"status": exc.status} if exc.status is not None else {}
        detail = excerpt(exc.detail, DETAIL_CHARS)
        log.warning(
            "download_failed",
            url=log_url(item.url),
            reason=exc.reason,
            detail=detail,
            attempts=exc.attempts,
            **extra,
        )
        self._record(
            {"outcome": "failed", "line": item.line, "url": item.url},
            item.row,
            reason=exc.reason,
            detail=detail,
            attempts=exc.attempts,
            **extra,
        )

    def filtered(self, item: Item, exc: err.Filtered) -> None:
        self.summary.filtered += 1
        metrics.recorder.download("filtered")
        log.info(
            "download_filtered",
            url=log_url(item.url),
            reason=exc.reason,
            detail=excerpt(exc.detail, DETAIL_CHARS),
        )
        self._record(
            {"outcome": "filtered", "line": item.line, "url": item.url},
            item.row,
            reason=exc.reason,
            detail=exc.detail,
            bytes=exc.size,
            sha256=exc.sha256,
            content_type=exc.content_type,
            width=exc.width,
            height=exc.height,
            attempts=exc.attempts,
        )

    def ok(self, item: Item, result: Downloaded) -> None:
        summary = self.summary
        summary.ok += 1
        summary.bytes += result.bytes
        metrics.recorder.download("ok", size=result.bytes, seconds=result.elapsed_s)
        log.info(
            "download_ok",
            url=log_url(item.url),
            file=result.file,
            bytes=result.bytes,
            elapsed_s=round(result.elapsed_s, 4),
        )
        self._record(
            {"outcome": "ok", "line": item.line, "url": item.url},
            item.row,
            file=result.file,
            bytes=result.bytes,
            sha256=result.sha256,
            content_type=result.content_type,
            width=result.width,
            height=result.height,
            attempts=result.attempts,
        )

    def _record(self, fields: dict[str, Any], row: Row | None, **more: Any) -> None:
        """Report `fields`, then `more`, then the row's other columns, if any."""
        if self._report is None or self.report_error is not None:
            return
        fields.update(more)
        if row is not None:
            fields["columns"] = row.columns()
        try:
            self._report.record(fields, row)
        except OSError as exc:
            self.report_error = exc
            self._stop()
