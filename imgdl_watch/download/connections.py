"""A download slot's own keep-alive connections, without a connection pool.

Design note
-----------
httpx sends through httpcore's `AsyncConnectionPool`, which is built for
many tasks sharing connections: every request makes a `PoolRequest` with an
event, scans the pool under a lock to assign a connection, wraps the body in
a stream that scans again when it closes, and asks each idle connection
whether the server closed it (`has_expired` -> `is_readable`, one `poll`
system call per connection per scan; httpcore PRs #924 and #928). A
downloader has no sharing to arbitrate. A download holds one of
`concurrency` slots for its whole life, so a slot can own its connections
outright: `SlotConnections` keeps at most `SLOT_CONNECTIONS` httpcore
`AsyncHTTPConnection`s, one per origin, and hands the one for a request's
origin straight to it. Measured on the benchmark's static set, the pool and
httpx's transport around it cost ~0.2 ms of CPU per image.

The one question the pool answered that still needs an answer is whether a
kept connection is still open. As httpcore PR #924 does, we ask the socket
only now and then: a connection used less than `IDLE_CHECK_S` ago is reused
as is, since servers close idle connections after seconds, not
milliseconds. A server may still close one just as we reuse it; then the
request fails before any answer (the server "disconnected without sending a
response", or the socket was reset). A GET that failed that way on a
*reused* connection is sent again at once on a fresh one, as browsers and
curl do. It is not a failed attempt: nothing was answered, and no backoff is
owed. A fresh connection that fails is an error like any other.

Connections are the slot's alone, so nothing here takes a lock: the fetcher
gives a slot to one download at a time.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import httpcore

# Connections a slot keeps, one per origin. Two lets a slot alternate between
# two hosts (or a host and its CDN) without reconnecting; the least recently
# used is closed to make room for a third.
SLOT_CONNECTIONS = 2
# Idle keep-alive connections are closed after this long.
KEEPALIVE_S = 15.0
# A connection idle for less than this is reused without asking the socket
# whether the server closed it (a `poll` per request, see the design note).
IDLE_CHECK_S = 1.0

# How a request fails when the server had closed the connection it went out on.
_STALE = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)

# An origin as a key: httpcore's `Origin` compares by value but is not hashable.
_Key = tuple[bytes, bytes, int]


class SlotConnections:
    """The keep-alive connections of one download slot, by origin."""

    __slots__ = ("_connections", "_ssl_context", "_used_at")

    def __init__(self, ssl_context: Callable[[bool], ssl.SSLContext]) -> None:
        # `ssl_context(tls)`: the shared context for https (True) or http (False).
        self._ssl_context = ssl_context
        # Least recently used first (dicts keep insertion order).
        self._connections: dict[_Key, httpcore.AsyncHTTPConnection] = {}
        self._used_at: dict[_Key, float] = {}

    async def send(self, request: httpcore.Request) -> httpcore.Response:
        """Send `request` on this slot's connection to its origin; raises httpcore's errors."""
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        connection = self._connections.pop(key, None)
        now = time.monotonic()
        reused = connection is not None and self._reusable(connection, self._used_at[key], now)
        if connection is not None and not reused:
            await connection.aclose()
            connection = None
        if connection is None:
            await self._make_room()
            connection = self._open(origin)
        self._connections[key] = connection
        self._used_at[key] = now
        try:
            return await connection.handle_async_request(request)
        except _STALE:
            if not reused:
                raise
        # The server had closed the kept connection: once more, on a new one.
        await connection.aclose()
        connection = self._connections[key] = self._open(origin)
        return await connection.handle_async_request(request)

    def __len__(self) -> int:
        return len(self._connections)

    @staticmethod
    def _reusable(connection: httpcore.AsyncHTTPConnection, used_at: float, now: float) -> bool:
        # Not available: a body not read to its end, a close asked for, a failure.
        if not connection.is_available():
            return False
        if now - used_at < IDLE_CHECK_S:
            return True
        # Past its keep-alive time, or closed by the server (the socket is readable).
        return not connection.has_expired()

    def _open(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        # Connects on its first request, with that request's connect timeout.
        return httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self._ssl_context(origin.scheme == b"https"),
            keepalive_expiry=KEEPALIVE_S,
        )

    async def _make_room(self) -> None:
        while len(self._connections) >= SLOT_CONNECTIONS:
            oldest = next(iter(self._connections))
            del self._used_at[oldest]
            await self._connections.pop(oldest).aclose()

    async def aclose(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        self._used_at.clear()
        for connection in connections:
            await connection.aclose()
