from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from structlog.typing import EventDict

from imgdl_watch import config
from imgdl_watch.download.fetcher import FetchOptions
from imgdl_watch.job.job import JobOptions


def fetch_options(**changes: Any) -> FetchOptions:
    """The download side's options at their defaults (the settings'), with `changes`."""
    return config.fetch_options(config.defaults()).replace(**changes)


def job_options(**changes: Any) -> JobOptions:
    return dataclasses.replace(config.job_options(config.defaults()), **changes)


def write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def open_list(path: Path) -> int:
    return os.open(path, os.O_RDONLY)


def fill(disk: Path) -> Path:
    """Fill a filesystem to the last byte with one file; returns that file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass  # ENOSPC at this size: go on with smaller writes
    finally:
        os.close(fd)
    return filler


def events(logs: Sequence[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


def with_open_files(command: list[str], limits: tuple[int, int] | None) -> list[str]:
    """`command` run with RLIMIT_NOFILE set to (soft, hard) by util-linux's prlimit.

    (A `preexec_fn` would run Python in a child forked from a test process
    that has server threads.)
    """
    if limits is None:
        return command
    return ["prlimit", f"--nofile={limits[0]}:{limits[1]}", "--", *command]
