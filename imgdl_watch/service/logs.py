"""Logging set-up: structlog, one JSON object per line, to stdout and a file.

The pipeline is a few small processors: context variables (the job name,
bound once per job task), log level, an ISO 8601 UTC timestamp. The last step
hands the event dict to `LogOutput`, which renders it once per format and
writes a line to each sink: JSON for the log file and for stdout when it is
not a terminal, or structlog's console rendering for a person at one.

`LogOutput.reopen()` reopens the log file, for logrotate after SIGHUP.

A sink that fails never stops the program: the log is how we report
trouble, not a reason to stop downloading. When the file cannot be written
(a full disk, a vanished mount), the other sink says so once
(`log_file_failed`); the file is tried again every `LOG_FILE_RETRY_S`
seconds, and once a line lands there again, `log_file_ok` says how many
were lost. When stdout goes away (`fetch ... | head`, a reader that
died), one line on stderr says so and the file goes on alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import stat
import sys
import time
from collections.abc import MutableMapping
from typing import IO, Any, Literal

import structlog

from ..redact import printable
from ..version import PROG

LogFormat = Literal["auto", "json", "console"]
_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


# A file name that is not UTF-8 reaches Python with lone surrogates in it
# (`bad\udcff.txt`). Written as the escape `\udcff`, it stays readable, and
# inside a JSON string it is valid JSON; the default would raise, and lose the line.
_UNENCODABLE = "backslashreplace"


# After the log file failed, how long until it is tried again: long enough
# that a full disk costs no system call per line, short enough that little
# is lost once space comes back.
LOG_FILE_RETRY_S = 10.0

_clock = time.monotonic  # (tests move it by hand)


def _json_line(event: dict[str, Any]) -> str:
    line = json.dumps(event, ensure_ascii=False, default=str, separators=(",", ":"))
    if not line.isprintable():
        # JSON escapes only U+0000-U+001F: DEL, the C1 controls (U+009B is
        # a CSI), bidi overrides and line separators, from a list's name or
        # URL, would reach a terminal that tails the log as they are.
        line = json.dumps(event, ensure_ascii=True, default=str, separators=(",", ":"))
    return line


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
        self._stream_broken = False
        self.log_file = log_file
        self._fd: int | None = None
        # The file ends in a line cut short (a crash, a power cut): our next
        # line starts with a line break, so that it is one JSON object.
        self._mid_line = False
        self._failing = False  # the file failed, and has not taken a line since
        self._lost = 0  # lines the file missed meanwhile
        self._retry_at = 0.0
        if log_file is not None:
            self._fd = _open_log_file(log_file)  # at start, a bad path is an error
            self._mid_line = _ends_mid_line(log_file)

    def reopen(self) -> None:
        """Close and open the log file again (after logrotate moved it)."""
        if self.log_file is None:
            return
        try:
            new = _open_log_file(self.log_file)
        except OSError as exc:
            self._file_failed(exc)
            return
        self._drop_file()
        self._fd = new
        self._mid_line = _ends_mid_line(self.log_file)

    def close(self) -> None:
        """The end: no line goes to the file after this."""
        self._drop_file()
        self._retry_at = math.inf

    def emit(self, **event: Any) -> None:
        line = None
        level = _LEVEL_NUMBERS.get(event.get("level", "info"), 20)
        if level >= self._stream_level and not self._stream_broken:
            stream = self._stream or sys.stdout
            try:
                if self._console is not None:
                    # A person at a terminal gets the one-line error, never a
                    # traceback; the JSON sinks keep it for whoever debugs.
                    # Escaped too, what a terminal would act on: a list's
                    # name may hold ESC's sequences. A field with no value
                    # (a retry's `status` after a timeout, an `eta_s` not
                    # known yet) is left out rather than shown as None.
                    shown = {
                        k: printable(v) if isinstance(v, str) else v
                        for k, v in event.items()
                        if k != "traceback" and v is not None
                    }
                    stream.write(self._console(None, "", shown) + "\n")
                else:
                    line = _json_line(event)
                    stream.write(line + "\n")
                stream.flush()
            except OSError as exc:
                self._stream_failed(exc)
        if self.log_file is not None:
            self._to_file(line or _json_line(event))

    def _to_file(self, line: str) -> None:
        if self._fd is None:
            if _clock() < self._retry_at:
                self._lost += 1
                return
            self.reopen()
        if self._fd is None:
            self._lost += 1
            return
        try:
            data = (line + "\n").encode("utf-8", _UNENCODABLE)
            _write_whole_line(self._fd, b"\n" + data if self._mid_line else data)
            self._mid_line = False
        except OSError as exc:
            self._lost += 1
            self._file_failed(exc)
            return
        if self._failing:
            self._failing = False
            lost, self._lost = self._lost, 0
            structlog.get_logger().warning("log_file_ok", file=self.log_file, lost_lines=lost)

    def _drop_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _file_failed(self, exc: OSError) -> None:
        self._drop_file()
        self._retry_at = _clock() + LOG_FILE_RETRY_S
        if not self._failing:  # said once, not once per lost line
            self._failing = True
            structlog.get_logger().error(
                "log_file_failed",
                file=self.log_file,
                detail=exc.strerror or str(exc),
                retry_s=LOG_FILE_RETRY_S,
            )

    def _stream_failed(self, exc: OSError) -> None:
        self._stream_broken = True
        if self._stream is None:
            # Python's own flush of stdout at exit would fail, and complain.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
        with contextlib.suppress(OSError):
            print(
                f"{PROG}: cannot write the log to standard output ({exc.strerror or exc});"
                " going on without it",
                file=sys.stderr,
                flush=True,
            )
        structlog.get_logger().error("log_stream_failed", detail=exc.strerror or str(exc))

    # structlog calls the method named after the level; all of them emit.
    debug = info = warning = error = critical = msg = emit


def _open_log_file(path: str) -> int:
    # Unbuffered: each line is one write(2) of its own, which `_write_whole_line`
    # can take back when a full disk cuts it short.
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _write_whole_line(fd: int, data: bytes) -> None:
    """Append `data` whole, or not at all.

    On a full disk write(2) first writes what fits and says how much; only the
    next call fails. Then the part that landed is cut off again, so that
    a reader of the file never meets half a line.
    """
    written = 0
    while written < len(data):
        try:
            written += os.write(fd, data[written:])
        except OSError:
            if written:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise


def _ends_mid_line(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        # Only a regular file has a last byte to look at (not a pipe or a tty).
        return (
            stat.S_ISREG(st.st_mode) and st.st_size > 0 and os.pread(fd, 1, st.st_size - 1) != b"\n"
        )
    except OSError:
        return False
    finally:
        os.close(fd)


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
