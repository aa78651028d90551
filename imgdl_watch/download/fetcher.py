"""Fetching: one URL to one file, with limits, retries and the rules of the web.

The parts, each in a module of its own:

    options        the fetcher's options (`FetchOptions`), one value object
    slots          the global limit: numbered slots, taken on the host's turn
    hostpolicy     each host's rules and state: limits, pacing, bandwidth,
                   headers, pauses, opt-outs, and what status shows of it
    anonymous      our own requests, with no credentials (a robots.txt)
    retries        the retry loop (stamina), and its `download_retry` events
    exchange       one request and its answer: a redirect, a refusal, or an
                   image's body (here, or in a download worker)
    transports     how a request reaches its server (a slot's own connections,
                   or a proxy), and the shared SSL contexts
    headers        the headers of each request, and who gets credentials
    translate      httpx's and httpcore's exceptions, translated into ours
    body           receiving a body: whole, within the cap, and an image
    filesink       writing it so that a final name is only ever a whole file
    workers        worker processes that send the requests and write the
                   bodies (`--workers`), once the limits here are held

What is left here is the download itself: one attempt under the limits, and
the redirects.

**Per job.** The fetcher is shared by every job; what may differ between
jobs (headers, retries, timeouts, redirects, the body's rules and filters,
a lower per-host limit) comes with each download as `rules.DownloadRules`.
A download without them follows the fetcher's own options.

**Limits.** A download holds, in this order, the job's own slots (when its
limits are lower than the fetcher's), a per-host slot (adaptive, see
`hostlimits`), then the host's turn and a global slot (`slots`). The host
slot comes first, so that a busy host makes its own downloads wait without
holding global capacity; a paced host waits for its turn holding no global
slot. Each limit composes with the others: the tightest wins. All are
released during a retry's backoff.

**Retries.** Every attempt gets a total deadline on top of httpx's per-read
timeout, which alone would let a slow drip last forever.

**Redirects** are followed here, not by httpx, so that every hop is checked
for its scheme, for loops, by the private-address guard, and (with
`--robots`) by its origin's robots.txt, fetched on the download's own slot.

**Opt-outs.** A final answer's X-Robots-Tag is read before its body: an
opted-out URL ends `opted_out` and its body is never read (the connection is
closed unread).
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import httpx
import trio

from .. import errors as err
from ..hostnames import lookup_host
from ..naming import alias_name, source_tag
from . import errands as e
from .addressguard import guarding, literal_is_refused
from .anonymous import Anonymous
from .body import Received
from .exchange import Redirect, Refusal, exchange
from .filesink import FileSink, GroupCommit, source_of
from .hostlimits import Verdict
from .hostpolicy import HostPolicy
from .options import FetchOptions, default_rules
from .prefork import Spare
from .redirects import next_hop
from .retries import Attempts, with_retries
from .retrypolicy import RETRY_AFTER_STATUSES
from .rules import DownloadRules
from .slots import Slots
from .transports import Transports, request_timeout
from .workers import Held, Link, RemoteSink, WorkerLost, Workers, next_id, raise_reply

# Times a download is tried again because the download worker that ran it
# died (each time, in this process or on the worker started again); then it
# fails as a lost connection. A URL that kills every worker ends here.
LOST_TRIES: Final = 3


__all__ = ["Downloaded", "FetchOptions", "Fetcher"]


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


def _in_place(dir_fd: int, name: str, size: int, source: bytes) -> bool:
    """Whether a regular file of `size` bytes is in the folder under `name`,
    and not another URL's (`source`: this URL's tag): a body that a worker
    published before it died (its final name is only ever a whole file)."""
    try:
        there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    if not (stat.S_ISREG(there.st_mode) and there.st_size == size):
        return False
    return source_of(dir_fd, name) in (None, source)


class _Wait:
    """A wait for a limit or a turn, which `Fetcher.stop` ends with `Interrupted`.

    (A plain class rather than a generator-based context manager: four of
    these run per attempt.)
    """

    __slots__ = ("_scope", "_waits")

    def __init__(self, waits: set[trio.CancelScope], *, stopped: bool) -> None:
        self._scope = trio.CancelScope()
        if stopped:
            self._scope.cancel()
        self._waits = waits

    def __enter__(self) -> _Wait:
        self._waits.add(self._scope)
        self._scope.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        self._waits.discard(self._scope)
        suppressed = bool(self._scope.__exit__(*exc_info))
        if self._scope.cancelled_caught:
            raise err.Interrupted
        return suppressed


class Fetcher:
    """Downloads URLs into job folders. Use as an async context manager."""

    def __init__(
        self,
        options: FetchOptions,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rand: random.Random | None = None,
        spares: Sequence[Spare] = (),
    ):
        """`spares`: download workers forked before the loop (`prefork`), for
        the first life of the workers (`options.workers`)."""
        self.options = options
        self._transports = Transports(
            timeout=request_timeout(connect=options.connect_timeout, read=options.read_timeout),
            injected=transport,
        )
        # What a download that brings no rules of its own follows.
        self.rules = default_rules(options)
        self._guard = contextlib.ExitStack()
        # Backoff's and the gaps' jitter (injectable, for tests).
        self._rand = rand or random.Random()
        self.policy = HostPolicy(options, rand=self._rand)
        self.hosts = self.policy.limits
        self.stats = self.policy.stats
        self.slots = Slots(options.concurrency, self.policy.pacer)
        self._anonymous = Anonymous(
            self._transports, self.slots, self.rules.headers, block_private=options.block_private
        )
        # Set when the daemon stops (`stop`): no new attempt starts after it.
        self.stopping = trio.Event()
        # The waits of attempts for their host's robots.txt, their slots and
        # their host's turn, which a stop ends: such an attempt has sent
        # nothing yet (but the robots.txt), so it sends nothing.
        self._waits: set[trio.CancelScope] = set()
        # Finished bodies are written to disk in batches, one thread hop each.
        self._commit = GroupCommit(options.durability)
        # The download workers, if any (an injected transport is this process's).
        self._workers: Workers | None = None
        if options.workers > 0 and transport is None:
            setup = e.Setup(
                connect_timeout=options.connect_timeout,
                read_timeout=options.read_timeout,
                block_private=options.block_private,
                durability=options.durability,
            )
            self._workers = Workers(options.workers, setup, spares=spares)
        self._running = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Fetcher:
        if self.options.block_private:
            # For this trio run, every name resolved to connect is checked
            # (see `addressguard`); the proxies are the operator's own.
            proxies = self._transports.proxies.values()
            self._guard.enter_context(guarding(exempt=(httpx.URL(p).host for p in proxies)))
        if self._workers is not None:
            try:
                nursery = await self._running.enter_async_context(trio.open_nursery())
                self._running.callback(nursery.cancel_scope.cancel)
                await nursery.start(self._workers.run)
            except BaseException:
                await self._running.aclose()
                await self.aclose()
                raise
        return self

    async def __aexit__(self, *exc_info: Any) -> bool:
        try:
            await self._running.__aexit__(*exc_info)
        except BaseExceptionGroup as group:
            # The workers' nursery wraps what the body raised; the body's
            # callers get it as it was, as they would without workers.
            if exc_info[1] is None or group.exceptions != (exc_info[1],):
                raise
        finally:
            await self.aclose()
        return False

    async def aclose(self) -> None:
        self._guard.close()
        await self._transports.aclose()

    def forget_folder(self, dir_fd: int) -> None:
        """The job folder `dir_fd` is about to close: no worker keeps it open."""
        if self._workers is not None:
            self._workers.forget(dir_fd)

    @property
    def workers(self) -> Workers | None:
        """The download workers (`--workers`), if there are any."""
        return self._workers

    @property
    def transports(self) -> Transports:
        return self._transports

    @property
    def in_flight(self) -> int:
        return self.slots.in_flight

    @property
    def concurrency(self) -> int:
        """Downloads in flight at most, now (a reload may change it)."""
        return self.slots.total

    def stop(self) -> None:
        """No new attempt starts, and none that waits for a robots.txt, a slot or a
        turn sends."""
        self.stopping.set()
        for wait in self._waits:
            wait.cancel()

    def _unless_stopped(self) -> _Wait:
        return _Wait(self._waits, stopped=self.stopping.is_set())

    def set_limits(self, *, concurrency: int, per_host: int) -> None:
        """Apply new limits while running (config reload)."""
        self.slots.resize(concurrency)
        self.hosts.set_ceiling(per_host)

    def set_politeness(self, options: FetchOptions) -> None:
        """Apply a reloaded rate, gap, bandwidth cap and `[hosts]` table while running."""
        self.options = self.options.replace(
            rate_per_host=options.rate_per_host,
            min_gap=options.min_gap,
            max_rate=options.max_rate,
            hosts=options.hosts,
        )
        self.policy.update(self.options)

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
        attempts = Attempts()
        rules = rules or self.rules
        try:
            parsed = parsed or httpx.URL(url)
            if lookup_host(parsed) is None:
                # A list's lines are refused before (`bad_host`); a URL from
                # elsewhere must not reach the resolver's UnicodeError, or
                # httpx's IDNAError, either.
                host = parsed.raw_host[:80].decode("ascii", "replace")
                raise err.UnknownHost(f"{host} is not a name DNS can carry")
            # What its file says of the URL it came from (`filesink.SOURCE_XATTR`).
            source = source_tag(url)
            for lost in range(LOST_TRIES + 1):
                file, got = await with_retries(
                    partial(self._attempt, parsed, dir_fd, name, rules, source),
                    url=url,
                    retries=rules.retries,
                    backoff=self.options.backoff,
                    rand=self._rand,
                    stopping=self.stopping,
                    attempts=attempts,
                )
                sink = got.sink
                # Where it goes if a look-alike of the list took `file` first.
                alias = alias_name(name, file, url)
                # The body is whole and the slot is free for the next download
                # while the disk makes the file durable (fdatasync may take
                # milliseconds).
                try:
                    if isinstance(sink, FileSink):
                        file = await self._commit.publish(sink, file, alias=alias)
                    else:
                        file = await sink.publish(file, alias=alias)
                    break
                except WorkerLost:
                    # It may have died between the rename and its answer.
                    if _in_place(dir_fd, file, sink.size, source):
                        break
                    if _in_place(dir_fd, alias, sink.size, source):
                        file = alias
                        break
                    if lost == LOST_TRIES:
                        raise err.ConnectionLost("the download worker died, each try") from None
                finally:
                    sink.discard()
        except (err.DownloadError, err.Filtered) as exc:
            exc.attempts = attempts.count
            raise
        except (err.Interrupted, err.AlreadyThere):
            raise
        except Exception as exc:
            # A bug of ours met on this URL: it fails alone, with the tries
            # it took (the crew logs the bug, `download_crashed`).
            raise err.InternalError.of(exc, attempts=attempts.count) from exc
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

    async def _attempt(
        self, url: httpx.URL, dir_fd: int, name: str, rules: DownloadRules, source: bytes
    ) -> tuple[str, Received | Held]:
        """One try under the job's own limits, the host's limit, its turn and the
        global limit: a whole body, not yet published.

        The host's limit hears how the host answered, once, as the slot goes back.
        A job with limits lower than the fetcher's (its category's concurrency
        or per-host limit) takes its own slots first (`rules.JobLimits`), so
        that waiting for them holds none of the shared ones.
        """
        host, policy = url.host, self.policy
        # Before any limit: a disallowed URL takes no slot, and the host's
        # Crawl-delay is known before its first request. Each wait below,
        # this one included, ends with `Interrupted` if the daemon stops
        # meanwhile: a stopped daemon asks no host for its robots.txt, and
        # one on its way is not waited for (it is scratch: asked again on
        # the next start).
        with self._unless_stopped():
            await policy.check_robots(url, self._anonymous.on_own_slot)
        with self._unless_stopped():
            own = await rules.limits.acquire(
                host, concurrency=self.concurrency, per_host=self.hosts.ceiling
            )
        verdict = Verdict.NEUTRAL
        try:
            with self._unless_stopped():
                host_slot = await self.hosts.acquire(host)
            try:
                with self._unless_stopped():
                    slot, turn = await self.slots.take(host)
                request = policy.sending(host, turn)
                try:
                    with trio.move_on_after(rules.total_timeout):
                        done = await self._follow(slot, url, dir_fd, name, rules, source=source)
                        verdict = Verdict.GOOD
                        return done
                    raise err.TimedOut(f"no complete answer within {rules.total_timeout:g} s")
                finally:
                    policy.sent(request)
                    self.slots.give(slot)
            except err.HttpStatusError as exc:
                if exc.status in RETRY_AFTER_STATUSES:
                    verdict = Verdict.BUSY
                raise
            finally:
                self.hosts.release(host_slot, verdict)
        finally:
            rules.limits.release(own, verdict)

    async def _follow(
        self,
        slot: int,
        url: httpx.URL,
        dir_fd: int,
        name: str,
        rules: DownloadRules,
        *,
        source: bytes,
    ) -> tuple[str, Received | Held]:
        seen = {str(url)}
        current = url
        policy = self.policy
        request_headers = policy.headers_for(url.host, rules)
        for _hop in range(rules.max_redirects + 1):
            if self.options.block_private and literal_is_refused(current.host):
                raise err.BlockedAddress(f"{current.host} is not a public address")
            if current is not url:
                # A redirect's hop: its origin's robots.txt, on this download's slot.
                await policy.check_robots(current, self._anonymous.on_slot(slot))
            headers = request_headers.for_request(url, current)
            step: Redirect | Refusal | tuple[str, Received | Held] | None = None
            try:
                link = self._link(slot, current.host)
                if link is not None:
                    hop = e.Hop(
                        next_id(),
                        slot,
                        str(current),
                        headers,
                        link.rules(rules.body, rules.timeouts),
                        link.folder(dir_fd),
                        name,
                        policy.opt_out_token,
                        source,
                    )
                    with contextlib.suppress(WorkerLost):
                        # Lost: the same request again, here (the worker is
                        # not ready again before its Hello).
                        step = await self._remote(link, hop)
                if step is None:
                    step = await exchange(
                        self._transports,
                        slot,
                        current,
                        headers,
                        rules.timeouts,
                        body=rules.body,
                        dir_fd=dir_fd,
                        name=name,
                        opt_out_token=policy.opt_out_token,
                        cap=partial(policy.capped, current.host),
                        source=source,
                    )
            except err.OptedOut as exc:
                policy.opted_out(current.host, exc)
                raise
            if isinstance(step, Redirect):
                current = next_hop(current, step.location, seen)
                continue
            if isinstance(step, Refusal):
                raise policy.refusal(current.host, step.status, step.headers)
            return step
        raise err.RedirectError(f"more than {rules.max_redirects} redirects")

    def _link(self, slot: int, host: str) -> Link | None:
        """The worker that runs this slot's request, or None: this process does.

        A host under a bandwidth cap is read here, where the cap's account is."""
        if self._workers is None or self.policy.bandwidth.capped(host):
            return None
        return self._workers.for_slot(slot)

    async def _remote(self, link: Link, hop: e.Hop) -> Redirect | Refusal | tuple[str, Held]:
        """`hop` run by the worker `link`. Raises WorkerLost, or what the
        worker's attempt raised."""
        reply = await link.call(hop)
        if isinstance(reply, e.Redirected):
            return Redirect(reply.location)
        if isinstance(reply, e.Refused):
            return Refusal(reply.status, reply.headers)
        if isinstance(reply, e.Got):
            sink = RemoteSink(link, reply.id, hop.folder, reply.size)
            size = reply.width, reply.height
            return reply.file, Held(sink, reply.content_type, reply.sniffed, reply.sha256, *size)
        raise_reply(reply)
        raise AssertionError(reply)  # pragma: no cover - raise_reply raised
