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
(`Workers.for_slot`: one slot in N + 1 stays the fetcher's; a slot's kept
connections live in its worker, but for the few requests the fetcher sends
on a worker's slot itself: a redirect's robots.txt, a request sent again).

    Workers.run                 one keeper task per worker
    └── _keep(link)             start it, serve it, and start it again if it dies
        ├── Link._read          its replies, to the hops that wait for them
        ├── Wire.flush          what the socket did not take at once
        └── Link._watch         a Ping every HEARTBEAT_S; no Pong in HUNG_S: kill it

**Nothing is lost when a worker dies.** It is killed first if it hung, so
that nothing of it still writes; then each hop and publish waiting on it
ends with `WorkerLost`. The fetcher sends a hop's request again in its own
process, within the same attempt; a body the worker held unpublished is
downloaded again, as one more attempt; a file it had published is taken as
done (`fetcher._in_place`). The dead worker's temporary files are swept
from the job folders it had. A worker that cannot be started or never says
Hello, `START_FAILURES` times running, is given up on
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
from typing import Any, Final, Protocol

import structlog
import trio

from .. import metrics
from . import errands as e
from .body import BodyRules
from .filesink import TEMP_PREFIX, sweep_temp_files
from .prefork import Spare
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


class _Process(Protocol):
    """A worker's process: a `trio.Process`, or a spare's `prefork.Forked`."""

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, signum: int) -> None: ...


def next_id() -> int:
    return next(_ids)


class WorkerLost(Exception):
    """The worker died (or was killed, hung) before it answered."""


class WorkerCrashed(RuntimeError):
    """A worker's errand raised what no download raises: a bug, as it would be
    in the fetcher's own process. `remote_traceback`: where, in the worker."""

    def __init__(self, detail: str, remote_traceback: str = "") -> None:
        super().__init__(detail)
        self.remote_traceback = remote_traceback


def raise_reply(reply: e.Reply) -> None:
    """Raise what a Failed or Crashed reply says the worker raised."""
    if isinstance(reply, e.Failed):
        raise e.unpack_error(reply.error)
    if isinstance(reply, e.Crashed):
        raise WorkerCrashed(reply.detail, reply.traceback)


class RemoteSink:
    """A whole body that a worker holds (`filesink.FileSink`'s part, in a
    worker): `publish` has the worker publish it, `discard` drops it."""

    __slots__ = ("_folder", "_held", "_key", "_link", "size")

    def __init__(self, link: Link, key: int, folder: int, size: int) -> None:
        self._link = link
        self._key = key
        self._folder = folder
        self._held = True
        self.size = size

    async def publish(self, name: str, *, alias: str | None = None) -> str:
        """Have the worker publish the body, under `name` (the name its Got
        gave) or `alias`, as `GroupCommit.publish` does; the name it took.
        Raises WorkerLost, `AlreadyThere` or `WriteFailed`."""
        self._held = False  # the worker's now: a cancelled publish drops it
        reply = await self._link.publish(self._key, self._folder, alias)
        if isinstance(reply, e.Published) and reply.file in (name, alias):
            return reply.file
        raise_reply(reply)
        raise WorkerCrashed(f"a {type(reply).__name__} answered a publish")

    def discard(self) -> None:
        if self._held:
            self._held = False
            self._link.post(e.Cancel(self._key))


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
        # Hops and publishes waiting for their reply, by id.
        self._calls: dict[int, _Call] = {}
        # The job folders and rules it has, by the fetcher's descriptor or key.
        # (Each folder gets a key of its own, never the descriptor's number:
        # a job's descriptor may be reused by the next job's folder while the
        # worker still closes the first.)
        self._folders: dict[int, int] = {}
        self._rules: dict[tuple[BodyRules, str], int] = {}
        self._wire: Wire | None = None
        self._pong = trio.Event()
        self._pongs = 0
        self._hung = False

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
        """Send `hop` and wait for its reply. Raises WorkerLost. Cancelled, the
        hop is cancelled in the worker too: it sends nothing more, and a body
        it got is dropped."""
        if not self.ready:
            raise WorkerLost
        self.served += 1
        return await self._call(hop)

    async def publish(self, key: int, folder: int, alias: str | None = None) -> e.Reply:
        """Publish the body of hop `key`: Published or Failed. Raises WorkerLost."""
        if not self.ready:
            raise WorkerLost
        return await self._call(e.Publish(key, folder, alias))

    async def _call(self, errand: e.Hop | e.Publish) -> e.Reply:
        call = self._calls[errand.id] = _Call()
        self.post(errand)
        try:
            await call.done.wait()
        except BaseException:
            # Abandoned. If its reply has come meanwhile (trio checkpoints even
            # on a set event), a Got's body is dropped all the same.
            if self._calls.pop(errand.id, None) is not None or isinstance(call.reply, e.Got):
                self.post(e.Cancel(errand.id))
            raise
        if call.reply is None:
            raise WorkerLost
        return call.reply

    # -- its life -----------------------------------------------------------

    async def serve(
        self, setup: e.Setup, *, ready: Callable[[], object], spare: Spare | None = None
    ) -> bool:
        """Start the worker and serve it until it dies or the fetcher closes,
        calling `ready` once it has said Hello. False when it never did (it
        could not be started, exited first, or said nothing in `START_S`).
        With a `spare` (`prefork`), that is the worker; else it starts as a
        program of its own."""
        process: _Process
        if spare is not None:
            process, parent = spare.process, spare.sock
        else:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "imgdl_watch.download.workermain", str(child.fileno())],
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
            except OSError as exc:
                parent.close()
                log.warning("worker_not_started", worker=self.index, code=None, detail=str(exc))
                return False
            finally:
                child.close()
        wire = Wire(parent)
        self._pongs = 0
        try:
            return await self._serve(process, wire, setup, ready)
        finally:
            # Dead for the fetcher at once; its hops end only once it is gone
            # (killed if it does not exit: a hung one may still be writing),
            # so that no request sent again meets its first copy's file.
            self.ready = False
            self._wire = None
            wire.close()
            await _end(process, at_once=self._hung)
            self._hung = False
            await self._lost()

    async def _serve(
        self, process: _Process, wire: Wire, setup: e.Setup, ready: Callable[[], object]
    ) -> bool:
        wire.post(setup)
        hello = None
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
        while (reply := await wire.receive()) is not None and not wire.closed:
            if isinstance(reply, e.Pong):
                self._pongs = reply.id
                self._pong.set()
                continue
            assert isinstance(reply, e.Reply)
            call = self._calls.pop(reply.id, None)
            if call is None:
                if isinstance(reply, e.Got):  # abandoned meanwhile: drop its body
                    self.post(e.Cancel(reply.id))
                continue
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
            self._hung = True
            serving.cancel()
            return

    async def _lost(self) -> None:
        """Every errand waiting on the dead worker ends with WorkerLost; its
        temporary files go (swept in a thread: a job folder may be large)."""
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.done.set()
        folders = [os.dup(fd) for fd in self._folders] if self.token else []
        prefix = f"{TEMP_PREFIX}{self.token}-"
        self._folders.clear()
        self._rules.clear()
        with trio.CancelScope(shield=True):
            for fd in folders:
                try:
                    await trio.to_thread.run_sync(_sweep, fd, prefix)
                finally:
                    os.close(fd)


def _sweep(dir_fd: int, prefix: str) -> None:
    with contextlib.suppress(OSError):  # else the job's own sweep, at its next start
        sweep_temp_files(dir_fd, prefix)


async def _end(process: _Process, *, at_once: bool) -> None:
    """Wait for the worker to exit (its socket is closed), then kill it; kill
    it `at_once` when it is hung."""
    with trio.CancelScope(shield=True):
        if not at_once:
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

    def __init__(self, count: int, setup: e.Setup, *, spares: Sequence[Spare] = ()) -> None:
        self.links = [Link(i) for i in range(count)]
        self._setup = setup
        # Workers forked before the loop (`prefork`): the first life of as
        # many links; each other start is a program of its own.
        self._spares = list(spares)

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
            # All at once: each start takes ~0.3 s.
            async with trio.open_nursery() as starting:
                for link in self.links:
                    starting.start_soon(nursery.start, self._keep, link)
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
            spare = self._spares.pop() if self._spares else None
            if await link.serve(self._setup, ready=ready, spare=spare):
                failures = 0
                log.warning("worker_lost", worker=link.index, pid=link.pid)
                metrics.recorder.worker_lost()
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
