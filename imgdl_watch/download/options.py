"""The fetcher's options, one value object, and the rules a download follows by default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .durability import Durability
from .hostrules import HostTable
from .retrypolicy import Backoff
from .rules import DownloadRules


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Everything that shapes a download, as one value object.

    `config.fetch_options` builds it from the settings of the same names,
    where the defaults are; `backoff` is ours, not a setting.
    """

    # Downloads in flight at once, across all jobs.
    concurrency: int
    # Downloads in flight at once to one host (the ceiling of its adaptive limit).
    per_host: int
    # Retries after the first attempt.
    retries: int
    # Largest body we save, in bytes.
    max_bytes: int
    user_agent: str
    # More request headers, (name, value), from `--header`.
    header: tuple[tuple[str, str], ...]
    # Seconds to establish a connection (TCP and TLS).
    connect_timeout: float
    # Seconds a read may stall before the attempt fails.
    read_timeout: float
    # Seconds one attempt may take in all, however the bytes trickle in.
    total_timeout: float
    # Redirects followed before giving up.
    max_redirects: int
    # Save any Content-Type, not only images.
    any_type: bool
    # Refuse loopback, private, link-local and other non-public addresses.
    block_private: bool
    # What a final name promises after a crash or a power loss (see `durability`).
    durability: Durability
    # Requests per second to one host, or None or 0 for none (`--rate-per-host`).
    rate_per_host: float | None
    # Seconds at least between two requests to one host, jittered; 0: none.
    min_gap: float
    # Bytes per second read by the whole process; 0: no cap.
    max_rate: int
    # Download what X-Robots-Tag opts out of, all the same.
    ignore_opt_outs: bool
    # Fetch each origin's robots.txt and honour it.
    robots: bool
    # The operator's per-host overrides (the config file's `[hosts]` table).
    hosts: HostTable
    # Download worker processes that run the requests (`workers`); 0: none,
    # every request runs in the fetcher's own process.
    workers: int = 0
    backoff: Backoff = field(default_factory=Backoff)

    def replace(self, **changes: object) -> FetchOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def default_rules(options: FetchOptions) -> DownloadRules:
    """The rules of a download that brings none: the fetcher's own options, no filters."""
    return DownloadRules(
        user_agent=options.user_agent,
        header=options.header,
        retries=options.retries,
        max_bytes=options.max_bytes,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        total_timeout=options.total_timeout,
        max_redirects=options.max_redirects,
        any_type=options.any_type,
    )
