"""Following a redirect: where it leads, and whether we may go: pure logic, no I/O.

We follow redirects ourselves rather than let httpx do it, so that every hop
is checked: its scheme (http and https only), its host's name (one DNS
can carry and httpx can spell), its port, loops, and (in the fetcher)
the private-address guard and who gets credentials.
"""

from __future__ import annotations

from typing import Final

import httpx

from .. import errors as err
from ..hostnames import lookup_host

# The highest TCP port.
MAX_PORT: Final = 65535
# Statuses that mean "it is elsewhere".
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def next_hop(current: httpx.URL, location: str, seen: set[str]) -> httpx.URL:
    """Where `location` leads from `current`; `seen` holds every hop so far, and gets this one.

    Raises `BadRedirect` or `RedirectLoop`.
    """
    try:
        target = current.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        # httpx's join goes through urllib's urljoin, which raises a plain
        # ValueError for a host it cannot split ("http:////a]/").
        raise err.BadRedirect("unparseable Location") from exc
    if target.scheme not in ("http", "https") or not target.raw_host:
        raise err.BadRedirect(f"redirect to {target.scheme}:")
    if lookup_host(target) is None:
        # The resolver would refuse it with a UnicodeError, or httpx could
        # not spell it (`hostnames`).
        raise err.BadRedirect("redirect to a host name that DNS cannot carry")
    if target.port is not None and not 0 < target.port <= MAX_PORT:
        # A list's line with such a port is malformed_url; here it would
        # otherwise fail to connect, and be tried again.
        raise err.BadRedirect(f"redirect to port {target.port}")
    key = str(target.copy_with(fragment=None))
    if key in seen:
        raise err.RedirectLoop("redirect loop")
    seen.add(key)
    return target
