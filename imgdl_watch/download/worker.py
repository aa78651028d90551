"""A download worker: a process of its own that runs requests for the fetcher.

Started by `workers` as `python -m imgdl_watch.download.workermain FD`
(which calls `main` here, once httpx's tool is kept out), where FD
is its end of a socketpair (`wire`). It holds no limit, no list and no
policy: the fetcher takes every limit and turn, and sends each request as a
`Hop` once it holds them. The worker runs it as the fetcher's process runs
its own (`exchange`: on the slot's own connections, an image's body
received and checked into a sink in the job's folder), and holds
it until the fetcher says to publish it (`filesink`, durable as
`--durability` says) or to drop it (`errands`). So what runs here is the
part of a download that costs CPU per byte and per request: httpcore, h11,
hashing, and the file's system calls.

It serves until its socket closes (the fetcher is done, or gone), then drops
every body it holds and exits. It logs nothing: every outcome is a reply,
and an unexpected error is a `Crashed` reply, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import traceback

import httpx
import trio

from .. import errors as err
from . import errands as e
from . import filesink
from .addressguard import guarding, literal_is_refused
from .exchange import Redirect, Refusal, exchange
from .filesink import FileSink, GroupCommit
from .transports import Transports, request_timeout
from .wire import Wire

# A worker's process name (`/proc/PID/comm`, 15 bytes at most).
PROCESS_NAME = "imgdl-worker"


class _Worker:
    def __init__(self, wire: Wire, setup: e.Setup) -> None:
        self._wire = wire
        self._transports = Transports(
            timeout=request_timeout(connect=setup.connect_timeout, read=setup.read_timeout)
        )
        self._commit = GroupCommit(setup.durability)
        self._rules: dict[int, e.Rules] = {}
        self._folders: dict[int, int] = {}
        # Hops running in each folder, and the folders the fetcher is done
        # with, closed once their last hop (a cancelled one, cleaning up) ends.
        self._using: dict[int, int] = {}
        self._forgotten: set[int] = set()
        # Hops and publishes running, by id, to cancel; bodies held for a
        # Publish, by their hop's id: the sink, its name, and its folder.
        self._running: dict[int, trio.CancelScope] = {}
        self._held: dict[int, tuple[FileSink, str, int]] = {}
        self.block_private = setup.block_private
        self.proxies = list(self._transports.proxies.values())

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wire.flush)
                self._wire.post(e.Hello(os.getpid(), filesink.RUN_TOKEN))
                while (message := await self._wire.receive()) is not None:
                    self._take(message, nursery)
                nursery.cancel_scope.cancel()
        finally:
            for sink, _name, _folder in self._held.values():
                sink.discard()
            for fd in self._folders.values():
                os.close(fd)
            await self._transports.aclose()

    def _take(self, message: object, nursery: trio.Nursery) -> None:
        match message:
            case e.Hop(folder=folder) | e.Publish(folder=folder):
                scope = self._running[message.id] = trio.CancelScope()
                self._use(folder, +1)
                nursery.start_soon(self._run, message, scope)
            case e.Cancel(id=key):
                running = self._running.get(key)
                if running is not None:
                    running.cancel()
                elif (held := self._held.pop(key, None)) is not None:
                    held[0].discard()
                    self._use(held[2], -1)
            case e.Rules(key=key):
                self._rules[key] = message
            case e.Folder(key=key):
                self._folders[key] = self._wire.take_fd()
            case e.Forget(key=key):
                self._forgotten.add(key)
                self._use(key, 0)
            case e.Ping(id=key):
                self._wire.post(e.Pong(key))

    def _use(self, folder: int, change: int) -> None:
        """Count the hops, publishes and held bodies in `folder`; close it once
        the fetcher is done with it and the last of them has ended (a
        cancelled one, cleaning up, needs it still)."""
        using = self._using[folder] = self._using.get(folder, 0) + change
        if folder in self._forgotten and using <= 0:
            self._forgotten.discard(folder)
            del self._using[folder]
            fd = self._folders.pop(folder, None)
            if fd is not None:
                os.close(fd)

    async def _run(self, errand: e.Hop | e.Publish, scope: trio.CancelScope) -> None:
        reply: e.Reply | None = None
        try:
            with scope:
                reply = await self._outcome(errand)
        finally:
            del self._running[errand.id]
            if not isinstance(reply, e.Got):  # a held body keeps its folder in use
                self._use(errand.folder, -1)
        # Abandoned (cancelled): nobody waits for a reply, and nothing is held.
        if reply is not None and not scope.cancelled_caught:
            self._wire.post(reply)

    async def _outcome(self, errand: e.Hop | e.Publish) -> e.Reply:
        """The errand's reply: Refused, Redirected, Got, Published, Failed or Crashed."""
        try:
            if isinstance(errand, e.Hop):
                return await self._hop(errand)
            return await self._publish(errand)
        except (err.DownloadError, err.Filtered, err.AlreadyThere) as exc:
            return e.Failed(errand.id, e.pack_error(exc))
        except Exception as exc:  # a bug: the fetcher says so, once
            where = "".join(traceback.format_exception(exc))
            return e.Crashed(errand.id, f"{type(exc).__name__}: {exc}", where)

    async def _publish(self, publish: e.Publish) -> e.Reply:
        held = self._held.pop(publish.id, None)
        if held is None:  # pragma: no cover - the fetcher publishes a body it was told of
            raise RuntimeError(f"no body held for {publish.id}")
        sink, name, folder = held
        self._use(folder, -1)  # the body's hold; this publish holds the folder now
        try:
            file = await self._commit.publish(sink, name, alias=publish.alias)
        finally:
            sink.discard()
        return e.Published(publish.id, file)

    async def _hop(self, hop: e.Hop) -> e.Reply:
        url = httpx.URL(hop.url)
        if self.block_private and literal_is_refused(url.host):
            raise err.BlockedAddress(f"{url.host} is not a public address")
        rules = self._rules[hop.rules]
        step = await exchange(
            self._transports,
            hop.slot,
            url,
            hop.headers,
            rules.timeouts,
            body=rules.body,
            dir_fd=self._folders[hop.folder],
            name=hop.name,
            opt_out_token=hop.token,
            source=hop.source,
        )
        if isinstance(step, Redirect):
            return e.Redirected(hop.id, step.location)
        if isinstance(step, Refusal):
            return e.Refused(hop.id, step.status, dict(step.headers))
        file, got = step
        sink = got.sink
        self._held[hop.id] = (sink, file, hop.folder)
        kind, size = got.content_type, (got.width, got.height)
        return e.Got(hop.id, file, sink.size, kind, got.sniffed, got.sha256, *size)


async def _main(fd: int) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
    wire = Wire(sock)
    try:
        setup = await wire.receive()
        if not isinstance(setup, e.Setup):  # pragma: no cover - the fetcher sends one
            return
        worker = _Worker(wire, setup)
        # Proxies are the operator's own (see `addressguard`).
        proxies = (httpx.URL(p).host for p in worker.proxies)
        with guarding(exempt=proxies) if setup.block_private else contextlib.nullcontext():
            await worker.serve()
    finally:
        wire.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # The fetcher stops its workers by closing their sockets. systemd's
    # SIGTERM reaches the whole cgroup and a terminal's ^C the whole process
    # group: both are the fetcher's to handle (its grace, its drain).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # Its name in ps, top and the journal's _COMM: a forked worker's command
    # line is the daemon's own, and a program's is only python's.
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(PROCESS_NAME)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        trio.run(_main, int(args[0]))
