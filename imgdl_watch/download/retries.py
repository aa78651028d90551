"""The retry loop: attempts of one download until one succeeds or the policy says stop.

stamina runs the loop; `retrypolicy` decides what is retried and how long to
wait first. Each retry is logged here (`download_retry`), with its URL.
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


class Attempts:
    """How many attempts a download made so far (one counter, set on its error once)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


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
    attempts.count = 1
    try:
        return await attempt()
    except err.DownloadError as exc:
        if not exc.retryable or retries == 0:
            raise
        first_failure: err.DownloadError | None = exc

    async for retry in quiet_stamina().retry_context(
        on=_retry_delay(url, backoff, rand, attempts), attempts=retries + 1, timeout=None
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
    url: str, backoff: Backoff, rand: random.Random, attempts: Attempts
) -> Callable[[Exception], bool | float]:
    """stamina's `on`: whether `exc` is retried, and after how long (logged)."""

    def retry_delay(exc: Exception) -> bool | float:
        if not isinstance(exc, err.DownloadError) or not exc.retryable:
            return False
        retry_after = exc.retry_after if isinstance(exc, err.HttpStatusError) else None
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
