"""When to retry a download, and how long to wait first: pure logic, no I/O.

The retry *loop* is stamina's; this module only decides. Backoff is
exponential with full jitter (a uniform draw between zero and the exponential
ceiling), so that many downloads failing together do not retry together. A
server's Retry-After, in seconds or as an HTTP date, wins over our own guess,
capped so that a hostile or confused server cannot park a download for days.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import HttpStatusError, RefusedStatus, RetryableStatus

# Statuses a retry can fix: the server was busy or broken, not the request.
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
# Statuses whose Retry-After header we honour (RFC 9110 §10.2.3).
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before attempt n+1, as a value object."""

    # The ceiling for the first retry; it doubles with each attempt.
    base_s: float = 0.5
    # No backoff of our own is ever longer than this.
    cap_s: float = 30.0
    # No Retry-After is honoured beyond this; past it we wait this long.
    retry_after_cap_s: float = 120.0

    def delay(
        self, attempt: int, *, rand: Callable[[], float], retry_after: float | None = None
    ) -> float:
        """Seconds to sleep after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap_s)
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return float(rand() * ceiling)


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also takes "²" and other digits that
    # float() refuses (a header is decoded as latin-1 when it is not ASCII).
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - now).total_seconds(), 0.0)


def status_is_retryable(status: int) -> bool:
    return status in RETRY_STATUSES


def status_error(status: int, headers: Mapping[str, str], *, now: dt.datetime) -> HttpStatusError:
    """The error for an answer with `status`, and how long its server asks us to wait."""
    retry_after = None
    if status in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    kind = RetryableStatus if status_is_retryable(status) else RefusedStatus
    return kind(status, retry_after=retry_after)
