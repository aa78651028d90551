"""A job's report: every URL's outcome, and the re-droppable list of failures.

Both are streamed to hidden part files next to the list while the job runs
(so a list of a million URLs does not keep them in memory) and published by
the inbox when the job ends. Writes go through a large userspace buffer, so
the event loop makes a system call only every `BUFFER_BYTES`.

The failures are a list of the job's own format (`listformat.FailedList`):
a csv list's failed rows with its header and every column, compressed as
it was, so that dropping it again retries exactly those rows.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import IO, Any

from .listformat import FailedList, ListFormat, create_part, remove_part
from .rows import Row

# Userspace buffer of each part file: one write(2) per this many bytes.
BUFFER_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ReportPaths:
    report: str
    failed: str
    # The format of the list, which its failures keep.
    format: ListFormat = field(default_factory=ListFormat)
    # The folder both are in, open (a claim's processing/): they are made and
    # removed relative to it, so that the folder written is the one the inbox
    # publishes from (None: by their paths).
    folder_fd: int | None = None


class JobReport:
    """Appends one JSON line per URL to the report, and failed URLs to a list.

    A context manager: on the way out, both part files are removed unless
    the report was committed (published with its list).
    """

    def __init__(self, paths: ReportPaths) -> None:
        self.paths = paths
        self._report: IO[str] = open(  # noqa: SIM115 - closed in close()
            create_part(paths.report, paths.folder_fd),
            "w",
            encoding="utf-8",
            buffering=BUFFER_BYTES,
        )
        try:
            self._failed = FailedList(
                paths.failed, paths.format, buffering=BUFFER_BYTES, folder_fd=paths.folder_fd
            )
        except BaseException:
            self._report.close()
            # Taken back; if that fails too, the job still fails as the failed list said.
            with contextlib.suppress(OSError):
                remove_part(paths.report, paths.folder_fd)
            raise
        self.failed_count = 0
        self._committed = False

    def __enter__(self) -> JobReport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.discard()

    def commit(self) -> None:
        """The report was published: keep it (after `close` and the move)."""
        self._committed = True

    def record(self, fields: dict[str, Any], row: Row | None = None) -> None:
        """One URL's outcome: `outcome`, `url`, and what else is known; a
        failed URL also goes to the list of failures, with its `row`."""
        self._report.write(json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n")
        if fields.get("outcome") == "failed":
            self.failed_count += 1
            self._failed.add(fields["url"], row)

    def close(self) -> None:
        """Flush and fsync both files, so that a published report is whole."""
        if not self._report.closed:
            self._report.flush()
            os.fsync(self._report.fileno())
            self._report.close()
        self._failed.close()

    def discard(self) -> None:
        """Close and remove both part files (plain syscalls: safe when cancelled)."""
        # Closing flushes what is buffered, which fails again on a full
        # disk; the file is closed all the same, and removed below.
        with contextlib.suppress(OSError):
            self._report.close()
        self._failed.discard_close()
        for path in (self.paths.report, self.paths.failed):
            try:
                remove_part(path, self.paths.folder_fd)
            except FileNotFoundError:
                pass
