"""The private-address guard (`--block-private`): which addresses a download may reach.

Checking a URL's host before the request is not enough: httpcore resolves
the name again to connect, and a DNS server may answer differently the
second time (DNS rebinding). So the guard sits where the connection is
made. With it on, the fetcher installs `PublicOnlyResolver` as trio's
hostname resolver for the run. Every name that trio resolves to connect,
httpcore's included, passes through it, and addresses that are not public
are dropped before any socket opens. A name with no public address at all
fails the connection with `AddressRefused`.

IP literals in URLs never reach a resolver: trio asks libc for a numeric
address first (`AI_NUMERICHOST`), and connects to one without asking the
resolver. So the fetcher checks literals itself (`literal_is_refused`), as
libc reads them: not only `127.0.0.1` and `::1`, but every form
`inet_aton` takes (`0x7f000001`, `2130706433`, `127.1`, `0177.0.0.1`),
which `ipaddress` refuses to parse and a check by it alone would take for
names. An IPv6 address that carries an IPv4 one (mapped, compatible,
NAT64, 6to4, Teredo) is public only if what it carries is too.

Proxies from the environment are exempt. They are the operator's own, often
on a private network, and it is the proxy that resolves and reaches the target:
through a proxy, only a target's IP literal is checked here (the README says
so); a name is the proxy's to resolve, and to refuse.
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
    """True for an IP literal that is not public, in any form libc reads as
    one. Names are not literals: the resolver checks what they resolve to."""
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):  # not numeric: a name
        return False
    return not all(is_public(str(info[4][0])) for info in infos)


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


# IPv6 prefixes whose last 32 bits are an IPv4 address that a gateway (or
# an old stack) reaches: NAT64's well-known prefix (RFC 6052) and
# IPv4-compatible addresses (RFC 4291, deprecated).
_CARRIES_IPV4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))
# NAT64's local-use prefix (RFC 8215): a site's own translator, which may
# place the IPv4 address anywhere RFC 6052 allows. Never public.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public(address: str) -> bool:
    """Whether a download may connect to `address` (an IPv4 or IPv6 address,
    in its canonical form: what getaddrinfo returns)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip in _LOCAL_NAT64:
        return False
    return all(one.is_global and not one.is_multicast for one in _with_carried(ip))


def _with_carried(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[Any]:
    """`ip`, and any IPv4 address it carries."""
    found: list[Any] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            found.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            found.append(ip.sixtofour)
        if ip.teredo is not None:
            found.extend(ip.teredo)
        if any(ip in prefix for prefix in _CARRIES_IPV4):
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


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
