"""Fetching: one URL to one file, with limits, retries and the rules of the web.

Design notes
------------
**Connections.** httpcore's pool checks every pooled connection on each
request it assigns (httpcore PR #928), so one client with 64 connections
spends most of its CPU there. Instead, a download first takes one of
`concurrency` global *slots*, and each slot owns its connections outright
(`connections.SlotConnections`): at most `SLOT_CONNECTIONS` httpcore
connections, one per origin, with no pool at all between a download and its
socket. All slots share two SSL contexts (one verifying, one for plain
http), which httpcore would otherwise build for each connection.

**No Client layer.** We send through httpx's engine, not `AsyncClient`: per
request, the client would parse the URL again, run auth and redirect
machinery and extract cookies, which together cost about a sixth of our CPU
per image, for features a downloader does not use (we follow redirects
ourselves, and keep no cookies, like curl and wget). What the client does
that we want, proxies from the environment, is done here with the standard
library's `getproxies()` and `proxy_bypass()`; a proxied request goes
through the slot's `httpx.AsyncHTTPTransport` for that proxy, and so does
every request when a transport is injected (tests). Either way `_follow`
gets the same `_Answer`, and both exception trees, httpx's and httpcore's,
are translated by `_translate` into ours.

**Limits.** A download holds, in this order, a per-host slot (adaptive, see
`hostlimits`) and a global slot. The host slot comes first, so that a busy
host makes its own downloads wait without holding global capacity. The
global limiter is a `trio.CapacityLimiter`, which serves waiters in FIFO
order: running jobs take turns, so a short list is not starved behind a huge
one. Both are released during a retry's backoff.

**Retries.** stamina runs the loop; `retrypolicy` decides what is retried
and for how long to wait. Every attempt gets a total deadline on top of
httpx's per-read timeout, which alone would let a slow drip last forever.

**Bodies.** We ask for `Accept-Encoding: identity` and save `aiter_raw()`:
the file is exactly what the server holds, and a compressed bomb cannot
inflate in memory. The size cap is checked against Content-Length before
the body is read, and again against the bytes as they stream.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import random
import socket
import ssl
import time
import urllib.request  # httpx imports it anyway (http.cookiejar)
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Final, TypeVar, cast

import httpcore
import httpx
import structlog
import trio

from . import errors as err
from . import metrics
from .addressguard import AddressRefused, PublicOnlyResolver, is_public
from .config import Settings
from .connections import KEEPALIVE_S, SLOT_CONNECTIONS, SlotConnections
from .filesink import FileSink, GroupCommit
from .hostlimits import HostLimits
from .imagecheck import SNIFF_BYTES, disguised, is_image_type, sniff
from .listparse import log_url
from .naming import extension_for, has_extension
from .retrypolicy import RETRY_AFTER_STATUSES, Backoff, parse_retry_after, status_is_retryable

# File descriptors one slot may hold at once: its own keep-alive connections
# and, through a proxy, as many again in that proxy's transport; the body it is
# downloading, and the body that its job's second worker for the slot is
# publishing (see `job.WORKERS_PER_SLOT`).
FILES_PER_SLOT = 2 * SLOT_CONNECTIONS + 2
# Statuses that mean "it is elsewhere"; we follow them ourselves, so that every
# hop is checked for its scheme, for loops and by the private-address guard.
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Statuses whose body is the image. 203 is a 200 passed on by a proxy.
_OK: Final = frozenset({200, 203})
# Headers that carry credentials: only the listed URL's own origin gets them.
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
# Resolver errors that are DNS's answer, "no such name" or "no address for it",
# rather than a failure to ask (EAI_AGAIN, which a retry may fix).
_NO_SUCH_HOST: Final = frozenset(
    {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
)

log = structlog.get_logger("imgdl_watch")
_E = TypeVar("_E", bound=BaseException)


# A slot's transports through proxies, by (proxy URL, TLS or not): a plain
# http transport never needs the SSL context.
_SlotTransports = dict[tuple[str, bool], httpx.AsyncHTTPTransport]
# httpcore's errors, which a direct request raises (httpx's wrap them for a
# proxied one). The tree mirrors httpx's; see `_translate`.
_HTTPCORE_ERRORS: Final = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Everything that shapes a download, as one value object."""

    # Downloads in flight at once, across all jobs.
    concurrency: int = 32
    # Downloads in flight at once to one host (the ceiling of its adaptive limit).
    per_host: int = 8
    # Retries after the first attempt.
    retries: int = 4
    # Largest body we save, in bytes.
    max_bytes: int = 32 * 1024 * 1024
    user_agent: str = "imgdl-watch"
    # More request headers, (name, value), from `--header`.
    header: tuple[tuple[str, str], ...] = ()
    # Seconds to establish a connection (TCP and TLS).
    connect_timeout: float = 10.0
    # Seconds a read may stall before the attempt fails.
    read_timeout: float = 30.0
    # Seconds one attempt may take in all, however the bytes trickle in.
    total_timeout: float = 300.0
    # Redirects followed before giving up.
    max_redirects: int = 10
    # Save any Content-Type, not only images.
    any_type: bool = False
    # Refuse loopback, private, link-local and other non-public addresses.
    block_private: bool = False
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchOptions:
        """The options of the same name in `settings` (all but `backoff`, which is ours)."""
        shared = {f.name for f in dataclasses.fields(cls)} - {"backoff"}
        return cls(**{name: getattr(settings, name) for name in shared})


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


@dataclass(frozen=True, slots=True)
class Downloaded:
    url: str
    file: str
    bytes: int
    elapsed_s: float
    attempts: int


@dataclass(frozen=True, slots=True)
class _Answer:
    """A response's status line and headers, and its body still to read."""

    status: int
    # Names in lower case; a repeated header's values joined by ", " (as httpx does).
    headers: Mapping[str, str]
    body: AsyncIterable[bytes]
    close: Callable[[], Awaitable[None]]


def _answer(response: httpcore.Response) -> _Answer:
    headers: dict[str, str] = {}
    for raw_name, raw_value in response.headers:
        name = raw_name.decode("latin-1").lower()
        value = _header_text(raw_value)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    # A response from a network connection streams asynchronously.
    body = cast(AsyncIterable[bytes], response.stream)
    return _Answer(response.status, headers, body, response.aclose)


def _header_text(value: bytes) -> str:
    """Header bytes as text, decoded as httpx decodes them."""
    for encoding in ("ascii", "utf-8"):
        try:
            return value.decode(encoding)
        except UnicodeDecodeError:
            continue
    return value.decode("latin-1")


def _translate(exc: Exception, host: str) -> err.DownloadError:
    """The most specific `DownloadError` for an httpx or httpcore exception met on `host`."""
    if isinstance(exc, httpx.TimeoutException | httpcore.TimeoutException):
        return err.TimedOut(type(exc).__name__)
    if isinstance(
        exc, httpx.ConnectError | httpx.ProxyError | httpcore.ConnectError | httpcore.ProxyError
    ):
        if (dns := _cause(exc, socket.gaierror)) is not None:
            return _dns_failure(dns, host)
        if (refused := _cause(exc, AddressRefused)) is not None:
            return err.BlockedAddress(refused.strerror or str(refused))
        if (tls := _cause(exc, ssl.SSLCertVerificationError)) is not None:
            return err.UntrustedCertificate(tls.verify_message or str(tls))
        return err.ConnectFailed(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.RemoteProtocolError | httpcore.RemoteProtocolError):
        text = str(exc)
        if "incomplete" in text or "complete message body" in text:
            return err.Truncated(text)
        if "disconnected" in text or "closed" in text:
            return err.ConnectionLost(text)
        return err.ProtocolError(text)
    if isinstance(exc, httpx.NetworkError | httpcore.NetworkError):
        return err.ConnectionLost(str(exc) or type(exc).__name__)
    if isinstance(
        exc,
        httpx.UnsupportedProtocol
        | httpx.LocalProtocolError
        | httpcore.UnsupportedProtocol
        | httpcore.LocalProtocolError,
    ):
        return err.ProtocolError(str(exc))
    return err.ConnectionLost(str(exc) or type(exc).__name__)


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The exception of type `kind` behind an httpx exception, if any."""
    cause: BaseException | None = exc
    # httpx's error wraps httpcore's, which wraps the OS's: a short chain.
    for _ in range(8):
        if cause is None or isinstance(cause, kind):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _dns_failure(cause: socket.gaierror, host: str) -> err.DownloadError:
    """A host that does not exist fails at once; a resolver that did not answer is retried."""
    if cause.errno in _NO_SUCH_HOST:
        return err.UnknownHost(f"no such host {host} ({cause.strerror})")
    return err.ConnectFailed(f"cannot resolve {host} ({cause.strerror})")


class Fetcher:
    """Downloads URLs into job folders. Use as an async context manager."""

    def __init__(self, options: FetchOptions, *, transport: httpx.AsyncBaseTransport | None = None):
        self.options = options
        self._injected = transport
        # The resolver that was in place before `--block-private` put its own.
        self._outer_resolver: trio.abc.HostnameResolver | None = None
        self._ssl: ssl.SSLContext | None = None
        self._plain_ssl: ssl.SSLContext | None = None
        self._global = trio.CapacityLimiter(options.concurrency)
        self._free_slots = list(range(options.concurrency))
        self._slot_ids = options.concurrency
        self._direct: dict[int, SlotConnections] = {}
        self._proxied: dict[int, _SlotTransports] = {}
        self._proxies = _environment_proxies()
        self.hosts = HostLimits(options.per_host)
        # Set when the daemon stops: no new attempt starts after it.
        self.stopping = trio.Event()
        self._rand = random.Random()
        self._timeout = httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.read_timeout,
            # Our own limiters bound the waiting; the pool never queues.
            pool=None,
        )
        ours = {
            "User-Agent": options.user_agent,
            "Accept": "image/avif,image/webp,image/apng,image/*;q=0.9,*/*;q=0.5",
            "Accept-Encoding": "identity",
        }
        # A `--header` of the same name, in any case, wins (the last of several).
        custom = {name.lower(): (name, value) for name, value in options.header}
        self._headers = {k: v for k, v in ours.items() if k.lower() not in custom} | dict(
            custom.values()
        )
        # What a host other than the listed URL's gets, after a redirect.
        self._headers_elsewhere = {
            name: value
            for name, value in self._headers.items()
            if name.lower() not in _CREDENTIAL_HEADERS
        }
        self._extensions = {"timeout": self._timeout.as_dict()}
        # The same headers as bytes, as they go on the wire: nearly every
        # request sends these lists as they are.
        self._raw_headers = httpx.Headers(self._headers).raw
        self._raw_headers_elsewhere = httpx.Headers(self._headers_elsewhere).raw
        # Finished bodies are written to disk in batches, one thread hop each.
        self._commit = GroupCommit()

    async def __aenter__(self) -> Fetcher:
        if self.options.block_private:
            # For this trio run: every name resolved to connect is checked
            # (see `addressguard`), and restored on exit.
            exempt = frozenset(httpx.URL(proxy).host for proxy in self._proxies.values())
            current = trio.socket.set_custom_hostname_resolver(None)
            guard = PublicOnlyResolver(inner=current, exempt=exempt)
            self._outer_resolver = current
            trio.socket.set_custom_hostname_resolver(guard)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.options.block_private:
            trio.socket.set_custom_hostname_resolver(self._outer_resolver)
        direct, self._direct = list(self._direct.values()), {}
        proxied, self._proxied = list(self._proxied.values()), {}
        with trio.CancelScope(shield=True):
            for connections in direct:
                await connections.aclose()
            for transports in proxied:
                for transport in transports.values():
                    await transport.aclose()

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

    async def _send(self, slot: int, url: httpx.URL, headers: list[tuple[bytes, bytes]]) -> _Answer:
        """GET `url` on the slot's own connection, or through its transport for a proxy."""
        transport = self._transport(slot, url)
        if transport is None:
            connections = self._direct.get(slot)
            if connections is None:
                connections = self._direct[slot] = SlotConnections(self._slot_ssl_context)
            target = httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            )
            request = httpcore.Request(
                b"GET",
                target,
                headers=[(b"Host", url.netloc), *headers],
                extensions=self._extensions,
            )
            return _answer(await connections.send(request))
        proxied = httpx.Request("GET", url, headers=headers, extensions=self._extensions)
        response = await transport.handle_async_request(proxied)
        response.request = proxied
        return _Answer(
            response.status_code, response.headers, response.aiter_raw(), response.aclose
        )

    def _transport(self, slot: int, url: httpx.URL) -> httpx.AsyncBaseTransport | None:
        """The injected transport, the slot's for the environment's proxy, or None: direct."""
        if self._injected is not None:
            return self._injected
        proxy = self._proxies.get(url.scheme)
        if proxy is None or urllib.request.proxy_bypass(url.host):
            return None
        tls = url.scheme == "https"
        transports = self._proxied.setdefault(slot, {})
        transport = transports.get((proxy, tls))
        if transport is None:
            transport = transports[proxy, tls] = httpx.AsyncHTTPTransport(
                verify=self._ssl_context(tls=tls or proxy.startswith("https:")),
                limits=httpx.Limits(
                    max_connections=SLOT_CONNECTIONS,
                    max_keepalive_connections=SLOT_CONNECTIONS,
                    keepalive_expiry=KEEPALIVE_S,
                ),
                proxy=proxy,
            )
        return transport

    def _slot_ssl_context(self, tls: bool) -> ssl.SSLContext:
        return self._ssl_context(tls=tls)

    def _ssl_context(self, *, tls: bool) -> ssl.SSLContext:
        """The one SSL context of all slots that speak TLS, or of all that do not.

        httpx and httpcore build a context for every transport or connection
        they are not given one, even for plain http (0.15 ms each, 64 of them
        in the first round of a job); so every slot shares one of two. The
        verifying one (certifi's bundle, ~20 ms to load) is built for the
        first https URL or proxy only. The other is never used for a
        handshake; should it ever be, it verifies against no CA at all and so
        fails closed.
        """
        if not tls:
            if self._plain_ssl is None:
                self._plain_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            return self._plain_ssl
        if self._ssl is None:
            # httpx's own default: SSL_CERT_FILE or SSL_CERT_DIR when set
            # (a private CA), else certifi's bundle.
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def download(
        self, url: str, *, dir_fd: int, name: str, parsed: httpx.URL | None = None
    ) -> Downloaded:
        """Download `url` into the folder `dir_fd` under `name`.

        `parsed` is `url` as httpx parsed it already, if it was. An
        extension-less `name` gets its extension from the response. Raises
        a `DownloadError` (with `attempts` set) or `Interrupted`.
        """
        started = time.monotonic()
        if parsed is None:
            parsed = httpx.URL(url)
        host = parsed.host
        attempts = 0

        def retry_delay(exc: Exception) -> bool | float:
            if not isinstance(exc, err.DownloadError) or not exc.retryable:
                return False
            retry_after = None
            if isinstance(exc, err.HttpStatusError) and exc.status in RETRY_AFTER_STATUSES:
                self.hosts.busy(host)
                retry_after = exc.retry_after
            delay = self.options.backoff.delay(
                attempts, rand=self._rand.random, retry_after=retry_after
            )
            log.info(
                "download_retry",
                url=log_url(url),
                attempt=attempts,
                reason=exc.reason,
                status=exc.status,
                delay_s=round(delay, 3),
            )
            return delay

        # Most downloads succeed at once, and building stamina's retry state
        # costs a tenth of a millisecond each: so the first attempt runs
        # bare. If it fails, stamina takes over from its very first attempt,
        # which re-raises that failure: stamina then decides, waits and
        # counts every retry, exactly as if it had run the first try itself.
        if self.stopping.is_set():
            raise err.Interrupted
        attempts = 1
        try:
            file, sink = await self._attempt(parsed, dir_fd, name)
        except err.DownloadError as exc:
            first_failure: err.DownloadError | None = exc
            if not exc.retryable or self.options.retries == 0:
                exc.attempts = attempts
                raise
            stamina = _stamina()
            try:
                async for attempt in stamina.retry_context(
                    on=retry_delay, attempts=self.options.retries + 1, timeout=None
                ):
                    with attempt:
                        if first_failure is not None:
                            failure, first_failure = first_failure, None
                            raise failure
                        if self.stopping.is_set():
                            raise err.Interrupted from None
                        attempts += 1
                        file, sink = await self._attempt(parsed, dir_fd, name)
            except err.DownloadError as final:
                final.attempts = attempts
                raise
        self.hosts.good(host)
        # The body is whole and the slot is free for the next download while
        # the disk makes the file durable (fdatasync may take milliseconds).
        try:
            await self._commit.publish(sink, file)
        except err.DownloadError as exc:
            exc.attempts = attempts
            raise
        finally:
            sink.discard()
        return Downloaded(url, file, sink.size, time.monotonic() - started, attempts)

    async def _attempt(self, url: httpx.URL, dir_fd: int, name: str) -> tuple[str, FileSink]:
        """One try under the host's and the global limit: a whole body, not yet published."""
        host = url.host
        await self.hosts.acquire(host)
        try:
            async with self._global:
                slot = self._free_slots.pop()
                try:
                    with trio.move_on_after(self.options.total_timeout):
                        return await self._follow(slot, url, dir_fd, name)
                    raise err.TimedOut(
                        f"no complete answer within {self.options.total_timeout:g} s"
                    )
                finally:
                    self._free_slots.append(slot)
        finally:
            self.hosts.release(host)

    async def _follow(
        self, slot: int, url: httpx.URL, dir_fd: int, name: str
    ) -> tuple[str, FileSink]:
        seen = {str(url)}
        current = url
        for _hop in range(self.options.max_redirects + 1):
            if self.options.block_private:
                self._guard(current)
            headers = self._headers_for(url, current)
            try:
                answer = await self._send(slot, current, headers)
                try:
                    location = answer.headers.get("location")
                    if answer.status in _REDIRECTS and location:
                        current = self._next_hop(current, location, seen)
                        continue
                    if answer.status not in _OK:
                        raise self._status_error(answer, current.host)
                    return await self._save(answer, dir_fd, name)
                finally:
                    await answer.close()
            except (httpx.HTTPError, *_HTTPCORE_ERRORS) as exc:
                raise _translate(exc, current.host) from exc
        raise err.RedirectError(f"more than {self.options.max_redirects} redirects")

    def _headers_for(self, listed: httpx.URL, current: httpx.URL) -> list[tuple[bytes, bytes]]:
        """Our headers for a request to `current`, on the way from `listed`.

        As curl does, credentials go to the listed URL's origin only: the
        Authorization and Cookie headers of `--header`, and Basic credentials
        from `user:password@` in the URL. Another host that a redirect points
        at gets neither (unless its own URL has a `user:password@`).
        """
        if current is listed and not listed.userinfo:
            return self._raw_headers  # nearly every request: no redirect, no credentials
        home = _origin(current) == _origin(listed)
        source = current if current.userinfo else listed
        if not (source.userinfo and (home or source is current)):
            return self._raw_headers if home else self._raw_headers_elsewhere
        headers = self._headers if home else self._headers_elsewhere
        secret = f"{source.username}:{source.password}".encode()
        return httpx.Headers(
            headers | {"Authorization": "Basic " + base64.b64encode(secret).decode()}
        ).raw

    @staticmethod
    def _next_hop(current: httpx.URL, location: str, seen: set[str]) -> httpx.URL:
        try:
            target = current.join(location)
        except httpx.InvalidURL as exc:
            raise err.RedirectError("unparseable Location", reason="bad_redirect") from exc
        if target.scheme not in ("http", "https") or not target.host:
            raise err.RedirectError(f"redirect to {target.scheme}:", reason="bad_redirect")
        key = str(target.copy_with(fragment=None))
        if key in seen:
            raise err.RedirectError("redirect loop", reason="redirect_loop")
        seen.add(key)
        return target

    @staticmethod
    def _status_error(answer: _Answer, host: str) -> err.HttpStatusError:
        status = answer.status
        retry_after = None
        if status in RETRY_AFTER_STATUSES:
            metrics.recorder.throttled(host, status)
            retry_after = parse_retry_after(
                answer.headers.get("retry-after"), now=dt.datetime.now(dt.UTC)
            )
        return err.HttpStatusError(
            status, retryable=status_is_retryable(status), retry_after=retry_after
        )

    @staticmethod
    def _guard(url: httpx.URL) -> None:
        """An IP literal that is not public is refused here; names, by the resolver."""
        try:
            public = is_public(url.host)
        except ValueError:
            return  # a name: `PublicOnlyResolver` checks what it resolves to
        if not public:
            raise err.BlockedAddress(f"{url.host} is not a public address")

    async def _save(self, answer: _Answer, dir_fd: int, name: str) -> tuple[str, FileSink]:
        """The checked, complete body in a sink, and its file name; the caller publishes."""
        limit = self.options.max_bytes
        length = _content_length(answer.headers)
        if length is not None and length > limit:
            raise err.TooLarge(f"Content-Length {length} is over the cap of {limit}")
        content_type = answer.headers.get("content-type")
        typed_image = is_image_type(content_type)
        checked = not self.options.any_type
        must_sniff = checked and not typed_image
        # The first bytes: to sniff an untyped body, to unmask a typed one
        # (`disguised`), or to name a file that has no extension yet.
        want_head = checked or not has_extension(name)
        head = b""
        sink = FileSink(dir_fd)
        try:
            async for chunk in answer.body:
                if sink.size + len(chunk) > limit:
                    raise err.TooLarge(f"body is over the cap of {limit} bytes")
                if want_head and len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                await sink.write(chunk)
            if length is not None and sink.size < length:
                raise err.Truncated(f"{sink.size} of {length} bytes")
            if sink.size == 0:
                raise err.NotAnImage("empty body")
            sniffed = sniff(head) if want_head else None
            if must_sniff and sniffed is None:
                raise err.NotAnImage(f"Content-Type {content_type or 'missing'}")
            if checked and typed_image and (kind := disguised(head)) is not None:
                raise err.NotAnImage(f"Content-Type {content_type}, but the body is {kind}")
            file = name
            if not has_extension(name):
                file += (extension_for(content_type) if typed_image else "") or extension_for(
                    sniffed
                )
            return file, sink
        except BaseException:
            sink.discard()
            raise


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


def _environment_proxies() -> dict[str, str]:
    return {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
