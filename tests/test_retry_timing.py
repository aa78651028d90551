"""Retry timing on a fake clock: Retry-After and backoff, with no real sleeps."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from functools import partial

import httpx
import trio
import trio.testing

from imgdl_watch import errors as err
from imgdl_watch.download.fetcher import Downloaded, Fetcher
from imgdl_watch.download.hostlimits import HostLimits, Verdict
from imgdl_watch.download.retries import THROTTLED_RETRIES
from imgdl_watch.download.retrypolicy import Backoff
from tests.helpers import fetch_options

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100


def run_on_mock_clock(fn: Callable[[], object]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


def transport(answers: list[httpx.Response], seen: list[float]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(trio.current_time())
        return answers.pop(0)

    return httpx.MockTransport(handle)


def fetch_with(answers: list[httpx.Response], tmp: str, **opts: object) -> list[float]:
    """When each request of one download of `answers` went; it must succeed."""
    seen: list[float] = []
    got = fetch_into(seen, answers, tmp, **opts)
    if isinstance(got, err.DownloadError):
        raise got
    return seen


def fetch_into(
    seen: list[float], answers: list[httpx.Response], tmp: str, **opts: object
) -> object:
    """One download of `answers` on the mock clock, each request's time in
    `seen`: its result, or the error it ended with."""
    ended: list[object] = []

    async def main() -> None:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            options = fetch_options(total_timeout=1e9, **opts)
            async with Fetcher(options, transport=transport(answers, seen)) as fetcher:
                try:
                    ended.append(
                        await fetcher.download("http://h.example/a.jpg", dir_fd=fd, name="a.jpg")
                    )
                except err.DownloadError as exc:
                    ended.append(exc)
        finally:
            os.close(fd)

    run_on_mock_clock(main)
    return ended[0]


def ok() -> httpx.Response:
    return httpx.Response(
        200, stream=httpx.ByteStream(JPEG), headers={"Content-Type": "image/jpeg"}
    )


def test_retry_after_seconds_is_honoured(tmp_path: os.PathLike[str]) -> None:
    seen = fetch_with([httpx.Response(429, headers={"Retry-After": "7"}), ok()], str(tmp_path))
    assert 7 <= seen[1] - seen[0] < 7.5


def test_retry_after_date_is_honoured(tmp_path: os.PathLike[str]) -> None:
    when = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    seen = fetch_with([when, ok()], str(tmp_path), backoff=Backoff(retry_after_cap_s=90))
    # A date far away is capped: we wait the cap, not until 2099.
    assert 90 <= seen[1] - seen[0] < 90.5


def test_backoff_is_exponential_with_full_jitter(tmp_path: os.PathLike[str]) -> None:
    answers = [httpx.Response(500) for _ in range(4)] + [ok()]
    seen = fetch_with(answers, str(tmp_path), retries=4, backoff=Backoff(base_s=1.0, cap_s=100))
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    ceilings = [1.0, 2.0, 4.0, 8.0]
    assert len(gaps) == 4
    assert all(0 <= gap <= ceiling + 0.01 for gap, ceiling in zip(gaps, ceilings, strict=True))


def test_host_limit_halves_on_busy_and_climbs_back_slowly() -> None:
    async def main() -> None:
        hosts = HostLimits(8)

        async def attempt(verdict: Verdict) -> None:
            hosts.release(await hosts.acquire("h"), verdict)

        holding, done = trio.Event(), trio.Event()

        async def in_flight() -> None:  # another download of the host, all along
            held = await hosts.acquire("h")
            holding.set()
            await done.wait()
            hosts.release(held, Verdict.NEUTRAL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_flight)
            await holding.wait()
            await attempt(Verdict.BUSY)
            assert hosts.limit_of("h") == 4
            await attempt(Verdict.BUSY)
            assert hosts.limit_of("h") == 2
            await attempt(Verdict.NEUTRAL)  # a 404 or a timeout says nothing of the load
            assert hosts.limit_of("h") == 2
            for _ in range(2):
                await attempt(Verdict.GOOD)
            assert hosts.limit_of("h") == 3
            for _ in range(3):
                await attempt(Verdict.GOOD)
            assert hosts.limit_of("h") == 4
            hosts.set_ceiling(3)
            assert hosts.limit_of("h") == 3
            done.set()
        # an idle host below its ceiling is remembered; at the ceiling, forgotten
        assert hosts.limit_of("h") == 3

    trio.run(main)


def test_a_host_with_one_download_in_flight_is_slowed_by_its_429() -> None:
    # The verdict comes with the release: before, the release forgot the idle
    # host (at its ceiling) first, and the 429 that followed was dropped.
    async def main() -> None:
        hosts = HostLimits(8)
        hosts.release(await hosts.acquire("h"), Verdict.BUSY)
        assert hosts.limit_of("h") == 4

    trio.run(main)


def test_busy_host_gets_fewer_requests_at_once(tmp_path: os.PathLike[str]) -> None:
    """Four downloads to a host that answers 503 once each: its limit drops."""
    limits: list[int] = []

    async def main() -> None:
        fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
        answers = {
            f"/{i}.jpg": [httpx.Response(503, headers={"Retry-After": "1"}), ok()] for i in range(4)
        }

        def handle(request: httpx.Request) -> httpx.Response:
            return answers[request.url.path].pop(0)

        options = fetch_options(per_host=4, total_timeout=1e9)
        mock = httpx.MockTransport(handle)
        async with Fetcher(options, transport=mock) as fetcher, trio.open_nursery() as nursery:
            for i in range(4):
                url = f"http://h.example/{i}.jpg"
                nursery.start_soon(partial(fetcher.download, url, dir_fd=fd, name=f"{i}.jpg"))
            await trio.sleep(0.5)
            limits.append(fetcher.hosts.limit_of("h.example"))
        os.close(fd)

    run_on_mock_clock(main)
    assert limits == [1]


def test_reloaded_limits_never_share_a_slot() -> None:
    async def main() -> None:
        fetcher = Fetcher(fetch_options(concurrency=4))
        fetcher.set_limits(concurrency=2, per_host=8)
        fetcher.set_limits(concurrency=6, per_host=8)
        assert sorted(fetcher.slots.idle()) == list(range(6))  # no id twice
        assert fetcher.concurrency == 6
        fetcher.set_limits(concurrency=3, per_host=2)
        assert fetcher.concurrency == 3 and fetcher.hosts.ceiling == 2

    trio.run(main)


def test_fetch_options_come_from_the_settings_of_the_same_name() -> None:
    from imgdl_watch.config import fetch_options as fetch_options_from
    from imgdl_watch.config import resolve

    flags = {
        "retries": "7",
        "per_host": "3",
        "max_bytes": "5M",
        "any_type": "true",
        "user_agent": "x/1",
    }
    options = fetch_options_from(resolve("fetch", flags, env={}, config_path=None))
    assert (options.retries, options.per_host, options.max_bytes) == (7, 3, 5 * 1024**2)
    assert options.any_type is True and options.user_agent == "x/1"
    assert options.concurrency == 32 and options.backoff == Backoff()


def fetch_outcome(answers: list[httpx.Response], tmp: str, **opts: object) -> tuple[object, int]:
    """What one download of `answers` ends with (its result or its error), and
    how many requests went."""
    seen: list[float] = []
    return fetch_into(seen, answers, tmp, **opts), len(seen)


def throttled(status: int = 429) -> httpx.Response:
    return httpx.Response(status, headers={"Retry-After": "1"})


def test_an_answer_that_says_when_to_come_back_uses_up_no_retry(
    tmp_path: os.PathLike[str],
) -> None:
    # One retry allowed, and the host twice says "not now, in 1 s": both are
    # waited out as it asks, and the image is saved at the third request.
    got, requests = fetch_outcome([throttled(), throttled(503), ok()], str(tmp_path), retries=1)
    assert isinstance(got, Downloaded) and got.attempts == 3 and requests == 3


def test_such_answers_are_waited_out_a_bounded_number_of_times(
    tmp_path: os.PathLike[str],
) -> None:
    # A host that never stops saying "not now": THROTTLED_RETRIES of them
    # beyond the retries, then the download fails as before.
    answers = [throttled() for _ in range(THROTTLED_RETRIES + 5)]
    got, requests = fetch_outcome(answers, str(tmp_path), retries=1)
    assert isinstance(got, err.HttpStatusError) and got.status == 429
    assert requests == got.attempts == 1 + 1 + THROTTLED_RETRIES


def test_other_failures_still_count_and_no_retries_means_none(
    tmp_path: os.PathLike[str],
) -> None:
    # A 503 that says nothing of when is a failure like a 500.
    got, requests = fetch_outcome(
        [httpx.Response(503), httpx.Response(503), ok()], str(tmp_path), retries=1
    )
    assert isinstance(got, err.HttpStatusError) and requests == 2
    # --retries 0: not even a host's "come back in 1 s" is waited for.
    got, requests = fetch_outcome([throttled(), ok()], str(tmp_path), retries=0)
    assert isinstance(got, err.HttpStatusError) and requests == 1
