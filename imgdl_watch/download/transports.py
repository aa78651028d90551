"""How a request reaches its server: on a slot's own connection, or through a proxy.

Every download holds one of `concurrency` slots (see `fetcher`), and each
slot owns its connections (`connections.SlotConnections`): a direct request
goes out on the slot's own httpcore connection to that origin, with no pool
and no httpx transport in between. A request that the environment's proxy
settings send through a proxy (`getproxies()`, `proxy_bypass()`, as httpx's
client would read them) goes through the slot's `httpx.AsyncHTTPTransport`
for that proxy; so does every request when a transport is injected (tests).
Either way the caller gets an `Answer`.

All slots share two SSL contexts, one verifying and one for plain http,
which httpx and httpcore would otherwise build for each transport or
connection.
"""

from __future__ import annotations

import ssl
import urllib.request  # httpx imports it anyway (http.cookiejar)
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpcore
import httpx
import trio

from .connections import KEEPALIVE_S, SLOT_CONNECTIONS, SlotConnections
from .headers import RawHeaders

# A slot's transports through proxies, by (proxy URL, TLS or not): a plain
# http transport never needs the SSL context.
_SlotProxies = dict[tuple[str, bool], httpx.AsyncHTTPTransport]


@dataclass(frozen=True, slots=True)
class Answer:
    """A response's status line and headers, and its body still to read."""

    status: int
    # Names in lower case; a repeated header's values joined by ", " (as httpx does).
    headers: Mapping[str, str]
    body: AsyncIterable[bytes]
    close: Callable[[], Awaitable[None]]
    # Each X-Robots-Tag header on its own: a robot's name in one speaks for
    # that header only (`optout`), which the joined value would blur.
    robots_tags: tuple[str, ...] = ()


def _answer(response: httpcore.Response) -> Answer:
    headers: dict[str, str] = {}
    robots_tags: list[str] = []
    for raw_name, raw_value in response.headers:
        name = raw_name.decode("latin-1").lower()
        value = _header_text(raw_value)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if name == "x-robots-tag":
            robots_tags.append(value)
    # A response from a network connection streams asynchronously.
    body = cast(AsyncIterable[bytes], response.stream)
    return Answer(response.status, headers, body, response.aclose, tuple(robots_tags))


def _header_text(value: bytes) -> str:
    """Header bytes as text, decoded as httpx decodes them."""
    for encoding in ("ascii", "utf-8"):
        try:
            return value.decode(encoding)
        except UnicodeDecodeError:
            continue
    return value.decode("latin-1")


def request_timeout(*, connect: float, read: float) -> httpx.Timeout:
    """The transports' timeouts: `read` for every read and write, and no pool
    timeout, since our own limiters bound the waiting and the pool never queues."""
    return httpx.Timeout(connect=connect, read=read, write=read, pool=None)


def environment_proxies() -> dict[str, str]:
    return {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}


class Transports:
    """The connections and proxy transports of every slot, and their SSL contexts."""

    def __init__(
        self,
        *,
        timeout: httpx.Timeout,
        injected: httpx.AsyncBaseTransport | None = None,
        proxies: dict[str, str] | None = None,
    ) -> None:
        self._injected = injected
        self.proxies = environment_proxies() if proxies is None else proxies
        self._extensions = {"timeout": timeout.as_dict()}
        self._ssl: ssl.SSLContext | None = None
        self._plain_ssl: ssl.SSLContext | None = None
        self._direct: dict[int, SlotConnections] = {}
        self._proxied: dict[int, _SlotProxies] = {}

    async def send(
        self,
        slot: int,
        url: httpx.URL,
        headers: RawHeaders,
        extensions: dict[str, Any] | None = None,
    ) -> Answer:
        """GET `url` on the slot's own connection, or through its transport for a
        proxy; `extensions` (the timeouts) replace the transports' own for it."""
        extensions = self._extensions if extensions is None else extensions
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
                extensions=extensions,
            )
            return _answer(await connections.send(request))
        proxied = httpx.Request("GET", url, headers=headers, extensions=extensions)
        response = await transport.handle_async_request(proxied)
        response.request = proxied
        return Answer(
            response.status_code,
            response.headers,
            response.aiter_raw(),
            response.aclose,
            tuple(response.headers.get_list("x-robots-tag")),
        )

    def _transport(self, slot: int, url: httpx.URL) -> httpx.AsyncBaseTransport | None:
        """The injected transport, the slot's for the environment's proxy, or None: direct."""
        if self._injected is not None:
            return self._injected
        proxy = self.proxies.get(url.scheme)
        if proxy is None or urllib.request.proxy_bypass(url.host):
            return None
        tls = url.scheme == "https"
        transports = self._proxied.setdefault(slot, {})
        transport = transports.get((proxy, tls))
        if transport is None:
            transport = transports[proxy, tls] = httpx.AsyncHTTPTransport(
                verify=self.ssl_context(tls=tls or proxy.startswith("https:")),
                limits=httpx.Limits(
                    max_connections=SLOT_CONNECTIONS,
                    max_keepalive_connections=SLOT_CONNECTIONS,
                    keepalive_expiry=KEEPALIVE_S,
                ),
                proxy=proxy,
            )
        return transport

    def kept(self, slot: int) -> int:
        """How many direct connections `slot` keeps open now."""
        connections = self._direct.get(slot)
        return 0 if connections is None else len(connections)

    def _slot_ssl_context(self, tls: bool) -> ssl.SSLContext:
        return self.ssl_context(tls=tls)

    def ssl_context(self, *, tls: bool) -> ssl.SSLContext:
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

    async def aclose(self) -> None:
        direct, self._direct = list(self._direct.values()), {}
        proxied, self._proxied = list(self._proxied.values()), {}
        with trio.CancelScope(shield=True):
            for connections in direct:
                await connections.aclose()
            for transports in proxied:
                for transport in transports.values():
                    await transport.aclose()
