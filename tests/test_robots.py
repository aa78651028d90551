"""robots.txt (`--robots`) against real servers in the test's own run, and its cache."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from imgdl_watch import errors as err
from imgdl_watch.download import robots
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.robots import RobotsCache, RobotsFile, Verdict
from imgdl_watch.download.transports import Answer
from tests.pacedserver import (
    Outcome,
    PacedServer,
    download_all,
    no_fsync,  # noqa: F401 - a fixture, for every test here
    on_mock_clock,
    options,
)

pytestmark = pytest.mark.usefixtures("no_fsync")

ROBOTS_TXT = """\
# For everyone: not /img/private/
User-agent: *
Disallow: /img/private/

# For us: no GIFs ($ ends the path), nothing under any /raw/ folder (* wildcard),
# the rest allowed, and one request every 3 s at most.
User-agent: imgdl-watch
Disallow: /*.gif$
Disallow: /img/*/raw/
Allow: /
Crawl-delay: 3
"""


def fetch_with_robots(robots_txt: str | int, paths: list[str], tmp_path: Path) -> tuple[
    PacedServer, Outcome
]:  # fmt: skip
    server = PacedServer(robots=robots_txt)
    outcomes: Outcome = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            async with Fetcher(options(robots=True)) as fetcher:
                done = await download_all(fetcher, [base + p for p in paths], tmp_path / "out")
            outcomes.update({url.removeprefix(base): d for url, d in done.items()})
            nursery.cancel_scope.cancel()

    on_mock_clock(main)
    return server, outcomes


def reasons(outcomes: Outcome) -> dict[str, str]:
    return {
        path: d.reason if isinstance(d, err.DownloadError) else "ok" for path, d in outcomes.items()
    }


def test_rules_for_our_token_with_wildcards_and_crawl_delay(tmp_path: Path) -> None:
    paths = ["/img/a.jpg", "/img/b.gif", "/img/b.gif.jpg", "/img/x/raw/c.jpg", "/img/private/d.jpg"]
    server, outcomes = fetch_with_robots(ROBOTS_TXT, paths, tmp_path)
    assert reasons(outcomes) == {
        "/img/a.jpg": "ok",
        "/img/b.gif": "robots_disallowed",  # /*.gif$
        "/img/b.gif.jpg": "ok",  # $: the path must end there
        "/img/x/raw/c.jpg": "robots_disallowed",  # /img/*/raw/
        # Our own group applies, not the one for everyone (RFC 9309 2.2.1).
        "/img/private/d.jpg": "ok",
    }
    assert server.counts["/robots.txt"] == 1  # once for the origin, five URLs
    assert server.counts["/img/b.gif"] == server.counts["/img/x/raw/c.jpg"] == 0
    image_times = sorted(h.at for h in server.hits if h.path != "/robots.txt")
    gaps = [b - a for a, b in itertools.pairwise(image_times)]
    # Crawl-delay: 3, once known (from the second request on), jittered upwards.
    assert len(gaps) == 2 and all(3.0 - 1e-9 <= gap <= 4.5 + 1e-9 for gap in gaps), gaps


def test_the_group_for_everyone_applies_to_us_without_our_own(tmp_path: Path) -> None:
    text = "User-agent: otherbot\nDisallow: /\n\nUser-agent: *\nDisallow: /img/private/\n"
    _server, outcomes = fetch_with_robots(text, ["/img/a.jpg", "/img/private/b.jpg"], tmp_path)
    assert reasons(outcomes) == {"/img/a.jpg": "ok", "/img/private/b.jpg": "robots_disallowed"}


def test_a_404_robots_txt_allows_everything(tmp_path: Path) -> None:
    server, outcomes = fetch_with_robots(404, ["/img/a.jpg", "/img/b.jpg"], tmp_path)
    assert reasons(outcomes) == {"/img/a.jpg": "ok", "/img/b.jpg": "ok"}
    assert server.counts["/robots.txt"] == 1


def test_a_500_robots_txt_disallows_everything_and_nothing_is_requested(tmp_path: Path) -> None:
    server, outcomes = fetch_with_robots(500, ["/img/a.jpg", "/img/b.jpg"], tmp_path)
    assert reasons(outcomes) == {
        "/img/a.jpg": "robots_unavailable",
        "/img/b.jpg": "robots_unavailable",
    }
    failure = outcomes["/img/a.jpg"]
    assert isinstance(failure, err.RobotsUnavailable) and "HTTP 500" in failure.detail
    assert failure.attempts == 1  # a permanent refusal: not retried
    assert server.counts["/robots.txt"] == 1
    assert server.counts["/img/a.jpg"] == server.counts["/img/b.jpg"] == 0


def test_a_429_robots_txt_counts_as_unavailable(tmp_path: Path) -> None:
    _server, outcomes = fetch_with_robots(429, ["/img/a.jpg"], tmp_path)
    assert reasons(outcomes) == {"/img/a.jpg": "robots_unavailable"}


def test_an_endless_robots_txt_is_read_up_to_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its first lines are its rules; then comments without end.
    monkeypatch.setattr(robots, "MAX_BYTES", 64 * 1024)
    server, outcomes = fetch_with_robots("endless", ["/img/a.jpg", "/img/never/b.jpg"], tmp_path)
    assert reasons(outcomes) == {"/img/a.jpg": "ok", "/img/never/b.jpg": "robots_disallowed"}
    assert server.counts["/robots.txt"] == 1


def test_an_unreachable_robots_txt_disallows_for_a_while() -> None:
    calls: list[httpx.URL] = []

    async def refused(url: httpx.URL) -> Answer:
        calls.append(url)
        raise err.ConnectFailed("connection refused")

    async def counted(fetch: Callable[[robots.Send], Awaitable[RobotsFile]]) -> RobotsFile:
        return await fetch(refused)

    async def main() -> None:
        checker = robots.Robots("imgdl-watch")
        url = httpx.URL("http://h.example/a.jpg")
        with pytest.raises(err.RobotsUnavailable, match="connect_error"):
            await checker.check(url, counted)
        # Cached for ERROR_TTL_S: asked again, the host is not.
        calls.clear()

        await trio.sleep(robots.ERROR_TTL_S - 1)
        with pytest.raises(err.RobotsUnavailable):
            await checker.check(url, counted)
        assert calls == []
        await trio.sleep(2)
        with pytest.raises(err.RobotsUnavailable):
            await checker.check(url, counted)
        assert [str(u) for u in calls] == ["http://h.example/robots.txt"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_cache_is_bounded_in_files_and_bytes_and_expires() -> None:
    cache = RobotsCache(files=100, max_bytes=10_000)
    for i in range(1000):
        cache.put(("http", f"h{i}", None), RobotsFile(Verdict.ALLOW_ALL, 50.0, size=0))
    assert len(cache) == 100
    assert cache.get(("http", "h999", None), 0.0) is not None
    assert cache.get(("http", "h0", None), 0.0) is None  # the oldest went first
    for i in range(10):
        cache.put(("http", f"big{i}", None), RobotsFile(Verdict.ALLOW_ALL, 50.0, size=4000))
    assert cache.bytes <= 10_000
    assert cache.get(("http", "big9", None), 0.0) is not None
    assert cache.get(("http", "big9", None), 50.0) is None  # its TTL ran out
    assert cache.bytes <= 4000


def test_status_verdicts_follow_rfc_9309() -> None:
    assert robots.verdict_for_status(200) is None
    assert robots.verdict_for_status(404) is Verdict.ALLOW_ALL
    assert robots.verdict_for_status(403) is Verdict.ALLOW_ALL
    assert robots.verdict_for_status(503) is Verdict.UNAVAILABLE
    assert robots.verdict_for_status(429) is Verdict.UNAVAILABLE


def test_a_stopped_fetcher_asks_for_no_robots_txt(tmp_path: Path) -> None:
    # A download that waits for its host's robots.txt when the stop comes ends
    # at once, unsent, and so does the one whose request for it is out (the
    # robots.txt is scratch, asked again on the next start); one that starts
    # after the stop asks for nothing, not even the robots.txt of a host not
    # asked yet.
    server = PacedServer(robots=ROBOTS_TXT, slow_after=0, slow_s=5.0)
    other = PacedServer(robots=ROBOTS_TXT)
    ended: dict[str, tuple[float, object]] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            other_base = await nursery.start(other.serve, "127.0.0.3")
            (tmp_path / "out").mkdir()
            fd = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
            async with Fetcher(options(robots=True)) as fetcher:

                async def one(name: str, url: str) -> None:
                    try:
                        got: object = await fetcher.download(url, dir_fd=fd, name=name)
                    except err.Interrupted as exc:
                        got = exc
                    ended[name] = (trio.current_time(), got)

                async with trio.open_nursery() as downloads:
                    downloads.start_soon(one, "a.jpg", base + "/img/a.jpg")  # robots.txt: 5 s
                    await trio.sleep(0.5)
                    downloads.start_soon(one, "b.jpg", base + "/img/b.jpg")  # waits for it
                    await trio.sleep(0.5)
                    fetcher.stop()
                    downloads.start_soon(one, "c.jpg", other_base + "/img/c.jpg")
            os.close(fd)
            nursery.cancel_scope.cancel()

    on_mock_clock(main)
    assert all(isinstance(got, err.Interrupted) for _, got in ended.values()), ended
    assert ended["a.jpg"][0] == ended["b.jpg"][0] == ended["c.jpg"][0] == pytest.approx(1.0)
    assert server.counts["/robots.txt"] == 1 and server.counts["/img/a.jpg"] == 0
    assert not other.hits
