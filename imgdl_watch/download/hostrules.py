"""The operator's per-host overrides, the config file's `[hosts."name"]` table: pure logic.

    [hosts."i.imgur.com"]
    rate = 2                                # requests per second (--rate-per-host; 0: none)
    min_gap = 0.5                           # seconds between requests (--min-gap)
    per_host = 4                            # downloads in flight at once (--per-host)
    max_rate = "1M"                         # bytes per second read (--max-rate)
    header = ["Referer: https://imgur.com/"]  # more request headers (--header)

A name is a host (`i.imgur.com`), or `*.example.com` for a domain: the
domain itself and every name under it. A host's own entry wins over a
domain's, and a longer domain over a shorter one. A key left out falls back
to the option of the same name.

`config` checks each key and builds the `HostTable`; it comes only from the
operator's config file, never from a list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostRule:
    """One entry of the table. None: the option of the same name applies."""

    # `i.imgur.com`, or `*.example.com`; lower case.
    name: str
    rate: float | None = None
    min_gap: float | None = None
    per_host: int | None = None
    max_rate: int | None = None
    # Headers sent to the host besides (and over) `--header`'s.
    header: tuple[tuple[str, str], ...] = ()


class HostTable:
    """The rules, found by host."""

    __slots__ = ("_domains", "_exact", "rules")

    def __init__(self, rules: Iterable[HostRule] = ()) -> None:
        self.rules = tuple(rules)
        self._exact = {r.name: r for r in self.rules if not r.name.startswith("*.")}
        self._domains = {r.name[2:]: r for r in self.rules if r.name.startswith("*.")}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostTable) and other.rules == self.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __repr__(self) -> str:
        return f"HostTable({list(self.rules)!r})"

    def match(self, host: str) -> HostRule | None:
        """The rule for `host`: its own, else its longest domain's, else None."""
        if not self.rules:
            return None
        host = host.lower().rstrip(".")
        rule = self._exact.get(host)
        if rule is not None or not self._domains:
            return rule
        while True:
            rule = self._domains.get(host)
            if rule is not None:
                return rule
            _, dot, host = host.partition(".")
            if not dot:
                return None


def is_host_name(name: str) -> bool:
    """Whether a table key names a host, an IP address, or a domain (`*.example.com`)."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    bare = name[2:] if name.startswith("*.") else name
    labels = bare.split(".")
    return bool(bare) and all(
        label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
        for label in labels
    )
