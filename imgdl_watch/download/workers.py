"""The fetcher's download workers (`--workers`): processes that share its requests.

One event loop spends most of its CPU in httpcore and h11 and in the file
system calls of each download (`benchmarks/README.md`, "The second core"),
and a process uses one core. So the fetcher hands the request and the body
of some attempts to worker processes (`worker`), while everything that must
be one and global stays in its own process: the lists, names and
de-duplication, every limit and turn (the global slots, each host's limit,
pacing and pauses, the bandwidth caps), robots.txt, retries, the report and
the log. An attempt takes its limits there, exactly as without workers;
only then does its request go to the worker that owns its slot, if one does
(`Workers.for_slot`: one slot in N + 1 stays the fetcher's, so a slot's
kept connections live in one process).

    Workers.run                 one keeper task per worker
    └── _keep(link)             start it, serve it, and start it again if it dies
        ├── Link._read          its replies, to the hops that wait for them
        ├── Wire.flush          what the socket did not take at once
        └── Link._watch         a Ping every HEARTBEAT_S; no Pong in HUNG_S: kill it

**Nothing is lost when a worker dies.** Each hop waiting on it ends with
`WorkerLost`: the fetcher sends that request again (in its own process, or
on the restarted worker), and a body the worker had not yet published is
downloaded again; neither counts as an attempt of the URL. The dead
worker's temporary files are swept from the job folders it had. A worker
that never says Hello, `START_FAILURES` times running, is given up on
(`workers_unavailable`): its slots are served in the fetcher's own process,
as they are while a worker starts again.

**Stopping.** The workers serve until the fetcher closes: in-flight
requests finish (SIGTERM's grace is the daemon's, in its own process; the
workers ignore SIGTERM, SIGINT and SIGHUP, which systemd and a terminal
send to the whole group). Closing their sockets ends them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
import trio

from . import errands as e
from .body import BodyRules
from .filesink import TEMP_PREFIX
from .wire import Wire

log = structlog.get_logger("imgdl_watch")

# Seconds between two pings of a worker, and without a Pong before it is
# taken for hung and killed. A worker's loop answers a ping within
# milliseconds; its slow work (a disk's fsync) runs in threads.
HEARTBEAT_S: Final = 5.0
HUNG_S: Final = 30.0
# Seconds a new worker has to say Hello (a cold start imports httpx: ~0.3 s).
START_S: Final = 30.0
# Starts in a row that never said Hello before a worker is given up on.
START_FAILURES: Final = 3
# Seconds before starting again a worker that died.
RESTART_S: Final = 0.5
# Seconds a closing worker has to exit before it is killed.
EXIT_S: Final = 5.0

_ids = itertools.count(1)


def next_id() -> int:
    return next(_ids)


class WorkerLost(Exception):
    """The worker died (or was killed, hung) before it answered."""


class WorkerCrashed(RuntimeError):
    """A worker's errand raised what no download raises: a bug, as it would be
    in the fetcher's own process."""


def raise_reply(reply: e.Reply) -> None:
    """Raise what a Failed or Crashed reply says the worker raised."""
    if isinstance(reply, e.Failed):
        raise e.unpack_error(reply.error)
    if isinstance(reply, e.Crashed):
        raise WorkerCrashed(reply.detail)


class RemoteSink:
    """A whole body that a worker is publishing (`filesink.FileSink`'s part, in
    a worker): `publish` waits for it, `discard` abandons it."""

    __slots__ = ("_key", "_link", "_waited", "size")

    def __init__(self, link: Link, key: int, size: int) -> None:
        self._link = link
        self._key = key
        self._waited = False
        self.size = size

    async def publish(self, name: str) -> None:
        """Wait until the worker has published the body (under `name`, the name
        its Got gave). Raises WorkerLost, `AlreadyThere` or `WriteFailed`."""
        self._waited = True
        raise_reply(await self._link.published(self._key))

    def discard(self) -> None:
        if not self._waited:
            self._waited = True
            self._link.abandon(self._key)


@dataclass(frozen=True, slots=True)
class Held:
    """What `body.Received` says of a body, for one a worker holds."""

    sink: RemoteSink
    content_type: str | None
    sniffed: str | None
    sha256: str
    width: int | None
    height: int | None


class _Call:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: e.Reply | None = None


class Link:
    """One worker: its process, its socket, and the hops waiting on it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ready = False
        self.pid = 0
        self.token = ""
        # Hops sent to it, in all its lives.
        self.served = 0
        # Hops waiting for their first reply, by id; and those that got their
        # body (Got), waiting for it to be published (Published or Failed).
        self._calls: dict[int, _Call] = {}
        self._publishing: dict[int, _Call] = {}
        # The job folders and rules it has, by the fetcher's descriptor or key.
        # (Each folder gets a key of its own, never the descriptor's number:
        # a job's descriptor may be reused by the next job's folder while the
        # worker still closes the first.)
        self._folders: dict[int, int] = {}
        self._rules: dict[tuple[BodyRules, str], int] = {}
        self._wire: Wire | None = None
        self._pong = trio.Event()
        self._pongs = 0

    # -- what the fetcher does with it -----------------------------------

    def post(self, message: object, fds: Sequence[int] = ()) -> None:
        """Send `message` without waiting; dropped if the worker is gone (its
        hops end with WorkerLost anyway)."""
        if self._wire is not None:
            self._wire.post(message, fds)

    def folder(self, dir_fd: int) -> int:
        """The worker's key for the job folder `dir_fd`, sent to it the first time."""
        key = self._folders.get(dir_fd)
        if key is None:
            key = self._folders[dir_fd] = next_id()
            self.post(e.Folder(key), (dir_fd,))
        return key

    def forget(self, dir_fd: int) -> None:
        key = self._folders.pop(dir_fd, None)
        if key is not None:
            self.post(e.Forget(key))

    def rules(self, body: BodyRules, timeouts: dict[str, Any]) -> int:
        """The key of these rules in the worker, sent to it the first time. By
        value: jobs with the same rules share one entry."""
        value = (body, repr(timeouts))  # a dict of dicts of numbers
        key = self._rules.get(value)
        if key is None:
            key = self._rules[value] = len(self._rules) + 1
            self.post(e.Rules(key, body, timeouts))
        return key

    async def call(self, hop: e.Hop) -> e.Reply:
        """Send `hop` and wait for its first reply. Raises WorkerLost. Cancelled,
        the hop is cancelled in the worker too: it sends nothing more, or
        publishes no file."""
        if not self.ready:
            raise WorkerLost
        call = self._calls[hop.id] = _Call()
        self.post(hop)
        self.served += 1
        return await self._wait(hop.id, call)

    async def published(self, key: int) -> e.Reply:
        """The reply after hop `key`'s Got: Published or Failed. Raises WorkerLost."""
        call = self._publishing.get(key)
        if call is None:
            raise WorkerLost
        reply = await self._wait(key, call)
        del self._publishing[key]
        return reply

    async def _wait(self, key: int, call: _Call) -> e.Reply:
        try:
            await call.done.wait()
        except BaseException:
            self.abandon(key)
            raise
        if call.reply is None:
            raise WorkerLost
        return call.reply

    def abandon(self, key: int) -> None:
        """Nobody waits for hop `key` any longer: cancel what the worker still does of it."""
        call = self._calls.pop(key, None) or self._publishing.pop(key, None)
        if call is not None and not call.done.is_set():
            self.post(e.Cancel(key))

    # -- its life -----------------------------------------------------------

    async def serve(self, setup: e.Setup, *, ready: Callable[[], object]) -> bool:
        """Start the worker and serve it until it dies or the fetcher closes,
        calling `ready` once it has said Hello. False when it never did."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "imgdl_watch.download.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        wire = Wire(parent)
        try:
            return await self._serve(process, wire, setup, ready)
        finally:
            self._lost()
            wire.close()
            await _end(process)

    async def _serve(
        self, process: trio.Process, wire: Wire, setup: e.Setup, ready: Callable[[], object]
    ) -> bool:
        wire.post(setup)
        with trio.move_on_after(START_S):
            hello = await wire.receive()
        if not isinstance(hello, e.Hello):
            log.warning("worker_not_started", worker=self.index, code=process.returncode)
            return False
        self.pid, self.token = hello.pid, hello.token
        self._wire = wire
        self.ready = True
        log.debug("worker_started", worker=self.index, pid=self.pid)
        ready()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wire.flush)
            nursery.start_soon(self._watch, nursery.cancel_scope)
            await self._read(wire)
            nursery.cancel_scope.cancel()
        return True

    async def _read(self, wire: Wire) -> None:
        while (reply := await wire.receive()) is not None:
            if isinstance(reply, e.Pong):
                self._pongs = reply.id
                self._pong.set()
                continue
            assert isinstance(reply, e.Reply)
            call = self._calls.pop(reply.id, None)
            if call is not None:
                if isinstance(reply, e.Got):
                    self._publishing[reply.id] = _Call()
            elif (call := self._publishing.get(reply.id)) is None:
                continue  # abandoned: its Cancel is on its way
            call.reply = reply
            call.done.set()

    async def _watch(self, serving: trio.CancelScope) -> None:
        for ping in itertools.count(1):
            self.post(e.Ping(ping))
            with trio.move_on_after(HUNG_S):
                while self._pongs < ping:
                    self._pong = trio.Event()
                    await self._pong.wait()
                await trio.sleep(HEARTBEAT_S)
                continue
            log.error("worker_hung", worker=self.index, pid=self.pid, silent_s=HUNG_S)
            serving.cancel()
            return

    def _lost(self) -> None:
        """Every hop waiting on the worker ends with WorkerLost; its temporary
        files go."""
        self.ready = False
        self._wire = None
        for calls in (self._calls, self._publishing):
            for call in calls.values():
                call.done.set()
            calls.clear()
        if self.token:
            for dir_fd in self._folders:
                _sweep(dir_fd, f"{TEMP_PREFIX}{self.token}-")
        self._folders.clear()
        self._rules.clear()


def _sweep(dir_fd: int, prefix: str) -> None:
    try:
        with os.scandir(dir_fd) as entries:
            names = [entry.name for entry in entries if entry.name.startswith(prefix)]
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass  # the job's own sweep, at its next start, removes them


async def _end(process: trio.Process) -> None:
    """Wait for the worker to exit (its socket is closed), then kill it."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(EXIT_S):
            await process.wait()
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        await process.wait()


class Workers:
    """`count` download workers, each kept running while the fetcher is open.

    The slots are shared between the workers and the fetcher's own process,
    one in `count + 1` each: the fetcher's process has the CPU for it (it
    spends ~0.3-0.5 ms per image on its own part, a worker ~1.3 on the
    rest), and with one worker on two cores that is two busy processes
    rather than three (benchmarks/README.md, "The second core").
    """

    def __init__(self, count: int, setup: e.Setup) -> None:
        self.links = [Link(i) for i in range(count)]
        self._setup = setup

    def for_slot(self, slot: int) -> Link | None:
        """The ready worker that serves `slot`, or None: the fetcher's process does."""
        share = slot % (len(self.links) + 1)
        if share == len(self.links):
            return None
        link = self.links[share]
        return link if link.ready else None

    def forget(self, dir_fd: int) -> None:
        """The job folder `dir_fd` is about to close: the workers close theirs."""
        for link in self.links:
            link.forget(dir_fd)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep every worker running; started once each has said Hello, or
        failed to (its slots are then the fetcher's until it starts)."""
        async with trio.open_nursery() as nursery:
            for link in self.links:
                await nursery.start(self._keep, link)
            task_status.started()

    async def _keep(
        self, link: Link, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        told = False

        def ready() -> None:  # once: the first start, or the first failure
            nonlocal told
            if not told:
                told = True
                task_status.started()

        failures = 0
        while failures < START_FAILURES:
            if await link.serve(self._setup, ready=ready):
                failures = 0
                log.warning("worker_lost", worker=link.index, pid=link.pid)
            else:
                failures += 1
                ready()
            await trio.sleep(RESTART_S)
        ready()
        log.error(
            "workers_unavailable",
            worker=link.index,
            detail=f"a download worker did not start {START_FAILURES} times in a row; "
            "its downloads run in the daemon's own process",
        )
