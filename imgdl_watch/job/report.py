"""A job's report: every URL's outcome, and the re-droppable list of failures.

Both are streamed to hidden part files next to the list while the job runs
(so a list of a million URLs does not keep them in memory) and published by
the inbox when the job ends. Writes go through a large userspace buffer, so
the event loop makes a system call only every `BUFFER_BYTES`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import IO, Any

# Userspace buffer of each part file: one write(2) per this many bytes.
BUFFER_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ReportPaths:
    report: str
    failed: str


class JobReport:
    """Appends one JSON line per URL to the report, and failed URLs to a list.

    A context manager: on the way out, both part files are removed unless
    the report was committed (published with its list).
    """

    def __init__(self, paths: ReportPaths) -> None:
        self.paths = paths
        self._report: IO[str] = open(  # noqa: SIM115 - closed in close()
            paths.report, "w", encoding="utf-8", buffering=BUFFER_BYTES
        )
        self._failed: IO[str] = open(  # noqa: SIM115
            paths.failed, "w", encoding="utf-8", buffering=BUFFER_BYTES
        )
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

    def record(self, **fields: Any) -> None:
        """One URL's outcome: `outcome`, `url`, and what else is known."""
        self._report.write(json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n")
        if fields.get("outcome") == "failed":
            self.failed_count += 1
            self._failed.write(fields["url"] + "\n")

    def close(self) -> None:
        """Flush and fsync both files, so that a published report is whole."""
        for handle in (self._report, self._failed):
            if not handle.closed:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()

    def discard(self) -> None:
        """Close and remove both part files (plain syscalls: safe when cancelled)."""
        for handle in (self._report, self._failed):
            # Closing flushes what is buffered, which fails again on a full
            # disk; the file is closed all the same, and removed below.
            with contextlib.suppress(OSError):
                handle.close()
        for path in (self.paths.report, self.paths.failed):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
