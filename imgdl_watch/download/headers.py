"""The headers of each request, and who gets credentials: pure logic, no I/O.

As curl does, credentials go to the listed URL's origin only: the
Authorization and Cookie headers of `--header`, and Basic credentials from
`user:password@` in the URL. Another host that a redirect points at gets
neither (unless its own URL has a `user:password@`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Final

import httpx

# What we accept: images first, anything else last (a server that only knows
# `*/*` still answers; the body checks decide).
ACCEPT: Final = "image/avif,image/webp,image/apng,image/*;q=0.9,*/*;q=0.5"
# The saved bytes are the server's: no Content-Encoding to undo, and no
# compressed bomb to inflate (see `body`).
ACCEPT_ENCODING: Final = "identity"
# Headers that carry credentials: only the listed URL's own origin gets them.
CREDENTIAL_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})

RawHeaders = list[tuple[bytes, bytes]]


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class RequestHeaders:
    """The headers for each request of a download, built once per fetcher."""

    __slots__ = ("_elsewhere", "_home", "_raw_elsewhere", "_raw_home")

    def __init__(self, *, user_agent: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        ours = {"User-Agent": user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
        # A `--header` of the same name, in any case, wins (the last of several).
        custom = {name.lower(): (name, value) for name, value in extra}
        self._home = {k: v for k, v in ours.items() if k.lower() not in custom} | dict(
            custom.values()
        )
        # What a host other than the listed URL's gets, after a redirect.
        self._elsewhere = {
            name: value
            for name, value in self._home.items()
            if name.lower() not in CREDENTIAL_HEADERS
        }
        # The same headers as bytes, as they go on the wire: nearly every
        # request sends one of these lists as it is.
        self._raw_home = httpx.Headers(self._home).raw
        self._raw_elsewhere = httpx.Headers(self._elsewhere).raw

    def anonymous(self) -> RawHeaders:
        """The headers without credentials (what a robots.txt request sends)."""
        return self._raw_elsewhere

    def for_request(self, listed: httpx.URL, current: httpx.URL) -> RawHeaders:
        """The headers for a request to `current`, on the way from `listed`."""
        if current is listed and not listed.userinfo:
            return self._raw_home  # nearly every request: no redirect, no credentials
        home = origin(current) == origin(listed)
        source = current if current.userinfo else listed
        if not (source.userinfo and (home or source is current)):
            return self._raw_home if home else self._raw_elsewhere
        headers = self._home if home else self._elsewhere
        secret = f"{source.username}:{source.password}".encode()
        return httpx.Headers(
            headers | {"Authorization": "Basic " + base64.b64encode(secret).decode()}
        ).raw
