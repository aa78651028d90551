"""What may differ from one job's downloads to another's, as one value object.

The fetcher is shared by every job: the global concurrency, the per-host
adaptive limits, the connections and the private-address guard are its
own. What a job may shape (a category's settings, see `config`) travels
with each of its downloads as `DownloadRules`: the request's headers,
retries, timeouts and redirects, what a body must be to be saved, and the
filters that keep an image or drop it.

Built once per job (by `config.download_rules`), it carries what the
fetcher derives from it, so that no download pays for building headers or
timeouts again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from .body import BodyRules, Filters
from .headers import RequestHeaders
from .hostlimits import HostLimits, HostSlot, Verdict


@dataclass(frozen=True, slots=True)
class DownloadRules:
    """One job's rules for its downloads (see the module's notes)."""

    user_agent: str
    # More request headers, (name, value); a later one of a name wins.
    header: tuple[tuple[str, str], ...]
    # Retries after the first attempt.
    retries: int
    # Largest body saved, in bytes.
    max_bytes: int
    # Seconds to connect, a read may stall, and one attempt may take in all.
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_redirects: int
    # Save any Content-Type, not only images.
    any_type: bool
    # Downloads of this job in flight to one host, when lower than the
    # fetcher's own per-host limit (which holds across all jobs); None: that alone.
    per_host: int | None = None
    # Downloads of this job in flight at once, when lower than the fetcher's
    # concurrency (which holds across all jobs); None: that alone.
    concurrency: int | None = None
    # Images dropped before they are published (see `body.Filters`).
    filters: Filters = field(default_factory=Filters)
    # Derived once, for every download that carries these rules.
    headers: RequestHeaders = field(init=False, repr=False, compare=False)
    body: BodyRules = field(init=False, repr=False, compare=False)
    timeouts: dict[str, Any] = field(init=False, repr=False, compare=False)
    limits: JobLimits = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "headers", RequestHeaders(user_agent=self.user_agent, extra=self.header))
        set_(
            self,
            "body",
            BodyRules(max_bytes=self.max_bytes, any_type=self.any_type, filters=self.filters),
        )
        # As httpcore takes them, per request: the pool never queues (our own
        # limiters bound the waiting).
        set_(
            self,
            "timeouts",
            {
                "timeout": {
                    "connect": self.connect_timeout,
                    "read": self.read_timeout,
                    "write": self.read_timeout,
                    "pool": None,
                }
            },
        )
        # The job's own limits: one set per rules object, so per job.
        set_(self, "limits", JobLimits(concurrency=self.concurrency, per_host=self.per_host))


class JobLimits:
    """A job's own concurrency and per-host limits, taken before the fetcher's
    shared ones, and only when lower than those (else the shared ones alone
    hold, and this costs nothing). Plain methods, as `HostLimits`: this runs
    once per attempt."""

    __slots__ = ("_hosts", "_limiter")

    def __init__(self, *, concurrency: int | None, per_host: int | None) -> None:
        self._limiter = trio.CapacityLimiter(concurrency) if concurrency else None
        self._hosts = HostLimits(per_host) if per_host else None

    async def acquire(self, host: str, *, concurrency: int, per_host: int) -> _Held:
        """Wait for this job's own slots under the shared `concurrency` and
        `per_host`; give them back with `release`, in the same task."""
        limiter = self._limiter
        if limiter is not None and limiter.total_tokens >= concurrency:
            limiter = None
        hosts = self._hosts
        if hosts is not None and hosts.ceiling >= per_host:
            hosts = None
        if limiter is None and hosts is None:
            return _NOTHING  # nearly every download
        if limiter is not None:
            await limiter.acquire()
        try:
            slot = await hosts.acquire(host) if hosts is not None else None
        except BaseException:
            if limiter is not None:
                limiter.release()
            raise
        return _Held(limiter, hosts, slot)

    def release(self, held: _Held, verdict: Verdict) -> None:
        if held.hosts is not None and held.slot is not None:
            held.hosts.release(held.slot, verdict)
        if held.limiter is not None:
            held.limiter.release()


@dataclass(frozen=True, slots=True)
class _Held:
    limiter: trio.CapacityLimiter | None
    hosts: HostLimits | None
    slot: HostSlot | None


_NOTHING = _Held(None, None, None)
