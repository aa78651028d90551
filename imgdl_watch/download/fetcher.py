"""Fetching: one URL to one file, with limits, retries and the rules of the web.

The parts, each in a module of its own:

    transports     how a request reaches its server (a slot's own connections,
                   or a proxy), and the shared SSL contexts
    headers        the headers of each request, and who gets credentials
    translate      httpx's and httpcore's exceptions, translated into ours
    body           receiving a body: whole, within the cap, and an image
    filesink       writing it so that a final name is only ever a whole file
    hostlimits     per-host concurrency that adapts to 429 and 503
    retrypolicy    what is retried, and how long to wait first

What is left here is the download itself: the retries, one attempt under the
limits, and the redirects.

**Per job.** The fetcher is shared by every job; what may differ between
jobs (headers, retries, timeouts, redirects, the body's rules and filters,
a lower per-host limit) comes with each download as `rules.DownloadRules`.
A download without them follows the fetcher's own options.

**Limits.** A download holds, in this order, a per-host slot (adaptive, see
`hostlimits`) and a global slot. The host slot comes first, so that a busy
host makes its own downloads wait without holding global capacity. The
global limiter is a `trio.CapacityLimiter`, which serves waiters in FIFO
order: running jobs take turns, so a short list is not starved behind a huge
one. Both are released during a retry's backoff. Each global slot owns its
connections (`connections`), which is why slots have numbers.

**Retries.** stamina runs the loop; `retrypolicy` decides what is retried
and for how long to wait. Every attempt gets a total deadline on top of
httpx's per-read timeout, which alone would let a slow drip last forever.

**Redirects** are followed here, not by httpx, so that every hop is checked
for its scheme, for loops, and by the private-address guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import random
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Final

import httpx
import structlog
import trio

from .. import errors as err
from .. import metrics
from ..naming import final_name, has_extension
from ..redact import log_url
from .addressguard import guarding, literal_is_refused
from .body import Received, receive
from .filesink import GroupCommit
from .hostlimits import HostLimits, Verdict
from .redirects import REDIRECTS, next_hop
from .retrypolicy import RETRY_AFTER_STATUSES, Backoff, status_error
from .rules import DownloadRules
from .translate import HTTP_ERRORS, translate
from .transports import Transports

# Statuses whose body is the image. 203 is a 200 passed on by a proxy.
_OK: Final = frozenset({200, 203})

log = structlog.get_logger("imgdl_watch")


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

    def __init__(self, options: FetchOptions, *, transport: httpx.AsyncBaseTransport | None = None):
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
        self.hosts = HostLimits(options.per_host)
        # Set when the daemon stops: no new attempt starts after it.
        self.stopping = trio.Event()
        self._rand = random.Random()
        # Finished bodies are written to disk in batches, one thread hop each.
        self._commit = GroupCommit()

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
        a `DownloadError` (with `attempts` set), `Filtered` or `Interrupted`.
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
        """One try under the host's and the global limit: a whole body, not yet published.

        The host's limit hears how the host answered, once, as the slot goes back.
        A job with limits lower than the fetcher's (its category's concurrency
        or per-host limit) takes its own slots first (`rules.JobLimits`), so
        that waiting for them holds none of the shared ones.
        """
        own = await rules.limits.acquire(
            url.host, concurrency=self.concurrency, per_host=self.hosts.ceiling
        )
        verdict = Verdict.NEUTRAL
        try:
            host_slot = await self.hosts.acquire(url.host)
            try:
                async with self._global:
                    slot = self._free_slots.pop()
                    try:
                        with trio.move_on_after(rules.total_timeout):
                            done = await self._follow(slot, url, dir_fd, name, rules)
                            verdict = Verdict.GOOD
                            return done
                        raise err.TimedOut(f"no complete answer within {rules.total_timeout:g} s")
                    finally:
                        self._free_slots.append(slot)
            except err.HttpStatusError as exc:
                if exc.status in RETRY_AFTER_STATUSES:
                    verdict = Verdict.BUSY
                raise
            finally:
                self.hosts.release(host_slot, verdict)
        finally:
            rules.limits.release(own, verdict)

    async def _follow(
        self, slot: int, url: httpx.URL, dir_fd: int, name: str, rules: DownloadRules
    ) -> tuple[str, Received]:
        seen = {str(url)}
        current = url
        for _hop in range(rules.max_redirects + 1):
            if self.options.block_private and literal_is_refused(current.host):
                raise err.BlockedAddress(f"{current.host} is not a public address")
            headers = rules.headers.for_request(url, current)
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
                        raise status_error(answer.status, answer.headers, now=now)
                    got = await receive(
                        answer, dir_fd, rules.body, need_type=not has_extension(name)
                    )
                    return final_name(name, got.content_type, got.sniffed), got
                finally:
                    await answer.close()
            except HTTP_ERRORS as exc:
                raise translate(exc, current.host) from exc
        raise err.RedirectError(f"more than {rules.max_redirects} redirects")


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
