"""Whether a URL's host can be looked up at all: DNS must be able to carry
it (RFC 1035: labels of 1 to 63 bytes, 253 in all without the root's dot),
and httpx must be able to spell it.

httpx parses `http://` + 3000 letters + `.example/` as a URL, and so would a
browser's address bar; but the resolver refuses the name before it asks
anyone (Python's `idna` codec raises `UnicodeError: label empty or too
long`, in `socket.getaddrinfo` and trio's alike), which is not an error any
HTTP layer translates. So a list's line with such a host is invalid
(`bad_host`), a redirect to one fails as `bad_redirect`, and a download
given one otherwise fails as `unknown_host`, all before any request; none
may reach the resolver, where the `UnicodeError` would end the whole job.

The same goes for an `xn--` label that is not valid punycode
(`xn--zz.example`): httpx parses the URL, but reading its `host` decodes
the label with the `idna` package, which raises (`IDNAError`, a
`ValueError`) wherever the host is read next. `lookup_host` checks both,
once, at the same three places.

Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import httpx

# RFC 1035, 2.3.4: a label is at most 63 octets; a name at most 255 on the
# wire, which is 253 characters written out without the root's dot.
MAX_LABEL: Final = 63
MAX_NAME: Final = 253


def dns_can_carry(host: str | bytes) -> bool:
    """Whether `host` (ASCII: as it goes to the resolver, IDNA labels
    already encoded) is a name DNS can carry, or an IPv6 literal. An empty
    host or label is not; one trailing dot (the root) is allowed."""
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    if ":" in text:  # an IPv6 literal: no resolver is asked about it
        return True
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > MAX_NAME:
        return False
    return all(0 < len(label) <= MAX_LABEL for label in name.split("."))


def lookup_host(url: httpx.URL) -> str | None:
    """`url.host`, or None when DNS cannot carry it (`dns_can_carry`) or
    httpx cannot spell it (an `xn--` label that is not valid IDNA)."""
    if not dns_can_carry(url.raw_host):
        return None
    try:
        return url.host
    except ValueError:  # idna.IDNAError and its kinds
        return None
