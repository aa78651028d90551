"""Fetching: one URL to one file, with limits, retries and the rules of the web.

The parts, each in a module of its own:

    transports     how a request reaches its server (a slot's own connections,
                   or a proxy), and the shared SSL contexts
    headers        the headers of each request, and who gets credentials
    translate      httpx's and httpcore's exceptions, translated into ours
    body           receiving a body: whole, within the cap, and an image
    filesink       writing it so that a final name is only ever a whole file
    hostlimits     per-host concurrency that adapts to 429 and 503
    pacing         per-host request rate, minimum gap, and Retry-After pauses
    bandwidth      bytes per second read, for the process and per host
    optout         X-Robots-Tag opt-outs, read before any body byte
    robots         robots.txt (`--robots`)
    hostrules      the operator's per-host overrides (`[hosts]`)
    hoststats      what each host has seen of us, for status and metrics
    retrypolicy    what is retried, and how long to wait first

What is left here is the download itself: the retries, one attempt under the
limits, and the redirects.

**Per job.** The fetcher is shared by every job; what may differ between
jobs (headers, retries, timeouts, redirects, the body's rules and filters,
a lower per-host limit) comes with each download as `rules.DownloadRules`.
A download without them follows the fetcher's own options.

**Limits.** A download holds, in this order, a per-host slot (adaptive, see
`hostlimits`), the host's turn (`pacing`) and a global slot. The host slot
comes first, so that a busy host makes its own downloads wait without
holding global capacity. The turn comes next, so that a paced or paused host
waits holding no global slot: other hosts keep every global slot while one
host is paced. It is taken when the global slot is in hand, right before the
request, so that the rate holds on the times requests are really sent (a
turn taken and then kept waiting for a global slot would let turns bunch
up). Each limit composes with the others: the tightest wins. The
global limiter is a `trio.CapacityLimiter`, which serves waiters in FIFO
order: running jobs take turns, so a short list is not starved behind a huge
one. Both are released during a retry's backoff. Each global slot owns its
connections (`connections`), which is why slots have numbers.

**Retries.** stamina runs the loop; `retrypolicy` decides what is retried
and for how long to wait. Every attempt gets a total deadline on top of
httpx's per-read timeout, which alone would let a slow drip last forever.

**Redirects** are followed here, not by httpx, so that every hop is checked
for its scheme, for loops, by the private-address guard, and (with
`--robots`) by its origin's robots.txt, fetched on the download's own slot.

**Opt-outs.** A final answer's X-Robots-Tag is read before its body: an
opted-out URL ends `opted_out` and its body is never read (the connection is
closed unread).

The per-host rules (rate, gap, ceiling, bandwidth, headers) are those of the
listed URL's host, except bandwidth, which is the serving host's; a pause is
the host's that asked for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Final, TypeVar

import httpx
import structlog
import trio

from .. import errors as err
from .. import metrics
from ..naming import final_name, has_extension
from ..redact import log_url
from .addressguard import guarding, literal_is_refused
from .bandwidth import Bandwidth
from .body import Received, receive
from .durability import Durability
from .filesink import GroupCommit
from .headers import RequestHeaders
from .hostlimits import HostLimits, Verdict
from .hostrules import HostTable
from .hoststats import HostState, HostStats
from .optout import agent_token, opt_out
from .pacing import UNLIMITED, Pacer, PaceRule
from .redirects import REDIRECTS, next_hop
from .retrypolicy import RETRY_AFTER_STATUSES, Backoff, status_error
from .robots import Robots, Send, WithSend
from .rules import DownloadRules
from .translate import HTTP_ERRORS, translate
from .transports import Answer, Transports

# Statuses whose body is the image. 203 is a 200 passed on by a proxy.
_OK: Final = frozenset({200, 203})
# A pause that grows by less than this is not logged again (many downloads
# of a host get a Retry-After at nearly the same time).
_PAUSE_LOG_STEP_S: Final = 1.0

log = structlog.get_logger("imgdl_watch")

T = TypeVar("T")


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
    backoff: Backoff = field(default_factory=Backoff)

    def replace(self, **changes: object) -> FetchOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Downloaded:
    url: str
    file: str
    bytes: int
    elapsed_s: float
    attempts: int
    # The hex sha256 of the file's bytes, hashed as they streamed in.
    sha256: str = ""
    content_type: str | None = None
    # From the image's header; None when it does not tell.
    width: int | None = None
    height: int | None = None


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


class _Attempts:
    """How many attempts a download made so far (one counter, set on its error once)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Fetcher:
    """Downloads URLs into job folders. Use as an async context manager."""

    def __init__(
        self,
        options: FetchOptions,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rand: random.Random | None = None,
    ):
        self.options = options
        self._transports = Transports(
            timeout=httpx.Timeout(
                connect=options.connect_timeout,
                read=options.read_timeout,
                write=options.read_timeout,
                # Our own limiters bound the waiting; the pool never queues.
                pool=None,
            ),
            injected=transport,
        )
        # What a download that brings no rules of its own follows.
        self.rules = default_rules(options)
        self._guard = contextlib.ExitStack()
        self._global = trio.CapacityLimiter(options.concurrency)
        self._free_slots = list(range(options.concurrency))
        self._slot_ids = options.concurrency
        self.hosts = HostLimits(options.per_host, overrides=self._ceiling_override)
        # Set when the daemon stops: no new attempt starts after it.
        self.stopping = trio.Event()
        # Backoff's and the gaps' jitter (injectable, for tests).
        self._rand = rand or random.Random()
        self._token = agent_token(options.user_agent)
        self._robots = Robots(self._token) if options.robots else None
        self.pacer = Pacer(self._pace_rule, rand=self._rand)
        self._bandwidth = Bandwidth(options.max_rate, self._max_rate_of)
        self.stats = HostStats()
        # Downloads with a request out, by host (past their turn); at most
        # `concurrency` hosts, each gone at 0.
        self._sending: dict[str, int] = {}
        # Each `[hosts]` rule's headers with a job's, built on first use.
        self._rule_headers: dict[tuple[str, str, tuple[tuple[str, str], ...]], RequestHeaders] = {}
        # Finished bodies are written to disk in batches, one thread hop each.
        self._commit = GroupCommit(options.durability)

    async def __aenter__(self) -> Fetcher:
        if self.options.block_private:
            # For this trio run, every name resolved to connect is checked
            # (see `addressguard`); the proxies are the operator's own.
            proxies = self._transports.proxies.values()
            self._guard.enter_context(guarding(exempt=(httpx.URL(p).host for p in proxies)))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._guard.close()
        await self._transports.aclose()

    @property
    def transports(self) -> Transports:
        return self._transports

    @property
    def in_flight(self) -> int:
        return int(self._global.borrowed_tokens)

    @property
    def concurrency(self) -> int:
        """Downloads in flight at most, now (a reload may change it)."""
        return int(self._global.total_tokens)

    def set_limits(self, *, concurrency: int, per_host: int) -> None:
        """Apply new limits while running (config reload)."""
        # Slot ids are never taken away: after a decrease, the limiter alone
        # keeps the extra slots idle, and a later increase reuses them.
        if concurrency > self._slot_ids:
            self._free_slots.extend(range(self._slot_ids, concurrency))
            self._slot_ids = concurrency
        self._global.total_tokens = concurrency
        self.hosts.set_ceiling(per_host)

    def set_politeness(self, options: FetchOptions) -> None:
        """Apply a reloaded rate, gap, bandwidth cap and `[hosts]` table while running."""
        self.options = self.options.replace(
            rate_per_host=options.rate_per_host,
            min_gap=options.min_gap,
            max_rate=options.max_rate,
            hosts=options.hosts,
        )
        self._rule_headers.clear()
        self._bandwidth.set_rate(options.max_rate)
        self.hosts.set_ceiling(self.hosts.ceiling)

    # -- the per-host rules ------------------------------------------------

    def _pace_rule(self, host: str) -> PaceRule:
        options = self.options
        rule = options.hosts.match(host)
        rate, gap = options.rate_per_host, options.min_gap
        if rule is not None:
            rate = rate if rule.rate is None else rule.rate
            gap = gap if rule.min_gap is None else rule.min_gap
        if self._robots is not None:
            gap = max(gap, self._robots.crawl_delay(host))
        if not rate and not gap:  # a rate of 0 is none (a `[hosts]` entry's exemption)
            return UNLIMITED
        return PaceRule(rate or None, gap)

    def _ceiling_override(self, host: str) -> int | None:
        rule = self.options.hosts.match(host)
        return None if rule is None else rule.per_host

    def _max_rate_of(self, host: str) -> int:
        rule = self.options.hosts.match(host)
        return 0 if rule is None or rule.max_rate is None else rule.max_rate

    def _headers_for(self, host: str, rules: DownloadRules) -> RequestHeaders:
        """A job's headers (global, then its category's), then the host's `[hosts]`
        entry's, which win for a name: they are the most particular to it."""
        rule = self.options.hosts.match(host)
        if rule is None or not rule.header:
            return rules.headers
        key = (rule.name, rules.user_agent, rules.header)
        headers = self._rule_headers.get(key)
        if headers is None:
            headers = self._rule_headers[key] = RequestHeaders(
                user_agent=rules.user_agent, extra=rules.header + rule.header
            )
        return headers

    def host_busy(self, host: str) -> bool:
        """Whether a download of `host` would wait for one of its slots now (every
        one is taken: by downloads in flight, or waiting for the host's turn)."""
        return self.hosts.saturated(host)

    def host_states(self, count: int) -> list[HostState]:
        """The hosts `status` shows: those with downloads in flight first, then
        those seen last, `count` at most."""
        shown = sorted(self.hosts.busy_hosts(), key=self.hosts.in_flight, reverse=True)[:count]
        for host in self.stats.recent(count):
            if len(shown) >= count:
                break
            if host not in shown:
                shown.append(host)
        return [self._host_state(host) for host in shown]

    def _host_state(self, host: str) -> HostState:
        rule, counts = self._pace_rule(host), self.stats.peek(host)
        sending = self._sending.get(host, 0)
        return HostState(
            host=host,
            in_flight=sending,
            waiting=max(0, self.hosts.in_flight(host) - sending),
            limit=self.hosts.limit_of(host),
            ceiling=self.hosts.ceiling_of(host),
            rate=rule.rate,
            min_gap_s=rule.min_gap,
            requests=counts.requests,
            paused_s=round(counts.paused_s, 3),
            paused_for_s=round(self.pacer.paused_for(host), 3),
            opt_outs=counts.opt_outs,
        )

    async def download(
        self,
        url: str,
        *,
        dir_fd: int,
        name: str,
        parsed: httpx.URL | None = None,
        rules: DownloadRules | None = None,
    ) -> Downloaded:
        """Download `url` into the folder `dir_fd` under `name`, by `rules`
        (the fetcher's own options when None).

        `parsed` is `url` as httpx parsed it already, if it was. An
        extension-less `name` gets its extension from the response. Raises
        a `DownloadError` (with `attempts` set), `Filtered`, `Interrupted`, or
        `AlreadyThere` when the name was taken meanwhile.
        """
        started = time.monotonic()
        attempts = _Attempts()
        rules = rules or self.rules
        try:
            parsed = parsed or httpx.URL(url)
            file, got = await self._with_retries(
                url, parsed, dir_fd, name, attempts=attempts, rules=rules
            )
            sink = got.sink
            # The body is whole and the slot is free for the next download while
            # the disk makes the file durable (fdatasync may take milliseconds).
            try:
                await self._commit.publish(sink, file)
            finally:
                sink.discard()
        except (err.DownloadError, err.Filtered) as exc:
            exc.attempts = attempts.count
            raise
        return Downloaded(
            url,
            file,
            sink.size,
            time.monotonic() - started,
            attempts.count,
            got.sha256,
            got.content_type or got.sniffed,
            got.width,
            got.height,
        )

    async def _with_retries(
        self,
        url: str,
        parsed: httpx.URL,
        dir_fd: int,
        name: str,
        *,
        attempts: _Attempts,
        rules: DownloadRules,
    ) -> tuple[str, Received]:
        """Attempts until one succeeds, or until the policy says stop.

        Most downloads succeed at once, and building stamina's retry state
        costs a tenth of a millisecond each: so the first attempt runs bare.
        If it fails, stamina takes over from its very first attempt, which
        re-raises that failure: stamina then decides, waits and counts every
        retry, exactly as if it had run the first try itself.
        """
        if self.stopping.is_set():
            raise err.Interrupted
        attempts.count = 1
        try:
            return await self._attempt(parsed, dir_fd, name, rules)
        except err.DownloadError as exc:
            if not exc.retryable or rules.retries == 0:
                raise
            first_failure: err.DownloadError | None = exc

        def retry_delay(exc: Exception) -> bool | float:
            if not isinstance(exc, err.DownloadError) or not exc.retryable:
                return False
            retry_after = exc.retry_after if isinstance(exc, err.HttpStatusError) else None
            delay = self.options.backoff.delay(
                attempts.count, rand=self._rand.random, retry_after=retry_after
            )
            log.info(
                "download_retry",
                url=log_url(url),
                attempt=attempts.count,
                reason=exc.reason,
                status=exc.status,
                delay_s=round(delay, 3),
                # The host asked for the wait (and is paused for it), or it is ours.
                wait="retry_after" if retry_after is not None else "backoff",
            )
            return delay

        async for attempt in _stamina().retry_context(
            on=retry_delay, attempts=rules.retries + 1, timeout=None
        ):
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                if self.stopping.is_set():
                    raise err.Interrupted from None
                attempts.count += 1
                return await self._attempt(parsed, dir_fd, name, rules)
        raise AssertionError("unreachable: stamina re-raises the last failure")

    async def _attempt(
        self, url: httpx.URL, dir_fd: int, name: str, rules: DownloadRules
    ) -> tuple[str, Received]:
        """One try under the job's own limits, the host's limit, its turn and the
        global limit: a whole body, not yet published.

        The host's limit hears how the host answered, once, as the slot goes back.
        A job with limits lower than the fetcher's (its category's concurrency
        or per-host limit) takes its own slots first (`rules.JobLimits`), so
        that waiting for them holds none of the shared ones.
        """
        host = url.host
        if self._robots is not None:
            # Before any limit: a disallowed URL takes no slot, and the host's
            # Crawl-delay is known before its first request.
            await self._robots_check(url, self._with_global_slot)
        own = await rules.limits.acquire(
            host, concurrency=self.concurrency, per_host=self.hosts.ceiling
        )
        verdict = Verdict.NEUTRAL
        try:
            host_slot = await self.hosts.acquire(host)
            try:
                await self._global_slot(host)
                slot = self._free_slots.pop()
                sending = self._sending
                sending[host] = sending.get(host, 0) + 1
                try:
                    self.stats.get(host).requests += 1
                    metrics.recorder.request(host)
                    with trio.move_on_after(rules.total_timeout):
                        done = await self._follow(slot, url, dir_fd, name, rules)
                        verdict = Verdict.GOOD
                        return done
                    raise err.TimedOut(f"no complete answer within {rules.total_timeout:g} s")
                finally:
                    if sending[host] == 1:
                        del sending[host]
                    else:
                        sending[host] -= 1
                    self._free_slots.append(slot)
                    self._global.release()
            except err.HttpStatusError as exc:
                if exc.status in RETRY_AFTER_STATUSES:
                    verdict = Verdict.BUSY
                raise
            finally:
                self.hosts.release(host_slot, verdict)
        finally:
            rules.limits.release(own, verdict)

    async def _global_slot(self, host: str) -> None:
        """A global slot, once it is the host's turn: waiting for the turn holds none."""
        pacer = self.pacer
        if not pacer.active(host):
            await self._global.acquire()
            return
        entry = pacer.enter(host)
        try:
            async with entry.lock:
                while True:
                    await pacer.wait(entry, host)
                    await self._global.acquire()
                    # A pause may have come while we waited for the slot.
                    if pacer.take(entry, host):
                        return
                    self._global.release()
        finally:
            pacer.leave(entry, host)

    def _pause(self, host: str, exc: err.HttpStatusError) -> None:
        """The host asked us to wait (Retry-After): no download asks it before then."""
        assert exc.retry_after is not None
        seconds = min(exc.retry_after, self.options.backoff.retry_after_cap_s)
        was_paused = self.pacer.paused_for(host) > 0
        added = self.pacer.pause(host, seconds)
        if added <= 0:
            return
        self.stats.get(host).paused_s += added
        metrics.recorder.paused(host, added)
        if not was_paused or added >= _PAUSE_LOG_STEP_S:
            log.info(
                "host_paused",
                host=host,
                reason="retry_after",
                status=exc.status,
                pause_s=round(seconds, 3),
            )

    def _refused(self, host: str, exc: err.DownloadError) -> None:
        """A URL that the host's publisher opted out, or robots.txt disallowed."""
        if not isinstance(exc, err.RobotsUnavailable):
            self.stats.get(host).opt_outs += 1
        metrics.recorder.opted_out(host, exc.reason)

    async def _robots_check(self, url: httpx.URL, with_send: WithSend) -> None:
        assert self._robots is not None
        try:
            await self._robots.check(url, with_send)
        except err.RobotsDisallowed as exc:
            self._refused(url.host, exc)
            raise

    async def _with_global_slot(self, fetch: Callable[[Send], Awaitable[T]]) -> T:
        """`fetch(send)` on a global slot of its own (a robots.txt, before the download's)."""
        async with self._global:
            slot = self._free_slots.pop()
            try:
                return await fetch(partial(self._send_anonymous, slot))
            finally:
                self._free_slots.append(slot)

    def _on_slot(self, slot: int) -> WithSend:
        """Runs a fetch on `slot`, which the caller holds."""
        send = partial(self._send_anonymous, slot)

        async def with_send(fetch: Callable[[Send], Awaitable[T]]) -> T:
            return await fetch(send)

        return with_send

    async def _send_anonymous(self, slot: int, url: httpx.URL) -> Answer:
        """GET `url` on `slot` with no credentials (a robots.txt)."""
        if self.options.block_private and literal_is_refused(url.host):
            raise err.BlockedAddress(f"{url.host} is not a public address")
        try:
            return await self._transports.send(slot, url, self.rules.headers.anonymous())
        except HTTP_ERRORS as exc:
            raise translate(exc, url.host) from exc

    async def _follow(
        self, slot: int, url: httpx.URL, dir_fd: int, name: str, rules: DownloadRules
    ) -> tuple[str, Received]:
        seen = {str(url)}
        current = url
        request_headers = self._headers_for(url.host, rules)
        for _hop in range(rules.max_redirects + 1):
            if self.options.block_private and literal_is_refused(current.host):
                raise err.BlockedAddress(f"{current.host} is not a public address")
            if self._robots is not None and current is not url:
                # A redirect's hop: its origin's robots.txt, on this download's slot.
                await self._robots_check(current, self._on_slot(slot))
            headers = request_headers.for_request(url, current)
            try:
                answer = await self._transports.send(slot, current, headers, rules.timeouts)
                try:
                    location = answer.headers.get("location")
                    if answer.status in REDIRECTS and location:
                        current = next_hop(current, location, seen)
                        continue
                    if answer.status not in _OK:
                        if answer.status in RETRY_AFTER_STATUSES:
                            metrics.recorder.throttled(current.host, answer.status)
                        now = dt.datetime.now(dt.UTC)
                        error = status_error(answer.status, answer.headers, now=now)
                        if error.retry_after is not None:
                            self._pause(current.host, error)
                        raise error
                    self._check_opt_out(current.host, answer)
                    return await self._receive(current.host, answer, dir_fd, name, rules)
                finally:
                    await answer.close()
            except HTTP_ERRORS as exc:
                raise translate(exc, current.host) from exc
        raise err.RedirectError(f"more than {rules.max_redirects} redirects")

    def _check_opt_out(self, host: str, answer: Answer) -> None:
        """Raise `OptedOut` for an X-Robots-Tag that opts out of us; no body byte is read."""
        if self.options.ignore_opt_outs or not answer.robots_tags:
            return
        directive = opt_out(answer.robots_tags, self._token)
        if directive is not None:
            exc = err.OptedOut(f"X-Robots-Tag: {directive}")
            self._refused(host, exc)
            raise exc

    async def _receive(
        self, host: str, answer: Answer, dir_fd: int, name: str, rules: DownloadRules
    ) -> tuple[str, Received]:
        """The body, read no faster than the bandwidth caps allow, and checked by
        the job's rules."""
        capped = None
        if self._bandwidth.capped(host):
            capped = self._bandwidth.reader(host, answer.body)
            answer = dataclasses.replace(answer, body=capped)
        try:
            got = await receive(answer, dir_fd, rules.body, need_type=not has_extension(name))
        finally:
            if capped is not None:
                capped.close()
        return final_name(name, got.content_type, got.sniffed), got


# Imported on first use. A one-shot `fetch` pays for its imports in wall time,
# and stamina (with tenacity, ~10 ms) is needed only after a first failure.


@functools.cache
def _stamina() -> ModuleType:
    import stamina  # noqa: PLC0415
    import stamina.instrumentation  # noqa: PLC0415

    # We log each retry ourselves, with the URL; stamina's own hooks would
    # add an event of another shape (and a metric) for each one.
    stamina.instrumentation.set_on_retry_hooks([])
    return stamina
