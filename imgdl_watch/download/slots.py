"""The global limit: numbered download slots, taken on the host's turn.

Each slot owns its connections (`connections`), which is why slots have
numbers. The limiter is a `trio.CapacityLimiter`, which serves waiters in FIFO
order: running jobs take turns, so a short list is not starved behind a huge
one.

A paced or paused host waits for its turn (`pacing`) holding no slot, so that
other hosts keep every slot while one host is paced. The turn is taken once
the slot is in hand, right before the request, so that the rate holds on the
times requests are really sent: a turn taken and then kept waiting for a slot
would let turns bunch up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .pacing import Pacer, Turn


class Slots:
    """`concurrency` numbered slots; a reload may change how many."""

    def __init__(self, concurrency: int, pacer: Pacer) -> None:
        self._limiter = trio.CapacityLimiter(concurrency)
        self._free = list(range(concurrency))
        self._ids = concurrency
        self._pacer = pacer

    @property
    def in_flight(self) -> int:
        return int(self._limiter.borrowed_tokens)

    @property
    def total(self) -> int:
        return int(self._limiter.total_tokens)

    def idle(self) -> list[int]:
        """The ids of the slots free now (in no particular order)."""
        return list(self._free)

    def resize(self, concurrency: int) -> None:
        # Slot ids are never taken away: after a decrease, the limiter alone
        # keeps the extra slots idle, and a later increase reuses them.
        if concurrency > self._ids:
            self._free.extend(range(self._ids, concurrency))
            self._ids = concurrency
        self._limiter.total_tokens = concurrency

    async def take(self, host: str) -> tuple[int, Turn | None]:
        """A slot, once it is `host`'s turn; give it back with `give`. With it,
        the turn taken on the host's schedule (None when the host has none),
        whose attempt's end the pacer must hear (`Pacer.answered`)."""
        turn = await self._on_turn(host)
        return self._free.pop(), turn

    def give(self, slot: int) -> None:
        self._free.append(slot)
        self._limiter.release()

    @asynccontextmanager
    async def one(self) -> AsyncIterator[int]:
        """A slot of its own, whatever the pacing (a robots.txt, before its download's)."""
        async with self._limiter:
            slot = self._free.pop()
            try:
                yield slot
            finally:
                self._free.append(slot)

    async def _on_turn(self, host: str) -> Turn | None:
        pacer = self._pacer
        if not pacer.active(host):
            await self._limiter.acquire()
            return None
        entry = pacer.enter(host)
        try:
            async with entry.lock:
                while True:
                    await pacer.wait(entry, host)
                    await self._limiter.acquire()
                    # A pause may have come while we waited for the slot.
                    if pacer.take(entry, host):
                        return entry
                    self._limiter.release()
        finally:
            pacer.leave(entry, host)
