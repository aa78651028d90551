"""The translation table: httpx's and httpcore's exceptions into our reasons."""

from __future__ import annotations

import inspect
import socket
import ssl
from types import ModuleType

import h11._connection
import h11._readers
import httpcore
import httpcore._async.http11
import httpx
import pytest

from imgdl_watch import errors as err
from imgdl_watch.download.addressguard import AddressRefused
from imgdl_watch.download.translate import PEER_MESSAGES, translate

# For each row of PEER_MESSAGES: a message the library really raises, where
# it comes from, and what it must become. One row each, and the test below
# checks the text is still in the installed library.
REAL_MESSAGES: list[tuple[str, ModuleType, str, type[err.DownloadError]]] = [
    (
        "incomplete",
        h11._readers,
        "peer closed connection without sending complete message body (incomplete chunked read)",
        err.Truncated,
    ),
    (
        "complete message body",
        h11._readers,
        "peer closed connection without sending complete message body "
        "(received 1000 bytes, expected 4000)",
        err.Truncated,
    ),
    (
        "disconnected",
        httpcore._async.http11,
        "Server disconnected without sending a response.",
        err.ConnectionLost,
    ),
    ("closed", h11._connection, "peer unexpectedly closed connection", err.ConnectionLost),
]


def test_every_message_pattern_has_its_test() -> None:
    assert [row[0] for row in REAL_MESSAGES] == [words for words, _ in PEER_MESSAGES]


@pytest.mark.parametrize(
    ("words", "source", "message", "kind"), REAL_MESSAGES, ids=[r[0] for r in REAL_MESSAGES]
)
@pytest.mark.parametrize("library", [httpcore, httpx])
def test_a_peer_that_stopped_early(
    words: str,
    source: ModuleType,
    message: str,
    kind: type[err.DownloadError],
    library: ModuleType,
) -> None:
    # The words we match are what the library says (its source still has them).
    # (The part before a number that the library fills in; its source splits
    # the long message over two string literals.)
    fixed = message.partition("(received")[0].strip()
    assert fixed in inspect.getsource(source).replace('"\n            "', "")
    assert words in message
    translated = translate(library.RemoteProtocolError(message), "example.com")
    assert type(translated) is kind
    assert translated.detail == message


def test_a_protocol_error_with_other_words_is_a_protocol_error() -> None:
    exc = httpcore.RemoteProtocolError("Can't receive data when peer state is ERROR")
    assert type(translate(exc, "h")) is err.ProtocolError


def _caused(exc: Exception, cause: BaseException) -> Exception:
    exc.__cause__ = cause
    return exc


def _untrusted() -> ssl.SSLCertVerificationError:
    # As the ssl module raises it: verify_message says why.
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    return error


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (httpx.ReadTimeout("read"), err.TimedOut, "timeout"),
        (httpcore.ConnectTimeout("connect"), err.TimedOut, "timeout"),
        (
            _caused(httpcore.ConnectError("x"), socket.gaierror(socket.EAI_NONAME, "nope")),
            err.UnknownHost,
            "unknown_host",
        ),
        (
            _caused(httpx.ConnectError("x"), socket.gaierror(socket.EAI_AGAIN, "try again")),
            err.ConnectFailed,
            "connect_error",
        ),
        (
            _caused(httpcore.ConnectError("x"), AddressRefused(13, "private")),
            err.BlockedAddress,
            "blocked_address",
        ),
        (
            _caused(httpcore.ConnectError("x"), _untrusted()),
            err.UntrustedCertificate,
            "certificate_error",
        ),
        (httpcore.ConnectError("refused"), err.ConnectFailed, "connect_error"),
        (httpx.ProxyError("proxy said no"), err.ConnectFailed, "connect_error"),
        # A ConnectError is a NetworkError too: the table's order keeps it a connect_error.
        (httpx.ConnectError("refused"), err.ConnectFailed, "connect_error"),
        (httpcore.ReadError("reset"), err.ConnectionLost, "connection_lost"),
        (httpx.WriteError("broken pipe"), err.ConnectionLost, "connection_lost"),
        (httpcore.UnsupportedProtocol("ftp"), err.ProtocolError, "protocol_error"),
        (httpx.LocalProtocolError("bad header"), err.ProtocolError, "protocol_error"),
        (httpx.DecodingError("?"), err.ConnectionLost, "connection_lost"),
    ],
)
def test_the_table(exc: Exception, kind: type[err.DownloadError], reason: str) -> None:
    translated = translate(exc, "example.com")
    assert type(translated) is kind
    assert translated.reason == reason
