"""Per-host concurrency that adapts to how a host answers.

Each host gets a `trio.CapacityLimiter` whose size moves between 1 and the
per-host cap (the ceiling). A 429 or 503 halves it; a full window of good
answers at the current size raises it by one (additive increase,
multiplicative decrease, as TCP does). So a host that pushes back gets fewer
requests at once, and one that answers well climbs back slowly to the cap.

Limiters of idle hosts at the ceiling are dropped, so that a list with a
million hosts does not keep a million limiters.

A host's ceiling is the shared one, unless `overrides` gives it its own (the
config file's `[hosts]` table).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import trio


class Verdict(enum.Enum):
    """How a host answered one attempt, as its limit sees it."""

    # A whole answer: the host copes.
    GOOD = "good"
    # 429 or 503: the host asks for fewer requests.
    BUSY = "busy"
    # Anything else (a 404, a timeout, a stop): says nothing about the host's load.
    NEUTRAL = "neutral"


@dataclass(slots=True)
class HostSlot:
    """A host's limiter and counters. `acquire` hands one out; give it back to `release`."""

    host: str
    limiter: trio.CapacityLimiter
    good: int = 0
    users: int = 0
    # The host's ceiling, as it was when last looked up.
    ceiling: int = 0


def _no_overrides(host: str) -> int | None:
    return None


class HostLimits:
    """Adaptive per-host concurrency with a shared ceiling."""

    def __init__(
        self, ceiling: int, *, overrides: Callable[[str], int | None] = _no_overrides
    ) -> None:
        self._ceiling = ceiling
        self._overrides = overrides
        self._hosts: dict[str, HostSlot] = {}
        # Set when a slot is given back, for whoever waits in `given_back`.
        self._given_back: trio.Event | None = None

    async def given_back(self) -> None:
        """Return once any host's slot is given back."""
        if self._given_back is None:
            self._given_back = trio.Event()
        await self._given_back.wait()

    @property
    def ceiling(self) -> int:
        return self._ceiling

    def ceiling_of(self, host: str) -> int:
        override = self._overrides(host)
        return self._ceiling if override is None else override

    def set_ceiling(self, ceiling: int) -> None:
        """Apply a new per-host cap, or new overrides (config reload), to every known host."""
        self._ceiling = ceiling
        for host in self._hosts.values():
            old, new = host.ceiling, self.ceiling_of(host.host)
            current = int(host.limiter.total_tokens)
            # A host at the old cap follows the new one; a throttled host keeps
            # its lower limit and climbs from there.
            host.limiter.total_tokens = new if current >= old else min(current, new)
            host.ceiling = new

    def limit_of(self, host: str) -> int:
        entry = self._hosts.get(host)
        return self.ceiling_of(host) if entry is None else int(entry.limiter.total_tokens)

    def saturated(self, host: str) -> bool:
        """Whether every slot of `host` is taken or waited for."""
        entry = self._hosts.get(host)
        return entry is not None and entry.users >= entry.limiter.total_tokens

    def in_flight(self, host: str) -> int:
        entry = self._hosts.get(host)
        return 0 if entry is None else int(entry.limiter.borrowed_tokens)

    def busy_hosts(self) -> list[str]:
        """Hosts with a download in flight or waiting, or below their ceiling."""
        return list(self._hosts)

    async def acquire(self, host: str) -> HostSlot:
        """Wait for a slot of `host`. Give it back with `release` in the same task.

        (Plain methods rather than a context manager: this runs once per
        attempt, and a generator-based context manager costs several times more.)
        """
        entry = self._hosts.get(host)
        if entry is None:
            ceiling = self.ceiling_of(host)
            entry = self._hosts[host] = HostSlot(
                host, trio.CapacityLimiter(ceiling), ceiling=ceiling
            )
        entry.users += 1
        try:
            await entry.limiter.acquire()
        except BaseException:
            self._forget_if_idle(entry)
            raise
        return entry

    def release(self, entry: HostSlot, verdict: Verdict) -> None:
        """Give the slot back, with what the attempt showed of the host."""
        entry.limiter.release()
        if self._given_back is not None:
            self._given_back.set()
            self._given_back = None
        if verdict is Verdict.BUSY:
            # Halve its concurrency.
            entry.good = 0
            entry.limiter.total_tokens = max(1, int(entry.limiter.total_tokens) // 2)
        elif verdict is Verdict.GOOD:
            # After a full window of good answers, allow one more.
            limit = int(entry.limiter.total_tokens)
            if limit < entry.ceiling:
                entry.good += 1
                if entry.good >= limit:
                    entry.good = 0
                    entry.limiter.total_tokens = limit + 1
        self._forget_if_idle(entry)

    def _forget_if_idle(self, entry: HostSlot) -> None:
        entry.users -= 1
        if entry.users == 0 and entry.limiter.total_tokens >= entry.ceiling:
            del self._hosts[entry.host]
