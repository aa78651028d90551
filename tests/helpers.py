from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog
import trio
from structlog.typing import EventDict

from imgdl_watch import config
from imgdl_watch.download.options import FetchOptions
from imgdl_watch.job.job import JobOptions


def fetch_options(**changes: Any) -> FetchOptions:
    """The download side's options at their defaults (the settings'), with `changes`.

    No download workers unless asked: a test in its own process runs every
    request there, so that mock clocks and injected servers see them all
    (`test_fetcher` runs each of its tests with a worker as well, and
    `test_workers` tests the workers themselves).
    """
    return config.fetch_options(config.defaults()).replace(**({"workers": 0} | changes))


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


class EventLog:
    """Every event logged while `watching_logs()` is active, and a way to wait
    for one without polling: a waiter wakes when an event is logged (from the
    trio thread, or from a worker thread through the trio token)."""

    def __init__(self) -> None:
        self.entries: list[EventDict] = []
        self._token = trio.lowlevel.current_trio_token()
        self._logged = trio.Event()

    def __call__(self, _logger: object, method: str, event: EventDict) -> EventDict:
        event["log_level"] = method
        self.entries.append(event)
        if trio.lowlevel.in_trio_run():
            self._logged.set()
        else:
            self._token.run_sync_soon(self._logged.set)
        raise structlog.DropEvent

    async def wait_for(
        self, name: str, count: int = 1, *, timeout: float = 10, **fields: object
    ) -> list[EventDict]:
        """The events called `name` (with these `fields`), once there are `count` of them."""

        def found() -> list[EventDict]:
            named = events(self.entries, name)
            return [e for e in named if all(e.get(k) == v for k, v in fields.items())]

        with trio.fail_after(timeout):
            while len(matching := found()) < count:
                self._logged = trio.Event()
                await self._logged.wait()
        return matching


@contextlib.contextmanager
def watching_logs() -> Iterator[EventLog]:
    """Like structlog's `capture_logs`, with `EventLog.wait_for` (call it in trio)."""
    log = EventLog()
    old = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, log])
    try:
        yield log
    finally:
        structlog.configure(processors=old)
