"""What every command shares: one-line errors, settings from the flags,
folder checks, and the log.

Every error a user can cause ends as one line on stderr and an exit code;
no traceback reaches the terminal. A crash (a bug) is logged once, with its
traceback, and told in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import structlog

from ..config import OPTIONS, ConfigError, Settings, resolve
from ..errors import first_leaf
from ..service.logs import LogFormat, LogOutput, configure
from ..service.openfiles import OpenFilesError, files_needed
from ..service.openfiles import ensure_open_files as raise_open_files
from ..version import PROG
from .parser import EXIT_USAGE

if TYPE_CHECKING:
    from ..job.archive import Archive


def tell(message: str) -> None:
    """One line on stderr, if anyone is left to read it (a closed terminal: no one)."""
    with contextlib.suppress(OSError):
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    tell(f"error: {message}")
    return code


def settings_for(command: str, args: argparse.Namespace) -> Settings:
    flags: dict[str, Any] = {o.name: getattr(args, o.name, None) for o in OPTIONS}
    return resolve(command, flags, env=os.environ, config_path=args.config)


def ensure_open_files(settings: Settings, *, jobs: int) -> None:
    try:
        raise_open_files(files_needed(settings, jobs=jobs))
    except OpenFilesError as exc:
        raise ConfigError(str(exc)) from None


def check_writable_folder(path: str, what: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{what} {path} is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {what} folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} folder {path} is not writable")


def check_apart(inbox: str, output: str) -> None:
    """Neither folder may be, or be inside, the other: a job's images would
    land among the inbox's own folders (a job named `done` in done/), or
    in the inbox, to be taken for lists."""
    real_inbox, real_output = os.path.realpath(inbox), os.path.realpath(output)
    for inner, outer in ((real_inbox, real_output), (real_output, real_inbox)):
        if inner == outer or inner.startswith(outer.rstrip("/") + "/"):
            raise ConfigError(
                f"inbox {inbox} and output {output} overlap: give each a folder of its own,"
                " neither inside the other"
            )


@contextlib.contextmanager
def closing_log(output: LogOutput) -> Iterator[None]:
    """Close the log at the end, after a crash is logged to it."""
    try:
        yield
    except Exception as exc:
        log_crash(first_leaf(exc))
        raise Logged(exc) from exc
    finally:
        output.close()


class Logged(Exception):
    """A crash already written to the log."""


def open_log(settings: Settings, *, stream_level: str = "debug") -> LogOutput:
    fmt = cast(LogFormat, settings.log_format)  # config checked it is one of them
    try:
        return configure(
            level=settings.log_level,
            fmt=fmt,
            log_file=settings.log_file,
            stream_level=stream_level,
        )
    except OSError as exc:
        raise ConfigError(f"cannot open log file {settings.log_file}: {exc.strerror}") from None


def log_crash(exc: BaseException) -> None:
    try:
        structlog.get_logger("imgdl_watch").critical(
            "crashed",
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
        )
    except Exception:  # noqa: S110 - logging itself failed; the stderr line remains
        pass


def open_archive(settings: Settings) -> Archive | None:
    """`--archive`, opened (and created if new); one line if it cannot be."""
    if settings.archive is None:
        return None
    # Imported here: SQLite is ~1 MB of memory and 2-3 ms of start-up that a
    # command without --archive has no use for.
    from ..job.archive import Archive, ArchiveError  # noqa: PLC0415

    try:
        return Archive(settings.archive)
    except ArchiveError as exc:
        raise ConfigError(str(exc)) from None
