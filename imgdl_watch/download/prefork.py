"""Download workers forked before the event loop starts: spares.

A worker started as a new program (`workermain`) imports trio, httpx and
our download modules again: ~20 MB of its own, most of it those imports'
objects. A worker forked from the daemon's process once it has imported
them shares those pages with it, copied only as either side writes to them
(`gc.freeze` first, so that no collection writes to them all), and costs
~6 MB less: ~15 MB of private pages after a lag-set job against ~20-22
(`/proc/PID/smaps`; benchmarks/README.md, "Where the targets stand").

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
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

import trio

# A spare's exit status when its worker returned or raised.
_EXIT_OK: Final = 0
_EXIT_CRASHED: Final = 70  # EX_SOFTWARE
# The return code of a child that something else reaped first.
_STATUS_UNKNOWN: Final = 255
# Seconds a spare no worker took has to exit once its socket is closed.
SPARE_EXIT_S: Final = 5.0


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
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self._pidfd is None:
            raise ProcessLookupError(self.pid)
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except PermissionError:  # a filter that lets pidfd_open through, not this
            os.kill(self.pid, signum)

    def end(self, *, within_s: float) -> None:
        """Blocking, for a spare no worker took: wait up to `within_s` for it
        to exit (its socket closed), then kill it; reaped either way."""
        if self._pidfd is None:
            return
        readable, _, _ = select.select([self._pidfd], [], [], within_s)
        if not readable:
            with contextlib.suppress(ProcessLookupError):
                self.send_signal(signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        """Its exit status, once it has exited (waitid on the pidfd blocks
        until then: called when the pidfd is readable, or after a kill)."""
        assert self._pidfd is not None
        try:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
        except ChildProcessError:  # reaped by someone else: its status is gone
            self.returncode = _STATUS_UNKNOWN
        else:
            assert info is not None
            exited = info.si_code == os.CLD_EXITED
            self.returncode = info.si_status if exited else -info.si_status
        os.close(self._pidfd)
        self._pidfd = None


@dataclass(frozen=True, slots=True)
class Spare:
    """A worker forked before the loop, waiting for its Setup on `sock`."""

    process: Forked
    sock: socket.socket


def fork_spares(count: int) -> list[Spare]:
    """`count` spares, or none where forking is not safe or not possible."""
    if count <= 0 or not hasattr(os, "pidfd_open"):
        return []
    from . import worker  # noqa: PLC0415 - what the spares share, imported before they fork

    del worker
    # Garbage first, then everything left is kept out of every collection,
    # in the daemon as in the spares: a collection writes to each object it
    # visits, which would copy the shared pages.
    gc.collect()
    # One thread, counted by the kernel: an extension's native thread is
    # not in `threading`'s count.
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        return []
    gc.freeze()
    # What the child would otherwise write out again, from its copy.
    sys.stdout.flush()
    sys.stderr.flush()
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


def end_spares(spares: Sequence[Spare], *, within_s: float = SPARE_EXIT_S) -> None:
    """Blocking: end the spares no worker took (the daemon stopped before its
    workers started, or could not start), so that none outlives it
    unreaped. A spare a worker took is that worker's to end."""
    for spare in spares:
        spare.sock.close()
    for spare in spares:
        spare.process.end(within_s=within_s)


def _be_a_worker(fd: int) -> NoReturn:  # pragma: no cover - runs in the spare, measured by tests
    """The spare's whole life: the worker, on descriptor `fd` alone (and the
    standard ones, stdin on /dev/null as for a worker started as a program).
    Never returns into the daemon's code, and runs none of its exit
    handlers; what it raised is printed, as a program's traceback would be."""
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
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)
