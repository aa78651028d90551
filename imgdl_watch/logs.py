"""Logging set-up: structlog, one JSON object per line, to stdout and a file.

The pipeline is a few small processors: context variables (the job name,
bound once per job task), log level, an ISO 8601 UTC timestamp. The last step
hands the event dict to `LogOutput`, which renders it once per format and
writes a line to each sink: JSON for the log file and for stdout when it is
not a terminal, or structlog's console rendering for a person at one.

`LogOutput.reopen()` reopens the log file, for logrotate after SIGHUP.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error", "critical")
_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


# A file name that is not UTF-8 reaches Python with lone surrogates in it
# (`bad\udcff.txt`). Written as the escape `\udcff`, it stays readable, and
# inside a JSON string it is valid JSON; the default would raise, and lose the line.
_UNENCODABLE = "backslashreplace"


def _json_line(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, default=str, separators=(",", ":"))


class LogOutput:
    """The sinks of the log: stdout (or another stream) and an optional file."""

    def __init__(
        self,
        *,
        stream: IO[str] | None,
        console: bool,
        log_file: str | None,
        stream_level: str = "debug",
    ) -> None:
        # None means "sys.stdout at each write", so that a live progress
        # display that redirects stdout keeps its bar below our lines.
        self._stream = stream
        if stream is None and isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors=_UNENCODABLE)
        self._stream_level = _LEVEL_NUMBERS[stream_level]
        colors = (stream or sys.stdout).isatty()
        self._console = structlog.dev.ConsoleRenderer(colors=colors) if console else None
        self.log_file = log_file
        self._file: IO[str] | None = None
        self.reopen()

    def reopen(self) -> None:
        """Close and open the log file again (after logrotate moved it)."""
        if self.log_file is None:
            return
        new = open(self.log_file, "a", encoding="utf-8", errors=_UNENCODABLE)  # noqa: SIM115
        old, self._file = self._file, new
        if old is not None:
            old.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def emit(self, **event: Any) -> None:
        line = None
        if _LEVEL_NUMBERS.get(event.get("level", "info"), 20) >= self._stream_level:
            stream = self._stream or sys.stdout
            if self._console is not None:
                # A person at a terminal gets the one-line error, never a
                # traceback; the JSON sinks keep it for whoever debugs.
                shown = {k: v for k, v in event.items() if k != "traceback"}
                stream.write(self._console(None, "", shown) + "\n")
            else:
                line = _json_line(event)
                stream.write(line + "\n")
            stream.flush()
        if self._file is not None:
            self._file.write((line or _json_line(event)) + "\n")
            self._file.flush()

    # structlog calls the method named after the level; all of them emit.
    debug = info = warning = error = critical = msg = emit


def wants_console(fmt: LogFormat, stream: IO[str]) -> bool:
    return fmt == "console" or (fmt == "auto" and stream.isatty())


def configure(
    *,
    level: str = "info",
    fmt: LogFormat = "auto",
    log_file: str | None = None,
    stream: IO[str] | None = None,
    stream_level: str = "debug",
) -> LogOutput:
    """Set up structlog for the process. Returns the output, for reopen and close.

    `stream_level` narrows what reaches stdout (the file gets every event at
    `level`): `fetch` at a terminal shows only warnings beside its progress bar.
    """
    console = wants_console(fmt, stream or sys.stdout)
    output = LogOutput(stream=stream, console=console, log_file=log_file, stream_level=stream_level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _to_output_kwargs,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_args: output,
        cache_logger_on_first_use=True,
    )
    return output


def _to_output_kwargs(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> dict[str, Any]:
    # A dict returned by the last processor reaches the logger as **kwargs.
    # The fixed keys go first, so that a line reads well before it is parsed.
    head = {key: event.pop(key) for key in ("timestamp", "level", "event") if key in event}
    return head | dict(event)
