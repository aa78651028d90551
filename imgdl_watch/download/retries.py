"""The retry loop: attempts of one download until one succeeds or the policy says stop.

stamina runs the loop; `retrypolicy` decides what is retried and how long to
wait first. Each retry is logged here (`download_retry`), with its URL.

An answer that says when to come back (a 429 or 503 with a Retry-After) is
the host asking us to slow down, not the download failing: it is waited out
as the host asks and does not use up one of `--retries`, up to
`THROTTLED_RETRIES` such answers per download. So a rate-limited host costs
time, not images (on the mix set of `make bench`, with 2 attempts, a URL
refused twice that way was lost in some rounds).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TypeVar

import structlog
import trio

from .. import errors as err
from ..redact import log_url
from .retrypolicy import Backoff

log = structlog.get_logger("imgdl_watch")

T = TypeVar("T")

# Answers that say when to come back, waited out per download beyond its
# retries: with the longest Retry-After honoured (`Backoff.retry_after_cap_s`,
# 120 s), a host that never stops throttling holds a URL ~16 min at most.
THROTTLED_RETRIES = 8


class Attempts:
    """How many attempts a download made so far (set on its error once), and how
    many of them the host answered "not now" with a Retry-After."""

    __slots__ = ("count", "throttled")

    def __init__(self) -> None:
        self.count = 0
        self.throttled = 0


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    url: str,
    retries: int,
    backoff: Backoff,
    rand: random.Random,
    stopping: trio.Event,
    attempts: Attempts,
) -> T:
    """`attempt()` until it succeeds, or until the policy says stop; no new
    attempt starts once `stopping` is set (`Interrupted`).

    Most downloads succeed at once, and building stamina's retry state
    costs a tenth of a millisecond each: so the first attempt runs bare.
    If it fails, stamina takes over from its very first attempt, which
    re-raises that failure: stamina then decides, waits and counts every
    retry, exactly as if it had run the first try itself.
    """
    if stopping.is_set():
        raise err.Interrupted
    # On from the count so far: a download tried again whole (its worker
    # died with the body) shares one budget and one count of attempts.
    attempts.count += 1
    try:
        return await attempt()
    except err.DownloadError as exc:
        if not exc.retryable or retries == 0:
            raise
        first_failure: err.DownloadError | None = exc

    async for retry in quiet_stamina().retry_context(
        on=_retry_delay(url, retries, backoff, rand, attempts),
        attempts=retries + 1 + THROTTLED_RETRIES,
        timeout=None,
    ):
        with retry:
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            if stopping.is_set():
                raise err.Interrupted from None
            attempts.count += 1
            return await attempt()
    raise AssertionError("unreachable: stamina re-raises the last failure")


def _retry_delay(
    url: str, retries: int, backoff: Backoff, rand: random.Random, attempts: Attempts
) -> Callable[[Exception], bool | float]:
    """stamina's `on`: whether `exc` is retried, and after how long (logged).
    stamina's own cap is every retry and every "not now" together; this keeps
    each within its own."""

    def retry_delay(exc: Exception) -> bool | float:
        if not isinstance(exc, err.DownloadError) or not exc.retryable:
            return False
        retry_after = exc.retry_after if isinstance(exc, err.HttpStatusError) else None
        if retry_after is not None and attempts.throttled < THROTTLED_RETRIES:
            attempts.throttled += 1  # the host said when: not one of the retries
        elif attempts.count - attempts.throttled > retries:
            return False
        delay = backoff.delay(attempts.count, rand=rand.random, retry_after=retry_after)
        log.info(
            "download_retry",
            url=log_url(url),
            attempt=attempts.count,
            reason=exc.reason,
            status=exc.status,
            delay_s=round(delay, 3),
            # The host asked for the wait (and is paused for it), or it is ours.
            wait="retry_after" if retry_after is not None else "backoff",
        )
        return delay

    return retry_delay


# Imported on first use. A one-shot `fetch` pays for its imports in wall time,
# and stamina (with tenacity, ~10 ms) is needed only after a first failure.
# Every user of stamina in the package takes it from here, so that its hooks
# are silenced before its first retry, whoever retries first.


@functools.cache
def quiet_stamina() -> ModuleType:
    import stamina  # noqa: PLC0415
    import stamina.instrumentation  # noqa: PLC0415

    # We log each retry ourselves, with the URL; stamina's own hooks would
    # add an event of another shape (and a metric) for each one.
    stamina.instrumentation.set_on_retry_hooks([])
    return stamina
