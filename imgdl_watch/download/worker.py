"""A download worker: a process of its own that runs requests for the fetcher.

Started by `workers` as `python -m imgdl_watch.download.worker FD`, where FD
is its end of a socketpair (`wire`). It holds no limit, no list and no
policy: the fetcher takes every limit and turn, and sends each request as a
`Hop` once it holds them. The worker sends it on the slot's own connections
(`transports`, the same code as in the fetcher's process), receives and
checks an image's body into a sink in the job's folder (`body`), and
publishes it (`filesink`, durable as
`--durability` says) at once, telling the fetcher first that it has it
(`errands`). So what runs here is the part of a download that costs CPU per
byte and per request: httpcore, h11, hashing, and the file's system calls.

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
from typing import Any

import httpx
import trio

from .. import errors as err
from ..naming import final_name
from . import errands as e
from .addressguard import guarding, literal_is_refused
from .body import receive
from .filesink import RUN_TOKEN, GroupCommit
from .optout import opt_out
from .redirects import REDIRECTS
from .translate import HTTP_ERRORS, translate
from .transports import Transports, request_timeout
from .wire import Wire

# Statuses whose body is the image (as in `fetcher`).
_OK = frozenset({200, 203})


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
        self._hops: dict[int, trio.CancelScope] = {}
        self.block_private = setup.block_private
        self.proxies = list(self._transports.proxies.values())

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._wire.flush)
                self._wire.post(e.Hello(os.getpid(), RUN_TOKEN))
                while (message := await self._wire.receive()) is not None:
                    self._take(message, nursery)
                nursery.cancel_scope.cancel()
        finally:
            for fd in self._folders.values():
                os.close(fd)
            await self._transports.aclose()

    def _take(self, message: object, nursery: trio.Nursery) -> None:
        match message:
            case e.Hop():
                scope = self._hops[message.id] = trio.CancelScope()
                nursery.start_soon(self._run, message, scope)
            case e.Cancel(id=key):
                hop = self._hops.get(key)
                if hop is not None:
                    hop.cancel()
            case e.Rules(key=key):
                self._rules[key] = message
            case e.Folder(key=key):
                self._folders[key] = self._wire.take_fd()
            case e.Forget(key=key):
                self._forgotten.add(key)
                self._close_unused(key)
            case e.Ping(id=key):
                self._wire.post(e.Pong(key))

    def _close_unused(self, key: int) -> None:
        if key in self._forgotten and not self._using.get(key):
            self._forgotten.discard(key)
            self._using.pop(key, None)
            fd = self._folders.pop(key, None)
            if fd is not None:
                os.close(fd)

    async def _run(self, hop: e.Hop, scope: trio.CancelScope) -> None:
        reply: e.Reply | None = None
        self._using[hop.folder] = self._using.get(hop.folder, 0) + 1
        try:
            with scope:
                reply = await self._outcome(hop)
        finally:
            self._using[hop.folder] -= 1
            self._close_unused(hop.folder)
            del self._hops[hop.id]
        # Abandoned (cancelled), nobody waits for a reply, and no file is left.
        if reply is not None and not scope.cancelled_caught:
            self._wire.post(reply)

    async def _outcome(self, hop: e.Hop) -> e.Reply:
        """The hop's last reply: Refused, Redirected, Published (after a Got),
        Failed or Crashed."""
        try:
            return await self._hop(hop)
        except (err.DownloadError, err.Filtered, err.AlreadyThere) as exc:
            return e.Failed(hop.id, e.pack_error(exc))
        except Exception as exc:  # a bug: the fetcher says so, once
            return e.Crashed(hop.id, f"{type(exc).__name__}: {exc}")

    async def _hop(self, hop: e.Hop) -> e.Reply:
        url = httpx.URL(hop.url)
        if self.block_private and literal_is_refused(url.host):
            raise err.BlockedAddress(f"{url.host} is not a public address")
        rules = self._rules[hop.rules]
        try:
            answer = await self._transports.send(hop.slot, url, hop.headers, rules.timeouts)
            try:
                location = answer.headers.get("location")
                if answer.status in REDIRECTS and location:
                    return e.Redirected(hop.id, location)
                if answer.status not in _OK:
                    return e.Refused(hop.id, answer.status, dict(answer.headers))
                if hop.token is not None and answer.robots_tags:
                    directive = opt_out(answer.robots_tags, hop.token)
                    if directive is not None:
                        raise err.OptedOut(f"X-Robots-Tag: {directive}")
                got = await receive(
                    answer, self._folders[hop.folder], rules.body, need_type=hop.need_type
                )
            finally:
                await answer.close()
        except HTTP_ERRORS as exc:
            raise translate(exc, url.host) from exc
        sink = got.sink
        try:
            file = final_name(hop.name, got.content_type, got.sniffed)
            self._wire.post(
                e.Got(
                    hop.id,
                    file,
                    sink.size,
                    got.content_type,
                    got.sniffed,
                    got.sha256,
                    got.width,
                    got.height,
                )
            )
            await self._commit.publish(sink, file)
        finally:
            sink.discard()
        return e.Published(hop.id)


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


def main(argv: list[str] | None = None) -> Any:
    args = sys.argv[1:] if argv is None else argv
    # The fetcher stops its workers by closing their sockets. systemd's
    # SIGTERM reaches the whole cgroup and a terminal's ^C the whole process
    # group: both are the fetcher's to handle (its grace, its drain).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        trio.run(_main, int(args[0]))


if __name__ == "__main__":
    main()
