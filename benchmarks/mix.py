"""The mix set: one list over many hosts that behave as real ones do, and its physical limit.

24 hosts on loopback (127.0.0.2 to 127.0.0.25, one port), each an nginx
server of its own:

- 22 ordinary hosts, with latencies spread evenly on a log scale from 20 ms
  to 500 ms (`echo_sleep` before every answer, 404s included) and shares of
  the list that fall off gently (Zipf, exponent 0.5), latencies and shares
  paired by a seeded shuffle;
- one host that stalls: it accepts the connection, reads the request and
  answers nothing for `STALL_SLEEP_S`, far past every tool's read timeout
  (`READ_TIMEOUT_S`), so each of its URLs fails by timeout, every attempt;
- one host that answers 429 past a rate (`limit_req`: `RATE_PER_S` a
  second, a burst of `BURST`, `Retry-After: 1`), 50 ms per admitted answer.

2% of the URLs are 404s (on ordinary hosts, with their latency). Every other
URL is one of the corpus's images, so what each tool saved is checked byte
for byte. The list is shuffled, as a list gathered from many pages is.

`limit()` is the physical limit of a schedule: see `benchmarks/README.md`.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from pathlib import Path

FIRST_ADDRESS = 2  # 127.0.0.2
ORDINARY_HOSTS = 22
LATENCY_MS = (20, 500)
ZIPF = 0.5
SEED = 19  # issue #19
STALL_URLS = 8
STALL_SLEEP_S = 30
RATE_URLS = 40
RATE_PER_S = 10
BURST = 10
RATE_LATENCY_S = 0.05
NOT_FOUND_SHARE = 0.02
# What every tool is given on the mix, alike: concurrency, per-host cap (a
# peer without one gets none), attempts per URL and timeouts.
CONCURRENCY = 128
PER_HOST = 8
ATTEMPTS = 2
CONNECT_TIMEOUT_S = 2
READ_TIMEOUT_S = 2


@dataclass(frozen=True)
class Host:
    address: str
    role: str  # "ordinary", "stall" or "429"
    latency_s: float
    paths: tuple[str, ...]  # corpus images
    missing: tuple[str, ...] = ()  # 404s

    @property
    def urls(self) -> int:
        return len(self.paths) + len(self.missing)


@dataclass(frozen=True)
class Mix:
    hosts: tuple[Host, ...]
    port: int

    def url(self, host: Host, path: str) -> str:
        return f"http://{host.address}:{self.port}{path}"

    def lines(self) -> list[str]:
        lines = [self.url(h, p) for h in self.hosts for p in (*h.paths, *h.missing)]
        random.Random(SEED).shuffle(lines)
        return lines

    @property
    def urls(self) -> int:
        return sum(h.urls for h in self.hosts)

    @property
    def not_found(self) -> int:
        return sum(len(h.missing) for h in self.hosts)

    @property
    def stalled(self) -> int:
        return sum(len(h.paths) for h in self.hosts if h.role == "stall")

    @property
    def obtainable(self) -> int:
        """Images a tool can save: every corpus URL but the stalled host's."""
        return sum(len(h.paths) for h in self.hosts if h.role != "stall")

    def nginx_servers(self, root: Path) -> str:
        """The http-context directives and one server block per host."""
        blocks = [
            f"limit_req_zone $binary_remote_addr zone=mix429:1m rate={RATE_PER_S}r/s;",
            # Retry-After on the 429s only (an empty value adds no header).
            'map $status $mix_retry_after { 429 "1"; default ""; }',
        ]
        for host in self.hosts:
            delay = STALL_SLEEP_S if host.role == "stall" else host.latency_s
            limited = ""
            if host.role == "429":
                limited = (
                    f"limit_req zone=mix429 burst={BURST} nodelay; limit_req_status 429; "
                    "add_header Retry-After $mix_retry_after always;"
                )
            blocks.append(
                f"server {{ listen {host.address}:{self.port} backlog=4096; root {root}; {limited}"
                f" location / {{ echo_sleep {delay:g}; echo_exec @file; }} location @file {{ }} }}"
            )
        return "\n    ".join(blocks)


def build(paths: list[str], port: int) -> Mix:
    """The mix over the corpus's `paths` (deterministic: the same corpus gives the same mix)."""
    rng = random.Random(SEED)
    paths = list(paths)
    rng.shuffle(paths)
    stall, rate, ordinary = (
        paths[:STALL_URLS],
        paths[STALL_URLS : STALL_URLS + RATE_URLS],
        paths[STALL_URLS + RATE_URLS :],
    )
    # 2% of the whole list: m / (images + m) = 0.02.
    missing_total = round(len(paths) * NOT_FOUND_SHARE / (1 - NOT_FOUND_SHARE))
    low, high = LATENCY_MS
    # echo_sleep takes milliseconds at most (three decimals).
    latencies = [
        low * (high / low) ** (i / (ORDINARY_HOSTS - 1)) / 1000 for i in range(ORDINARY_HOSTS)
    ]
    rng.shuffle(latencies)
    weights = [1 / (k + 1) ** ZIPF for k in range(ORDINARY_HOSTS)]
    counts = [int(len(ordinary) * w / sum(weights)) for w in weights]
    for k in range(len(ordinary) - sum(counts)):
        counts[k] += 1
    missing = [
        f"/missing/{i}/cat-{i}__480.jpg" for i in range(missing_total)
    ]  # spread over the ordinary hosts by the same shares
    missing_counts = [int(missing_total * w / sum(weights)) for w in weights]
    for k in range(missing_total - sum(missing_counts)):
        missing_counts[k] += 1
    hosts: list[Host] = []
    taken = gone = 0
    for k in range(ORDINARY_HOSTS):
        hosts.append(
            Host(
                f"127.0.0.{FIRST_ADDRESS + k}", "ordinary", round(latencies[k], 3),
                tuple(ordinary[taken : taken + counts[k]]),
                tuple(missing[gone : gone + missing_counts[k]]),
            )
        )  # fmt: skip
        taken += counts[k]
        gone += missing_counts[k]
    hosts.append(
        Host(f"127.0.0.{FIRST_ADDRESS + ORDINARY_HOSTS}", "stall", STALL_SLEEP_S, tuple(stall))
    )
    hosts.append(
        Host(f"127.0.0.{FIRST_ADDRESS + ORDINARY_HOSTS + 1}", "429", RATE_LATENCY_S, tuple(rate))
    )
    return Mix(tuple(hosts), port)


# -- the physical limit --------------------------------------------------------


def _task_s(host: Host) -> float:
    """Seconds one URL of `host` holds a connection, at the least."""
    if host.role == "stall":
        return ATTEMPTS * READ_TIMEOUT_S  # every attempt waits out the read timeout
    return host.latency_s


def _admitted_at(k: int) -> float:
    """The earliest the rate-limited host admits its k-th request (0-based): nginx's
    leaky bucket lets BURST + 1 through at once, then one every 1 / RATE_PER_S."""
    return max(0.0, (k - BURST) / RATE_PER_S)


def host_time(host: Host, per_host: int) -> float:
    """The least time `host` alone needs, `per_host` requests at a time."""
    waves = math.ceil(host.urls / per_host) * _task_s(host)
    if host.role == "429":
        return max(waves, _admitted_at(host.urls - 1) + host.latency_s)
    return waves


def bound(mix: Mix, concurrency: int, per_host: int) -> tuple[float, str]:
    """max(slowest host alone, all connection-seconds / concurrency), and which term won."""
    slowest = max(mix.hosts, key=lambda h: host_time(h, per_host))
    spread = sum(h.urls * _task_s(h) for h in mix.hosts) / concurrency
    alone = host_time(slowest, per_host)
    if spread > alone:
        return spread, f"{concurrency} connections kept busy"
    return (
        alone,
        f"{slowest.role} host {slowest.address}, {slowest.urls} URLs at {_task_s(slowest) * 1000:.0f} ms",
    )


def schedule(mix: Mix, concurrency: int, per_host: int) -> float:
    """The makespan of one good schedule that knows the whole list: free connections go
    first to the host with the most time left. An upper bound on the limit; when it
    equals `bound()`, the bound is exact."""
    left = {h.address: h.urls for h in mix.hosts}
    running = dict.fromkeys(left, 0)
    admitted = 0
    by_address = {h.address: h for h in mix.hosts}
    finishing: list[tuple[float, str]] = []
    now = end = 0.0
    while any(left.values()) or finishing:
        busy = len(finishing)
        ready = [
            a for a, n in left.items()
            if n and running[a] < per_host and (by_address[a].role != "429" or _admitted_at(admitted) <= now + 1e-9)
        ]  # fmt: skip
        ready.sort(key=lambda a: -math.ceil(left[a] / per_host) * _task_s(by_address[a]))
        started = False
        for address in ready:
            while busy < concurrency and left[address] and running[address] < per_host:
                if by_address[address].role == "429":
                    if _admitted_at(admitted) > now + 1e-9:
                        break
                    admitted += 1
                left[address] -= 1
                running[address] += 1
                busy += 1
                heapq.heappush(finishing, (now + _task_s(by_address[address]), address))
                started = True
        wake = [finishing[0][0]] if finishing else []
        rate_host = next(a for a, h in by_address.items() if h.role == "429")
        if left[rate_host]:
            wake.append(_admitted_at(admitted))
        later = [t for t in wake if t > now + 1e-9]
        if not later and not started:
            break
        now = min(later) if later else now
        while finishing and finishing[0][0] <= now + 1e-9:
            end, address = heapq.heappop(finishing)
            running[address] -= 1
    return end


def describe(mix: Mix) -> str:
    ordinary = [h for h in mix.hosts if h.role == "ordinary"]
    return (
        f"{len(mix.hosts)} hosts ({len(ordinary)} at {LATENCY_MS[0]}-{LATENCY_MS[1]} ms, one that "
        f"stalls, one that answers 429 past {RATE_PER_S}/s); {mix.urls} URLs: {mix.not_found} 404s, "
        f"{mix.stalled} on the stalling host, {mix.obtainable} images to save"
    )
