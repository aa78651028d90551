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
from .hostlimits import HostLimits


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
    hosts: HostLimits | None = field(init=False, repr=False, compare=False)
    limiter: trio.CapacityLimiter | None = field(init=False, repr=False, compare=False)

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
        set_(self, "hosts", HostLimits(self.per_host) if self.per_host else None)
        set_(
            self,
            "limiter",
            trio.CapacityLimiter(self.concurrency) if self.concurrency else None,
        )
