"""The private-address guard (`--block-private`): which addresses a download may reach.

Checking a URL's host before the request is not enough: httpcore resolves
the name again to connect, and a DNS server may answer differently the
second time (DNS rebinding). So the guard sits where the connection is
made. With it on, the fetcher installs `PublicOnlyResolver` as trio's
hostname resolver for the run. Every name that trio resolves to connect,
httpcore's included, passes through it, and addresses that are not public
are dropped before any socket opens. A name with no public address at all
fails the connection with `AddressRefused`.

IP literals in URLs never reach a resolver (trio connects to them
directly), so the fetcher checks those with `is_public` itself.

Proxies from the environment are exempt. They are the operator's own, often
on a private network, and it is the proxy that resolves and reaches the target.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import trio


class AddressRefused(OSError):
    """A name resolves to no public address. An OSError, because it is raised
    inside a connection attempt, where httpcore expects one."""


def literal_is_refused(host: str) -> bool:
    """True for an IP literal that is not public. Names are not literals: the
    resolver checks what they resolve to."""
    try:
        return not is_public(host)
    except ValueError:
        return False


@contextlib.contextmanager
def guarding(*, exempt: Iterable[str] = ()) -> Iterator[None]:
    """`PublicOnlyResolver` as trio's hostname resolver while inside; the
    resolver that was there before comes back after. `exempt`: proxy hosts."""
    outer = trio.socket.set_custom_hostname_resolver(None)
    trio.socket.set_custom_hostname_resolver(
        PublicOnlyResolver(inner=outer, exempt=frozenset(exempt))
    )
    try:
        yield
    finally:
        trio.socket.set_custom_hostname_resolver(outer)


def is_public(address: str) -> bool:
    """Whether a download may connect to `address` (an IPv4 or IPv6 literal)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(trio.abc.HostnameResolver):
    """trio's name resolution, with every address that is not public removed.

    `inner` is the resolver to ask (trio's own, in a thread, when None);
    `exempt` names (the proxies) are passed through as they resolve.
    """

    def __init__(
        self,
        *,
        inner: trio.abc.HostnameResolver | None = None,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self._inner = inner
        self._exempt = exempt

    async def getaddrinfo(  # noqa: PLR0917 - the signature is trio's
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        if self._inner is not None:
            infos = await self._inner.getaddrinfo(host, port, family, type, proto, flags)
        else:
            infos = await trio.to_thread.run_sync(
                socket.getaddrinfo, host, port, family, type, proto, flags, abandon_on_cancel=True
            )
        name = (host or b"").decode("ascii", "replace")
        if name in self._exempt:
            return list(infos)
        public = [info for info in infos if is_public(str(info[4][0]))]
        if not public and infos:
            raise AddressRefused(
                errno.EACCES, f"{name} resolves only to non-public addresses ({infos[0][4][0]})"
            )
        return public

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        if self._inner is not None:
            return await self._inner.getnameinfo(sockaddr, flags)
        return await trio.to_thread.run_sync(
            socket.getnameinfo, sockaddr, flags, abandon_on_cancel=True
        )
