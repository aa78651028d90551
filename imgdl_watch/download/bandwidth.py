"""Bandwidth caps: bytes per second read, for the whole process and per host.

    ByteBucket   a token bucket of bytes (pure logic, on any clock)
    Bandwidth    the process's bucket and the hosts' (`--max-rate`, the table's
                 `max_rate`), and the body reader that honours them

A body is read a chunk at a time; after each chunk the reader pays for it in
every bucket that applies and, when a bucket is in debt, sleeps for as long
as the debt takes to repay before it reads the next. So the cap is smooth
(the server's sends are held back by TCP's window while we sleep), not a
burst then a long pause. Many downloads share a bucket fairly: each sleeps
for the debt it sees.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

import trio

# A bucket holds this many seconds of its rate: a body may go that far ahead
# of the cap before reads pause (small, so that the cap is smooth).
BURST_S = 0.1
# ... and never less than one read's worth, or every read would wait.
MIN_BURST_BYTES = 64 * 1024
# Hosts' buckets kept before idle, full ones are swept out.
SWEEP_AT = 256


@dataclass(slots=True)
class ByteBucket:
    """Bytes per second, with a small burst. Paying may go into debt."""

    rate: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, now: float) -> ByteBucket:
        bucket = cls(rate, 0.0, now)
        bucket.tokens = bucket.capacity
        return bucket

    @property
    def capacity(self) -> float:
        return max(self.rate * BURST_S, MIN_BURST_BYTES)

    def pay(self, size: int, now: float) -> float:
        """Pay for `size` bytes read at `now`. Returns seconds to wait before the next read."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def is_full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


class Bandwidth:
    """The process's cap and the hosts' caps. `host_rate(host)` is a host's, or 0 for none."""

    def __init__(self, rate: int, host_rate: Callable[[str], int]) -> None:
        self._host_rate = host_rate
        self._hosts: dict[str, ByteBucket] = {}
        self._users: dict[str, int] = {}
        self._process: ByteBucket | None = None
        self.set_rate(rate)

    def set_rate(self, rate: int) -> None:
        """A new cap for the process (config reload); hosts' caps are read as they are used."""
        self._process = ByteBucket.full(rate, trio.current_time()) if rate > 0 else None

    def capped(self, host: str) -> bool:
        return self._process is not None or self._host_rate(host) > 0

    def reader(self, host: str, body: AsyncIterable[bytes]) -> CappedBody:
        """`body`, read no faster than the caps of `host` allow. Close it when done."""
        buckets = [] if self._process is None else [self._process]
        rate = self._host_rate(host)
        if rate > 0:
            bucket = self._hosts.get(host)
            if bucket is None:
                if len(self._hosts) >= SWEEP_AT:
                    self._sweep()
                bucket = self._hosts[host] = ByteBucket.full(rate, trio.current_time())
            bucket.rate = rate  # a reload may have changed it
            self._users[host] = self._users.get(host, 0) + 1
            buckets.append(bucket)
        return CappedBody(body, buckets, lambda: self._done(host, rate > 0))

    def _done(self, host: str, counted: bool) -> None:
        if counted:
            left = self._users[host] - 1
            if left:
                self._users[host] = left
            else:
                del self._users[host]

    def _sweep(self) -> None:
        now = trio.current_time()
        for host, bucket in list(self._hosts.items()):
            if not self._users.get(host) and bucket.is_full(now):
                del self._hosts[host]


class CappedBody:
    """An async iterable of a body's chunks that pauses between reads to honour its buckets."""

    __slots__ = ("_body", "_buckets", "_done", "_iterator", "_resume")

    def __init__(
        self, body: AsyncIterable[bytes], buckets: list[ByteBucket], done: Callable[[], None]
    ) -> None:
        self._body = body
        self._buckets = buckets
        self._done: Callable[[], None] | None = done
        self._iterator: AsyncIterator[bytes] | None = None
        # When the next read may start (the buckets' debt repaid).
        self._resume = -math.inf

    def __aiter__(self) -> CappedBody:
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            self._iterator = aiter(self._body)
        if self._resume > trio.current_time():
            await trio.sleep_until(self._resume)
        chunk = await anext(self._iterator)
        now = trio.current_time()
        # The chunk is handed on at once; the next read waits out the debt.
        wait = max((bucket.pay(len(chunk), now) for bucket in self._buckets), default=0.0)
        self._resume = now + wait
        return chunk

    def close(self) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            done()
