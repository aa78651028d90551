"""httpx's and httpcore's exceptions, translated into ours at the boundary.

A direct request raises httpcore's exceptions; a proxied one (or one through
an injected transport) raises httpx's, which wrap them. Both trees have the
same shape, and `translate` maps either, by the first row of `_TABLE` that
matches (the order matters: httpx's `ConnectError` is a `NetworkError`):

    theirs (httpx or httpcore)          ours (`errors`)
    TimeoutException                    TimedOut
    ConnectError, ProxyError            by the cause: gaierror -> UnknownHost or
                                        ConnectFailed; AddressRefused ->
                                        BlockedAddress; a certificate that failed
                                        verification -> UntrustedCertificate;
                                        else ConnectFailed
    RemoteProtocolError                 by the message (`PEER_MESSAGES`):
                                        Truncated, ConnectionLost; else ProtocolError
    NetworkError                        ConnectionLost (read, write, close)
    UnsupportedProtocol,
    LocalProtocolError                  ProtocolError
    any other of theirs                 ConnectionLost

The model is httpcore's own `map_exceptions`: a table, not a ladder.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Final, TypeVar

import httpcore
import httpx

from .. import errors as err
from .addressguard import AddressRefused

# What a download may raise from either library; `translate` takes any of them.
HTTP_ERRORS: Final = (
    httpx.HTTPError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)
# How h11 and httpcore word a peer that stopped early, and what each means.
# The only place we read their messages: one test per string keeps it true.
# (First match wins: the truncated body's message also says "closed".)
PEER_MESSAGES: Final[tuple[tuple[str, type[err.DownloadError]], ...]] = (
    # h11: "peer closed connection without sending complete message body
    # (received N bytes, expected M)", or "(incomplete chunked read)"
    ("incomplete", err.Truncated),
    ("complete message body", err.Truncated),
    # httpcore: "Server disconnected without sending a response."
    ("disconnected", err.ConnectionLost),
    # h11: "peer unexpectedly closed connection"
    ("closed", err.ConnectionLost),
)
# Resolver errors that are DNS's answer, "no such name" or "no address for it",
# rather than a failure to ask (EAI_AGAIN, which a retry may fix).
_NO_SUCH_HOST: Final = frozenset(
    {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
)

_E = TypeVar("_E", bound=BaseException)
_Rule = Callable[[Exception, str], err.DownloadError]


def _text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _timed_out(exc: Exception, _host: str) -> err.DownloadError:
    return err.TimedOut(type(exc).__name__)


def _connect_failed(exc: Exception, host: str) -> err.DownloadError:
    if (dns := cause(exc, socket.gaierror)) is not None:
        if dns.errno in _NO_SUCH_HOST:
            return err.UnknownHost(f"no such host {host} ({dns.strerror})")
        return err.ConnectFailed(f"cannot resolve {host} ({dns.strerror})")
    if (refused := cause(exc, AddressRefused)) is not None:
        return err.BlockedAddress(refused.strerror or str(refused))
    if (tls := cause(exc, ssl.SSLCertVerificationError)) is not None:
        return err.UntrustedCertificate(tls.verify_message or str(tls))
    return err.ConnectFailed(_text(exc))


def _peer_stopped(exc: Exception, _host: str) -> err.DownloadError:
    text = str(exc)
    for words, kind in PEER_MESSAGES:
        if words in text:
            return kind(text)
    return err.ProtocolError(text)


def _lost(exc: Exception, _host: str) -> err.DownloadError:
    return err.ConnectionLost(_text(exc))


def _protocol(exc: Exception, _host: str) -> err.DownloadError:
    return err.ProtocolError(_text(exc))


_TABLE: Final[tuple[tuple[tuple[type[Exception], ...], _Rule], ...]] = (
    ((httpx.TimeoutException, httpcore.TimeoutException), _timed_out),
    (
        (httpx.ConnectError, httpx.ProxyError, httpcore.ConnectError, httpcore.ProxyError),
        _connect_failed,
    ),
    ((httpx.RemoteProtocolError, httpcore.RemoteProtocolError), _peer_stopped),
    ((httpx.NetworkError, httpcore.NetworkError), _lost),
    (
        (
            httpx.UnsupportedProtocol,
            httpx.LocalProtocolError,
            httpcore.UnsupportedProtocol,
            httpcore.LocalProtocolError,
        ),
        _protocol,
    ),
)


def translate(exc: Exception, host: str) -> err.DownloadError:
    """The most specific `DownloadError` for an httpx or httpcore exception met on `host`."""
    for kinds, rule in _TABLE:
        if isinstance(exc, kinds):
            return rule(exc, host)
    return _lost(exc, host)


def cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The exception of type `kind` behind an httpx or httpcore exception, if any."""
    found: BaseException | None = exc
    # httpx's error wraps httpcore's, which wraps the OS's: a short chain.
    for _ in range(8):
        if found is None or isinstance(found, kind):
            return found
        found = found.__cause__ or found.__context__
    return None
