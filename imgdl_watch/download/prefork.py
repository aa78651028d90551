"""Download workers forked before the event loop starts: spares.

A worker started as a new program (`workermain`) imports trio, httpx and
our download modules again: ~20 MB of its own, most of it those imports'
objects. A worker forked from the daemon's process once it has imported
them shares those pages with it, copied only as either side writes to them
(`gc.freeze` first, so that no collection writes to them all), and costs
~12 MB less (benchmarks/README.md, "Where the targets stand").

Forking is only safe in a process with one thread and no event loop yet, so
the daemon forks its spares at start-up (`fork_spares`, in `cli.run`), one
per worker, before anything else runs. Each spare waits on its socket for
its Setup, as a worker started as a program does; `Workers` hands the first
life of each worker a spare, and starts a worker as a program whenever it
has none left (a worker that died is replaced that way). Where a spare
cannot be made (more threads, no pidfd, fork refused), there are none, and
every worker starts as a program, as before.

`Forked` is what the fetcher needs of a spare's process, in the shape of
`trio.Process`: its exit, waited for on a pidfd, and a signal.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Final, NoReturn

import trio

# A spare's exit status when its worker returned or raised.
_EXIT_OK: Final = 0
_EXIT_CRASHED: Final = 70  # EX_SOFTWARE


class Forked:
    """A child process forked by this one, seen as a `trio.Process` is by
    `workers`: `pid`, `returncode`, `wait()` and `send_signal()`. Its exit
    is waited for on a pidfd, so no SIGCHLD handler is needed, and a signal
    goes through the pidfd, so it never reaches another process that was
    given the pid after this one was reaped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd: int | None = os.pidfd_open(pid)

    async def wait(self) -> int:
        if self.returncode is None:
            assert self._pidfd is not None
            await trio.lowlevel.wait_readable(self._pidfd)
            # Readable once it has exited: reaping it does not block.
            _, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222
            self.returncode = os.waitstatus_to_exitcode(status)
            os.close(self._pidfd)
            self._pidfd = None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self._pidfd is None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, signum)


@dataclass(frozen=True, slots=True)
class Spare:
    """A worker forked before the loop, waiting for its Setup on `sock`."""

    process: Forked
    sock: socket.socket


def fork_spares(count: int) -> list[Spare]:
    """`count` spares, or none where forking is not safe or not possible."""
    if count <= 0 or threading.active_count() != 1 or not hasattr(os, "pidfd_open"):
        return []
    from . import worker  # noqa: PLC0415 - what the spares share, imported before they fork

    del worker
    # Garbage first, then everything left is kept out of every collection,
    # in the daemon as in the spares: a collection writes to each object it
    # visits, which would copy the shared pages.
    gc.collect()
    gc.freeze()
    spares: list[Spare] = []
    for _ in range(count):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError:
            parent.close()
            child.close()
            break
        if pid == 0:  # pragma: no cover - the spare's process, ended by os._exit
            _be_a_worker(child.fileno())
        child.close()
        try:
            spares.append(Spare(Forked(pid), parent))
        except OSError:  # no pidfd after all: this one starts as a program
            parent.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            break
    return spares


def _be_a_worker(fd: int) -> NoReturn:  # pragma: no cover - runs in the spare, measured by tests
    """The spare's whole life: the worker, on descriptor `fd` alone (and the
    standard ones, stdin on /dev/null as for a worker started as a program).
    Never returns into the daemon's code, and runs none of its exit
    handlers."""
    code = _EXIT_CRASHED
    try:
        os.closerange(3, fd)
        os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        from .worker import main  # noqa: PLC0415

        main([str(fd)])
        code = _EXIT_OK
    finally:
        os._exit(code)
