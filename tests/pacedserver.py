"""A real HTTP server inside the test's own trio run, for timing on MockClock.

It listens on 127.0.0.N (each address a host of its own) and logs the time
of every request on trio's clock, so that a test on `MockClock` reads the
same clock the fetcher paces by. HTTP/1.1 with keep-alive, GET only.
Routes, by the first path segment:

    /img/...            200, a small JPEG
    /slow/MS/...        the JPEG after MS milliseconds (trio's clock)
    /ra/N/...           429 with Retry-After: N the first time, then the JPEG
    /noai/...           X-Robots-Tag: noai, a Content-Length of 1 GB, then a body
                        streamed until the client goes (`body_bytes_sent` counts it)
    /big/BYTES/...      a JPEG of BYTES bytes, sent in 64 KiB writes
    /robots.txt         `robots`: text, an int status, or "endless"
    anything else       404
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from imgdl_watch import errors as err
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.options import FetchOptions
from tests.helpers import fetch_options

# Real seconds of idleness before the mock clock jumps to the next deadline:
# a loopback answer, or a thread hop (a file's publish), nearly always comes
# within it, so the clock jumps when every task waits for a deadline.
AUTOJUMP_S = 0.005
# A tick of the mock clock, always due: should a loaded machine make a thread
# hop outlast AUTOJUMP_S, the clock jumps this far at most, not to a timeout.
TICK_S = 0.1
NEVER = 1e6

Outcome = dict[str, object]


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are published without fdatasync: its thread hop can outlast
    AUTOJUMP_S on a busy disk, and durability is not what these tests time."""
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def on_mock_clock(main: Callable[[], Awaitable[None]]) -> None:
    async def ticking() -> None:
        async with trio.open_nursery() as nursery:

            async def tick() -> None:
                while True:
                    await trio.sleep(TICK_S)

            nursery.start_soon(tick)
            await main()
            nursery.cancel_scope.cancel()

    trio.run(ticking, clock=trio.testing.MockClock(autojump_threshold=AUTOJUMP_S))


def options(**changes: object) -> FetchOptions:
    timeouts = {"connect_timeout": NEVER, "read_timeout": NEVER, "total_timeout": NEVER}
    return fetch_options(**timeouts, **changes)


async def download_all(fetcher: Fetcher, urls: list[str], folder: Path) -> Outcome:
    """Download every URL at once; each URL's Downloaded, or the error it raised."""
    folder.mkdir(exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    outcomes: Outcome = {}

    async def one(i: int, url: str) -> None:
        try:
            outcomes[url] = await fetcher.download(url, dir_fd=fd, name=f"{i}.jpg")
        except err.DownloadError as exc:
            outcomes[url] = exc

    try:
        async with trio.open_nursery() as nursery:
            for i, url in enumerate(urls):
                nursery.start_soon(one, i, url)
    finally:
        os.close(fd)
    return outcomes


JPEG = b"\xff\xd8\xff\xe0" + b"j" * 996
CHUNK = 64 * 1024


@dataclass
class Hit:
    host: str
    path: str
    at: float


@dataclass
class PacedServer:
    """Start with `await nursery.start(server.serve, "127.0.0.2")`; `base` is its URL."""

    # robots.txt: its text, a status to answer with, or "endless".
    robots: str | int = 404
    hits: list[Hit] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # Body bytes of /noai/ answers that the client's socket took.
    body_bytes_sent: int = 0
    # Set when a /noai/ answer's client went away.
    noai_closed: trio.Event = field(default_factory=trio.Event)
    # Seconds before a new connection's first request is read: a TLS
    # handshake's round trips, or a loaded server's accept queue.
    handshake_s: float = 0.0
    # The first connection alone: its first request is read this late, and
    # answered this long after (one slow handshake, then a slow answer).
    late_first_s: float = 0.0
    connections: int = 0
    # Each request after the first `slow_after` (in the order they are read)
    # is answered `slow_s` late, whatever its path.
    slow_after: int | None = None
    slow_s: float = 0.0
    base: str = ""

    def times(self, prefix: str = "/") -> list[float]:
        return [h.at for h in self.hits if h.path.startswith(prefix)]

    async def serve(self, address: str, *, task_status: trio.TaskStatus[str]) -> None:
        listeners = await trio.open_tcp_listeners(0, host=address)
        port = listeners[0].socket.getsockname()[1]
        self.base = f"http://{address}:{port}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started(self.base)

    async def _connection(self, stream: trio.SocketStream) -> None:
        buffer = b""
        self.connections += 1
        late = self.late_first_s if self.connections == 1 else 0.0
        try:
            if self.handshake_s or late:
                await trio.sleep(self.handshake_s + late)
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                path = head.split(b"\r\n")[0].split(b" ")[1].decode()
                address = stream.socket.getsockname()[0]
                self.hits.append(Hit(address, path, trio.current_time()))
                self.counts[path] += 1
                if late:
                    await trio.sleep(late)
                    late = 0.0
                elif self.slow_after is not None and len(self.hits) > self.slow_after:
                    await trio.sleep(self.slow_s)
                if not await self._answer(stream, path):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    async def _answer(self, stream: trio.SocketStream, path: str) -> bool:
        """Answer one request; False when the connection is done."""
        seg = path.strip("/").split("/")
        if seg[0] == "img":
            await _send(stream, 200, JPEG)
        elif seg[0] == "slow":
            await trio.sleep(int(seg[1]) / 1000)
            await _send(stream, 200, JPEG)
        elif seg[0] == "ra":
            if self.counts[path] == 1:
                await _send(stream, 429, b"later", "text/plain", {"Retry-After": seg[1]})
            else:
                await _send(stream, 200, JPEG)
        elif seg[0] == "noai":
            await self._noai(stream)
            return False
        elif seg[0] == "big":
            size = int(seg[1])
            await _send_head(stream, 200, "image/jpeg", {"Content-Length": str(size)})
            sent = 0
            while sent < size:
                piece = min(CHUNK, size - sent)
                await stream.send_all(JPEG[:4] + b"b" * (piece - 4) if sent == 0 else b"b" * piece)
                sent += piece
        elif path == "/robots.txt":
            await self._robots(stream)
        else:
            await _send(stream, 404, b"not here", "text/plain")
        return True

    async def _noai(self, stream: trio.SocketStream) -> None:
        headers = {"X-Robots-Tag": "noai", "Content-Length": str(10**9)}
        await _send_head(stream, 200, "image/jpeg", headers)
        try:
            await stream.send_all(JPEG[:4])
            while True:
                await stream.send_all(b"n" * CHUNK)
                self.body_bytes_sent += CHUNK
        finally:
            self.noai_closed.set()

    async def _robots(self, stream: trio.SocketStream) -> None:
        if isinstance(self.robots, int):
            await _send(stream, self.robots, b"no robots here", "text/plain")
        elif self.robots == "endless":
            await _send_head(stream, 200, "text/plain", {"Transfer-Encoding": "chunked"})
            line = b"User-agent: *\nDisallow: /img/never/\n" + b"# " + b"x" * 4000 + b"\n"
            while True:  # the client stops reading: a broken pipe ends it
                await stream.send_all(b"%x\r\n%s\r\n" % (len(line), line))
        else:
            await _send(stream, 200, self.robots.encode(), "text/plain")


async def _send_head(
    stream: trio.SocketStream, status: int, ctype: str, headers: dict[str, str]
) -> None:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {ctype}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())


async def _send(
    stream: trio.SocketStream,
    status: int,
    body: bytes,
    ctype: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> None:
    await _send_head(stream, status, ctype, {**(headers or {}), "Content-Length": str(len(body))})
    await stream.send_all(body)
