"""What each host has seen of us, for `status` and `/metrics`: pure counters.

    HostCounts   requests sent, opt-outs met, seconds paused (one host's)
    HostStats    the counts of the hosts seen last, `MAX_HOSTS` at most
    HostState    one host as `status` shows it: concurrency against its
                 ceiling, its rate, its pause, its opt-outs (a value)

The table forgets the host seen longest ago beyond `MAX_HOSTS`, so that a
list of a million hosts keeps a bounded table (the metrics' own counters are
cumulative and bounded by `metrics.MAX_HOST_LABELS`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..metrics import MAX_HOST_LABELS

# Hosts whose counts are kept.
MAX_HOSTS = MAX_HOST_LABELS


@dataclass(slots=True)
class HostCounts:
    requests: int = 0
    opt_outs: int = 0
    paused_s: float = 0.0


@dataclass(frozen=True, slots=True)
class HostState:
    host: str
    # Downloads with a request out to the host now; those holding one of its
    # slots while they wait for its turn (its rate, gap or pause); and its
    # limit on both together now (adaptive, at most its ceiling).
    in_flight: int
    waiting: int
    limit: int
    ceiling: int
    # Requests per second allowed (None: no rate), and the least gap.
    rate: float | None
    min_gap_s: float
    # Requests sent, in all.
    requests: int
    # Seconds paused in all (Retry-After), and left of the pause now.
    paused_s: float
    paused_for_s: float
    # URLs the host opted out (X-Robots-Tag) or robots.txt disallowed.
    opt_outs: int


class HostStats:
    """The counts of the hosts seen last."""

    def __init__(self, limit: int = MAX_HOSTS) -> None:
        self._limit = limit
        self._hosts: OrderedDict[str, HostCounts] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hosts)

    def get(self, host: str) -> HostCounts:
        """The host's counts, now the most recently seen."""
        counts = self._hosts.get(host)
        if counts is None:
            counts = self._hosts[host] = HostCounts()
            if len(self._hosts) > self._limit:
                self._hosts.popitem(last=False)
        else:
            self._hosts.move_to_end(host)
        return counts

    def peek(self, host: str) -> HostCounts:
        return self._hosts.get(host) or HostCounts()

    def recent(self, count: int) -> list[str]:
        """The `count` hosts seen last, the latest first."""
        hosts: list[str] = []
        for host in reversed(self._hosts):
            if len(hosts) >= count:
                break
            hosts.append(host)
        return hosts
