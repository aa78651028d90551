"""The pure parts of politeness: X-Robots-Tag, the [hosts] table, the pacing
schedule, the byte bucket; and the options that set them."""

from __future__ import annotations

import itertools
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from imgdl_watch import config
from imgdl_watch.config import ConfigError, resolve
from imgdl_watch.download.bandwidth import ByteBucket
from imgdl_watch.download.hostpolicy import HostPolicy
from imgdl_watch.download.hostrules import HostRule, HostTable
from imgdl_watch.download.optout import agent_token, directives, opt_out
from imgdl_watch.download.pacing import MAX_BURST, RATE_SLACK, HostPace, Pacer, PaceRule
from imgdl_watch.job import feed as feed_module
from imgdl_watch.job.outcomes import Outcomes
from imgdl_watch.job.progress import JobSummary
from tests.helpers import fetch_options, open_list, write_list

TOKEN = "imgdl-watch"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["noai"], "noai"),
        (["NoImageAI"], "noimageai"),
        (["noindex, nofollow"], "noindex"),
        (["none"], "none"),
        (["imgdl-watch: noai"], "noai"),
        (["IMGDL-WATCH: none"], "none"),
        (["*: noindex"], "noindex"),
        (["otherbot: noindex"], None),
        (["otherbot: noindex, imgdl-watch: noai"], "noai"),
        (["imgdl-watch: noai, otherbot: nofollow"], "noai"),
        # A header's robot speaks for that header only.
        (["otherbot: nofollow", "noai"], "noai"),
        (["max-snippet: 20, noimageai"], "noimageai"),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], None),
        (["nofollow, noarchive"], None),
        ([], None),
    ],
)
def test_x_robots_tag_opts_out_for_all_or_for_us(headers: list[str], expected: str | None) -> None:
    assert opt_out(headers, TOKEN) == expected


def test_directives_name_their_robot() -> None:
    assert directives("googlebot: noindex, nofollow, imgdl-watch: noai") == [
        ("googlebot", "noindex"),
        ("googlebot", "nofollow"),
        ("imgdl-watch", "noai"),
    ]


def test_the_token_is_the_user_agents_product() -> None:
    assert agent_token(config.USER_AGENT) == "imgdl-watch"
    assert agent_token("MyBot/2.0 (+https://example.com)") == "mybot"


def test_host_rules_match_a_host_or_a_domain() -> None:
    table = HostTable(
        [
            HostRule("i.imgur.com", rate=2),
            HostRule("*.imgur.com", rate=3),
            HostRule("*.cdn.imgur.com", rate=4),
            HostRule("127.0.0.2", per_host=1),
        ]
    )
    rate = {h: r.rate if (r := table.match(h)) else None for h in (
        "i.imgur.com", "I.IMGUR.COM.", "imgur.com", "a.imgur.com", "x.cdn.imgur.com",
        "cdn.imgur.com", "notimgur.com", "imgur.com.evil", "example.com",
    )}  # fmt: skip
    assert rate == {
        "i.imgur.com": 2,
        "I.IMGUR.COM.": 2,
        "imgur.com": 3,  # a domain includes itself
        "a.imgur.com": 3,
        "x.cdn.imgur.com": 4,  # the longer domain wins
        "cdn.imgur.com": 4,
        "notimgur.com": None,
        "imgur.com.evil": None,
        "example.com": None,
    }
    match = table.match("127.0.0.2")
    assert match is not None and match.per_host == 1
    assert HostTable().match("i.imgur.com") is None


def window_counts(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < s + 1) for i, s in enumerate(times))


def schedule(rule: PaceRule, count: int, *, seed: int = 1) -> list[float]:
    """When `count` requests go, each as soon as the schedule allows."""
    pace, rand, now, sent = HostPace(), random.Random(seed), 0.0, []
    for _ in range(count):
        now = pace.ready_at(rule, now)
        pace.take(rule, now, rand.random())
        pace.answered(now)  # answered at once
        sent.append(now)
    return sent


def test_200_requests_at_5_per_second_take_40_seconds_with_5_in_any_second() -> None:
    sent = schedule(PaceRule(rate=5.0), 200)
    assert window_counts(sent) == 5
    # 39 windows of a second, and the slack: 5 in any second on the server's
    # log too, whose requests come a few milliseconds after their turns.
    assert sent[-1] == pytest.approx(39.0 * (1 + RATE_SLACK))
    assert all(b - a >= 1.05 - 1e-9 for a, b in zip(sent, sent[5:], strict=False))
    assert sent[:5] == [0.0] * 5  # a second's worth at once


@pytest.mark.parametrize("rate", [0.25, 0.5, 1.0, 2.5, 7.0, 10.0, 40.0])
def test_no_second_has_more_than_the_rate_allows(rate: float) -> None:
    rule = PaceRule(rate=rate)
    sent = schedule(rule, 300)
    # At most a burst per window of burst/rate seconds...
    assert window_counts(sent) <= rule.burst * math.ceil(rate / rule.burst)
    if rate == int(rate) and rate <= MAX_BURST:
        assert window_counts(sent) == rate  # ... so a whole rate is a true "per second"
    # ... and over time, the rate (less the slack).
    achieved = (len(sent) - rule.burst) / (sent[-1] - sent[0])
    assert achieved == pytest.approx(rate / (1 + RATE_SLACK), rel=0.02)


def test_a_request_counts_until_its_attempt_ends() -> None:
    rule, pace = PaceRule(rate=5.0), HostPace()
    for _ in range(5):
        pace.take(rule, 0.0, 0.5)
    # Five out: while they are, they count as now, so no turn is free.
    assert pace.ready_at(rule, 0.5) == pytest.approx(0.5 + 1.05)
    assert pace.ready_at(rule, 3.0) == pytest.approx(3.0 + 1.05)
    # Four end soon; one is still out at 1.05 s, when the window from the
    # turns would have opened: four turns are free then, not five (the server
    # may see the fifth request as late as its end).
    for at in (0.01, 0.02, 0.03, 0.04):
        pace.answered(at)
    assert pace.ready_at(rule, 0.5) == pytest.approx(0.01 + 1.05)
    for at in (1.06, 1.07, 1.08, 1.09):
        assert pace.ready_at(rule, at) == at
        pace.take(rule, at, 0.5)
    assert pace.ready_at(rule, 1.1) == pytest.approx(1.1 + 1.05)
    pace.answered(1.3)  # the late one ends; the four new ones still count as now
    assert pace.ready_at(rule, 1.3) == pytest.approx(1.3 + 1.05)
    for _ in range(4):
        pace.answered(9.0)
    assert pace.out == 0
    assert pace.ready_at(rule, 9.0) == 9.0  # four in the last window: one more may go
    pace.answered(9.5)  # an end with no request out changes nothing
    assert pace.ready_at(rule, 9.0) == 9.0
    assert not pace.at_rest(rule, 10.0) and pace.at_rest(rule, 10.05)


def test_a_gap_follows_the_end_of_the_last_attempt() -> None:
    gapped, pace = PaceRule(min_gap=2.0), HostPace()
    pace.take(gapped, 0.0, 0.0)
    assert pace.ready_at(gapped, 3.0) == 5.0  # still out at 3 s: a gap from now
    pace.answered(3.0)
    assert pace.ready_at(gapped, 3.0) == 5.0
    assert pace.ready_at(gapped, 6.0) == 6.0


def test_a_host_with_no_rate_may_have_any_number_out() -> None:
    rule, pace = PaceRule(), HostPace()  # a paused host's schedule, say
    for i in range(MAX_BURST + 3):
        assert pace.ready_at(rule, i / 100) == i / 100
        pace.take(rule, i / 100, 0.0)
    assert pace.out == MAX_BURST + 3 and not pace.at_rest(rule, 50.0)
    for _ in range(MAX_BURST + 3):
        pace.answered(20.0)
    assert pace.out == 0 and pace.last(20.0) == 20.0 and pace.at_rest(rule, 20.0)
    # A rate that a reload brings counts every one of them.
    assert pace.ready_at(PaceRule(rate=100.0), 20.0) == pytest.approx(20.0 + 0.105)


def test_an_attempt_that_took_no_turn_ends_no_other() -> None:
    async def main() -> None:
        policy, host = HostPolicy(fetch_options(), rand=random.Random(1)), "h.example"
        early = policy.sending(host, None)  # the host had no schedule: no turn
        policy.pacer.pause(host, 1.0)  # a Retry-After gives it one meanwhile
        await trio.sleep(1.0)
        entry = policy.pacer.enter(host)
        await policy.pacer.wait(entry, host)
        assert policy.pacer.take(entry, host)
        policy.pacer.leave(entry, host)
        paced = policy.sending(host, entry)
        policy.sent(early)
        assert entry.pace.out == 1  # the early attempt's end is not the paced one's
        policy.sent(paced)
        assert entry.pace.out == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_turn_waits_for_an_attempt_to_end_not_for_a_clock() -> None:
    async def main() -> None:
        class NoJitter(random.Random):
            def random(self) -> float:
                return 0.0

        pacer = Pacer(lambda host: PaceRule(min_gap=2.0), rand=NoJitter())
        host = "h.example"
        entry = pacer.enter(host)
        await pacer.wait(entry, host)
        assert pacer.take(entry, host)
        pacer.leave(entry, host)
        waited = trio.Event()

        async def next_turn() -> None:
            second = pacer.enter(host)
            async with second.lock:
                await pacer.wait(second, host)
            pacer.leave(second, host)
            waited.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(next_turn)
            await trio.sleep(7.3)  # the first attempt is out all this while
            assert not waited.is_set()
            pacer.answered(entry, host)
            await waited.wait()
            assert trio.current_time() == pytest.approx(9.3)  # its end + the gap

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_gap_is_a_minimum_with_jitter_and_the_tighter_rule_wins() -> None:
    gaps = [b - a for a, b in itertools.pairwise(schedule(PaceRule(min_gap=2.0), 50))]
    assert all(2.0 <= g <= 3.0 for g in gaps) and len(set(gaps)) > 40
    # A rate of 10/s with a gap of 1 s: the gap wins.
    both = schedule(PaceRule(rate=10.0, min_gap=1.0), 20)
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(both))


def test_a_pause_holds_every_request_until_it_ends() -> None:
    pace = HostPace()
    assert pace.pause(10.0) and not pace.pause(5.0)
    assert pace.ready_at(PaceRule(), 3.0) == 10.0
    assert pace.ready_at(PaceRule(), 11.0) == 11.0


def test_the_pacer_forgets_hosts_at_rest() -> None:
    async def main() -> None:
        pacer = Pacer(lambda host: PaceRule(rate=100.0))
        for i in range(5000):
            host = f"h{i}.example"
            entry = pacer.enter(host)
            await pacer.wait(entry, host)
            assert pacer.take(entry, host)
            pacer.leave(entry, host)
            pacer.answered(entry, host)  # the request's attempt ended
            await trio.sleep(0.1)
        assert len(pacer._hosts) <= 257
        unlimited = Pacer(lambda host: PaceRule())
        assert not unlimited.active("h.example")
        assert unlimited.pause("h.example", 3.0) == 3.0
        assert unlimited.active("h.example") and unlimited.paused_for("h.example") == 3.0
        await trio.sleep(3.0)
        entry = unlimited.enter("h.example")
        unlimited.leave(entry, "h.example")
        assert not unlimited.active("h.example")  # the pause is over: forgotten

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_byte_bucket_spreads_10_mb_at_2_mb_per_second_over_5_seconds() -> None:
    rate, now = 2 * 1024**2, 0.0
    bucket = ByteBucket.full(rate, now)
    for _ in range(160):  # 160 reads of 64 KiB: 10 MiB
        now += bucket.pay(64 * 1024, now)
    # The bucket's burst (a tenth of a second's worth) is free; the rest at the rate.
    assert now == pytest.approx((10 * 1024**2 - bucket.capacity) / rate)
    assert now == pytest.approx(4.9)


# -- the options -------------------------------------------------------------


def test_each_politeness_option_is_a_flag_an_environment_variable_and_a_key(
    tmp_path: Path,
) -> None:
    values = {  # name: (text, TOML literal, value)
        "rate_per_host": ("2.5", "2.5", 2.5),
        "min_gap": ("0.5", "0.5", 0.5),
        "max_rate": ("2M", '"2M"', 2 * 1024**2),
        "ignore_opt_outs": ("true", "true", True),
        "robots": ("true", "true", True),
        "contact": ("ops@example.com", '"ops@example.com"', "ops@example.com"),
    }
    for name, (text, literal, parsed) in values.items():
        by_flag = resolve("run", {name: text}, env={}, config_path=None)
        by_env = resolve("run", {}, env={config.env_name(name): text}, config_path=None)
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f"{name.replace('_', '-')} = {literal}\n")
        by_file = resolve("run", {}, env={}, config_path=str(toml))
        assert getattr(by_flag, name) == getattr(by_env, name) == getattr(by_file, name) == parsed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"rate_per_host": "-1"}, "rate-per-host must be 0 or more"),
        ({"rate_per_host": "5000"}, "rate-per-host must be at most 1000"),
        ({"rate_per_host": "fast"}, "'fast' is not a number of requests per second"),
        ({"min_gap": "-1"}, "min-gap must be 0 or more"),
        ({"max_rate": "10"}, "max-rate must be 0 (no cap) or at least 1K"),
        ({"contact": "call me"}, "contact must be an http(s) URL or an email"),
    ],
)
def test_bad_politeness_options_are_one_line(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve("run", flags, env={}, config_path=None)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_contact_is_in_the_user_agent_and_an_email_in_from() -> None:
    url = resolve("run", {"contact": "https://ops.example/bot"}, env={}, config_path=None)
    assert url.user_agent == "imgdl-watch/0.1.0 (image list downloader; +https://ops.example/bot)"
    assert url.header == ()
    mail = resolve("run", {"contact": "ops@example.com"}, env={}, config_path=None)
    assert mail.user_agent.endswith("; ops@example.com)")
    assert mail.header == (("From", "ops@example.com"),)
    own = resolve(
        "run", {"contact": "ops@example.com", "user_agent": "mine/1"}, env={}, config_path=None
    )
    assert own.user_agent == "mine/1"  # the operator's own User-Agent is left as it is


def test_the_hosts_table_from_the_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text(
        """
rate-per-host = 1
[hosts."i.imgur.com"]
rate = 2
per_host = 4
header = ["Referer: https://imgur.com/"]
[hosts."*.example.com"]
min-gap = 0.5
max_rate = "1M"
"""
    )
    settings = resolve("run", {}, env={}, config_path=str(toml))
    assert settings.rate_per_host == 1.0
    assert settings.hosts == HostTable(
        [
            HostRule(
                "i.imgur.com", rate=2.0, per_host=4, header=(("Referer", "https://imgur.com/"),)
            ),
            HostRule("*.example.com", min_gap=0.5, max_rate=1024**2),
        ]
    )
    assert config.fetch_options(settings).hosts == settings.hosts
    # Beside an [imgdl-watch] table too.
    toml.write_text('[imgdl-watch]\nper-host = 3\n[hosts."a.example"]\nrate = 7\n')
    rule = resolve("run", {}, env={}, config_path=str(toml)).hosts.match("a.example")
    assert rule is not None and rule.rate == 7.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[hosts."i.imgur.com"]\nrate = -2\n', '[hosts."i.imgur.com"]: rate must be 0 or more'),
        ('[hosts."i.imgur.com"]\nspeed = 2\n', "unknown key 'speed' (known: rate, min_gap"),
        ('[hosts."i.imgur.com"]\nper_host = 0\n', "per-host must be 1 to 1000"),
        ('[hosts."i.imgur.com"]\nheader = ["Host: x"]\n', "header must not set Host"),
        ('[hosts."i.imgur.com"]\nmax_rate = true\n', "max-rate must be a size"),
        ('[hosts."bad host"]\nrate = 1\n', "not a host name, nor *.domain"),
        ('[hosts]\n"i.imgur.com" = 2\n', '[hosts."i.imgur.com"] must be a table'),
        ("hosts = 3\n", "[hosts] must be a table"),
    ],
)
def test_a_bad_hosts_table_is_one_line(tmp_path: Path, table: str, message: str) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text(table)
    with pytest.raises(ConfigError) as caught:
        resolve("run", {}, env={}, config_path=str(toml))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def a_feed(list_fd: int, folder_fd: int, **given: Any) -> feed_module.Feed:
    """A job's feed over the list open at `list_fd`, its outcomes dropped."""
    return feed_module.Feed(
        list_fd,
        outcomes=Outcomes(JobSummary("l"), None, stop=lambda: None),
        folder_fd=folder_fd,
        stopping=trio.Event(),
        **given,
    )


def test_the_feed_sets_busy_hosts_aside_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy host's items wait while others go; past QUEUED_MAX the oldest
    goes all the same; the rest go as the host gives slots back."""
    monkeypatch.setattr(feed_module, "QUEUED_MAX", 3)
    lines = [f"http://busy.example/{i}.jpg" for i in range(6)]
    lines += [f"http://free.example/{i}.jpg" for i in range(4)]
    listed = write_list(tmp_path / "l.txt", lines)
    busy = {"busy.example"}
    handed: list[str] = []

    async def main() -> None:
        room = trio.Event()

        async def wait_for_room() -> None:
            await room.wait()

        fd = open_list(listed)
        (tmp_path / "out").mkdir()
        folder_fd = os.open(
            tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY
        )  # empty: nothing skipped
        feed = a_feed(fd, folder_fd, busy=lambda host: host in busy, room=wait_for_room)
        send, receive = trio.open_memory_channel[feed_module.Work](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run, send, lambda: None)
            async with receive:
                # 4 free, and 3 of busy.example past the bound. None of them may
                # wait for room: it comes only below, so this would never end
                # (and pytest's timeout would fail the test).
                while len(handed) < 7:
                    handed.append((await receive.receive()).url)
                busy.clear()
                room.set()
                async for item in receive:
                    handed.append(item.url)
        os.close(fd)
        os.close(folder_fd)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    free = [u for u in handed if "free" in u]
    assert free == lines[6:]
    # The free host's went first; then three past the bound, the oldest
    # first; the rest once the host had room.
    assert handed == lines[6:] + lines[:3] + lines[3:6]


def hand_over_order(tmp_path: Path, lines: list[str]) -> list[str]:
    """The URLs of `lines` in the order a job's feed hands them to its workers,
    no host ever busy."""
    listed = write_list(tmp_path / "l.txt", lines)
    handed: list[str] = []

    async def main() -> None:
        fd = open_list(listed)
        (tmp_path / "out").mkdir()
        folder_fd = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
        feed = a_feed(fd, folder_fd)
        send, receive = trio.open_memory_channel[feed_module.Work](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run, send, lambda: None)
            async with receive:
                async for item in receive:
                    handed.append(item.url)
        os.close(fd)
        os.close(folder_fd)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return handed


def test_hosts_take_turns_so_a_host_late_in_the_list_starts_at_once(tmp_path: Path) -> None:
    # Two URLs of a stalling host at the end of a list start with the first
    # ones, not when the list reaches them (the mix set of `make bench`). (The
    # list is one first batch of the reader's, so that the order does not
    # depend on when the reader's thread hands over its next.)
    many = [f"http://fast.example/{i}.jpg" for i in range(feed_module.FIRST_PARSE_BATCH - 2)]
    late = ["http://stall.example/a.jpg", "http://stall.example/b.jpg"]
    handed = hand_over_order(tmp_path, many + late)
    assert handed[:4] == [many[0], late[0], many[1], late[1]]
    assert sorted(handed) == sorted(many + late)
    assert [u for u in handed if "fast" in u] == many  # each host's own in list order


def test_past_the_read_ahead_later_hosts_wait_for_their_turn_in_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The turns are between the hosts of the first READ_AHEAD items queued: a
    # host met only further down waits until the list is read that far.
    monkeypatch.setattr(feed_module, "READ_AHEAD", 8)
    monkeypatch.setattr(feed_module, "FIRST_PARSE_BATCH", 8)
    many = [f"http://fast.example/{i}.jpg" for i in range(40)]
    handed = hand_over_order(tmp_path, [*many, "http://late.example/a.jpg"])
    # Batches of 8, 16, then 32 (the third holds it): it is queued only once
    # fewer than 8 of the first 24 are left, so 17 went before it at least.
    assert handed.index("http://late.example/a.jpg") >= 17


def test_a_host_with_room_is_not_kept_waiting_for_a_slow_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every queued host busy, and the reader slow to give its next batch (the
    # de-duplication moving to disk, say): a slot given back meanwhile is
    # used at once, not when the reader has caught up.
    async def slow_read(self: feed_module.Feed, batches: trio.MemorySendChannel[Any]) -> None:
        async with batches:
            await batches.send(
                [feed_module.Work(1, "http://busy.example/1.jpg", "1.jpg", None, "busy.example")]
            )
            await trio.sleep(10)
            await batches.send(
                [feed_module.Work(2, "http://free.example/2.jpg", "2.jpg", None, "free.example")]
            )

    monkeypatch.setattr(feed_module.Feed, "_read", slow_read)
    busy = {"busy.example"}
    handed: list[tuple[float, str]] = []

    async def main() -> None:
        room = trio.Event()

        async def wait_for_room() -> None:
            await room.wait()

        feed = a_feed(-1, -1, busy=lambda host: host in busy, room=wait_for_room)
        send, receive = trio.open_memory_channel[feed_module.Work](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run, send, lambda: None)
            await trio.sleep(1)
            busy.clear()
            room.set()
            async with receive:
                async for item in receive:
                    handed.append((trio.current_time(), item.url))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert handed == [(1.0, "http://busy.example/1.jpg"), (10.0, "http://free.example/2.jpg")]
