"""Per-host concurrency that adapts to how a host answers.

Each host gets a `trio.CapacityLimiter` whose size moves between 1 and the
per-host cap (the ceiling). A 429 or 503 halves it; a full window of good
answers at the current size raises it by one (additive increase,
multiplicative decrease, as TCP does). So a host that pushes back gets fewer
requests at once, and one that answers well climbs back slowly to the cap.

Limiters of idle hosts at the ceiling are dropped, so that a list with a
million hosts does not keep a million limiters.
"""

from __future__ import annotations

import enum
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


class HostLimits:
    """Adaptive per-host concurrency with a shared ceiling."""

    def __init__(self, ceiling: int) -> None:
        self._ceiling = ceiling
        self._hosts: dict[str, HostSlot] = {}

    @property
    def ceiling(self) -> int:
        return self._ceiling

    def set_ceiling(self, ceiling: int) -> None:
        """Apply a new per-host cap (config reload) to every known host."""
        old, self._ceiling = self._ceiling, ceiling
        for host in self._hosts.values():
            current = int(host.limiter.total_tokens)
            # A host at the old cap follows the new one; a throttled host keeps
            # its lower limit and climbs from there.
            host.limiter.total_tokens = ceiling if current >= old else min(current, ceiling)

    def limit_of(self, host: str) -> int:
        entry = self._hosts.get(host)
        return self._ceiling if entry is None else int(entry.limiter.total_tokens)

    async def acquire(self, host: str) -> HostSlot:
        """Wait for a slot of `host`. Give it back with `release` in the same task.

        (Plain methods rather than a context manager: this runs once per
        attempt, and a generator-based context manager costs several times more.)
        """
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = HostSlot(host, trio.CapacityLimiter(self._ceiling))
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
        if verdict is Verdict.BUSY:
            # Halve its concurrency.
            entry.good = 0
            entry.limiter.total_tokens = max(1, int(entry.limiter.total_tokens) // 2)
        elif verdict is Verdict.GOOD:
            # After a full window of good answers, allow one more.
            limit = int(entry.limiter.total_tokens)
            if limit < self._ceiling:
                entry.good += 1
                if entry.good >= limit:
                    entry.good = 0
                    entry.limiter.total_tokens = limit + 1
        self._forget_if_idle(entry)

    def _forget_if_idle(self, entry: HostSlot) -> None:
        entry.users -= 1
        if entry.users == 0 and entry.limiter.total_tokens >= self._ceiling:
            del self._hosts[entry.host]
