"""Politeness on trio's MockClock, against real servers in the test's own run:
rate and minimum gap, a paced host beside a fast one, Retry-After pauses,
X-Robots-Tag opt-outs and bandwidth caps."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

import imgdl_watch.download.exchange as exchange_module
from imgdl_watch import errors as err
from imgdl_watch.download import body, filesink
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.hostrules import HostRule, HostTable
from imgdl_watch.job.job import Job
from tests.helpers import events, job_options, open_list, write_list
from tests.pacedserver import (
    PacedServer,
    download_all,
    no_fsync,  # noqa: F401 - a fixture, for every test here
    on_mock_clock,
    options,
)

pytestmark = pytest.mark.usefixtures("no_fsync")


def most_in_any_second(times: list[float]) -> int:
    """The most requests in any half-open window of one second."""
    times = sorted(times)
    return max(
        (sum(1 for t in times[i:] if t < start + 1) for i, start in enumerate(times)), default=0
    )


def paced_times(server: PacedServer, folder: Path, *, rate: float = 5.0) -> list[float]:
    """30 images from `server` under `--rate-per-host rate`: when the server read each."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            async with Fetcher(options(rate_per_host=rate)) as fetcher:
                urls = [f"{base}/img/{i}.jpg" for i in range(30)]
                done = await download_all(fetcher, urls, folder)
            nursery.cancel_scope.cancel()
        assert all(not isinstance(d, Exception) for d in done.values())

    on_mock_clock(main)
    times = server.times("/img/")
    assert len(times) == 30
    return times


def test_the_rate_is_honoured_on_the_servers_clock(tmp_path: Path) -> None:
    times = paced_times(PacedServer(), tmp_path / "out")
    assert most_in_any_second(times) == 5
    # A second's worth at once, then 5 a second: 30 requests over 5 seconds
    # (and the rate's 5% slack).
    assert 5.25 <= max(times) - min(times) < 5.5


def test_the_rate_holds_on_the_servers_clock_when_new_connections_come_late(
    tmp_path: Path,
) -> None:
    # The first burst opens its connections, and the server reads them 0.3 s
    # late (a handshake); the next burst, on kept connections, is read at
    # once. Counted from the turns, 10 requests fell in one of its seconds.
    times = paced_times(PacedServer(handshake_s=0.3), tmp_path / "out")
    assert most_in_any_second(times) == 5


def test_the_rate_holds_on_the_servers_clock_when_one_request_is_late_and_slow(
    tmp_path: Path,
) -> None:
    # The first connection is read 0.7 s late and answered 0.7 s after that:
    # the server sees that request at 0.7 s, and it is still out at 1.05 s,
    # when a window counted from the turns (or from the answers that came)
    # would let five more go at once. Those take 0.3 s each to answer.
    server = PacedServer(late_first_s=0.7, slow_after=5, slow_s=0.3)
    times = paced_times(server, tmp_path / "out")
    assert min(times) < 0.1 and max(times) < 10.0
    assert sorted(times)[4] == pytest.approx(0.7)  # the late one
    assert most_in_any_second(times) == 5


def test_a_stop_sends_nothing_that_waits_for_its_turn(tmp_path: Path) -> None:
    server = PacedServer()
    outcomes: dict[str, object] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            (tmp_path / "out").mkdir()
            fd = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
            async with Fetcher(options(rate_per_host=1.0)) as fetcher:

                async def one(i: int) -> None:
                    url = f"{base}/img/{i}.jpg"
                    try:
                        outcomes[url] = await fetcher.download(url, dir_fd=fd, name=f"{i}.jpg")
                    except err.Interrupted as exc:
                        outcomes[url] = exc

                async with trio.open_nursery() as downloads:
                    for i in range(6):
                        downloads.start_soon(one, i)
                    await trio.sleep(2.5)  # three went: at 0, 1.05 and 2.1 s
                    fetcher.stop()
                    stopped_at = trio.current_time()
                # The three that waited for their turn end at once, unsent.
                assert trio.current_time() - stopped_at < 0.01
            os.close(fd)
            nursery.cancel_scope.cancel()

    on_mock_clock(main)
    assert len(server.times("/img/")) == 3
    interrupted = [o for o in outcomes.values() if isinstance(o, err.Interrupted)]
    assert len(outcomes) == 6 and len(interrupted) == 3


def test_the_minimum_gap_holds_with_jitter(tmp_path: Path) -> None:
    server = PacedServer()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            fetcher = Fetcher(options(min_gap=1.0), rand=random.Random(16))
            async with fetcher:
                urls = [f"{base}/img/{i}.jpg" for i in range(12)]
                await download_all(fetcher, urls, tmp_path / "out")
            nursery.cancel_scope.cancel()

    on_mock_clock(main)
    gaps = [b - a for a, b in itertools.pairwise(sorted(server.times("/img/")))]
    assert len(gaps) == 11
    assert all(1.0 <= gap <= 1.5 + 0.01 for gap in gaps), gaps
    # Jitter: the gaps are not all alike.
    assert max(gaps) - min(gaps) > 0.1


def test_a_paced_host_does_not_slow_a_fast_one(tmp_path: Path) -> None:
    """Two global slots only: were a paced download to wait for its turn holding
    one, the fast host would be left one slot, and take twice as long."""
    paced, fast = PacedServer(), PacedServer()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            slow_base = await nursery.start(paced.serve, "127.0.0.2")
            fast_base = await nursery.start(fast.serve, "127.0.0.3")
            table = HostTable([HostRule("127.0.0.2", rate=0.5)])
            fetcher = Fetcher(options(concurrency=2, per_host=8, hosts=table))
            async with fetcher, trio.open_nursery() as downloads:
                slow_urls = [f"{slow_base}/img/{i}.jpg" for i in range(8)]
                downloads.start_soon(download_all, fetcher, slow_urls, tmp_path / "slow")
                while not paced.hits:  # the paced host is under way, then the fast one comes
                    await trio.sleep(0.001)
                started = trio.current_time()
                fast_urls = [f"{fast_base}/slow/100/{i}.jpg" for i in range(20)]
                await download_all(fetcher, fast_urls, tmp_path / "fast")
                fast_done = trio.current_time() - started
            nursery.cancel_scope.cancel()
        # 20 downloads of 100 ms on two slots: 1 s, and a slot lent to the
        # paced host for a moment every 2 s. (Two slots: 1 s; one: 2 s.)
        assert fast_done < 1.5, fast_done

    on_mock_clock(main)
    assert len(fast.times()) == 20
    gaps = [b - a for a, b in itertools.pairwise(sorted(paced.times()))]
    assert len(gaps) == 7 and all(gap >= 2.0 - 1e-9 for gap in gaps), gaps


def test_a_rate_of_0_in_the_table_exempts_its_host(tmp_path: Path) -> None:
    paced, exempt = PacedServer(), PacedServer()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            paced_base = await nursery.start(paced.serve, "127.0.0.2")
            exempt_base = await nursery.start(exempt.serve, "127.0.0.3")
            table = HostTable([HostRule("127.0.0.3", rate=0.0)])
            async with Fetcher(options(rate_per_host=2.0, hosts=table)) as fetcher:
                urls = [f"{paced_base}/img/{i}.jpg" for i in range(6)]
                urls += [f"{exempt_base}/img/{i}.jpg" for i in range(30)]
                await download_all(fetcher, urls, tmp_path / "out")
            nursery.cancel_scope.cancel()

    on_mock_clock(main)
    assert len(exempt.times()) == 30 and max(exempt.times()) - min(exempt.times()) < 0.2
    assert most_in_any_second(paced.times()) == 2
    assert max(paced.times()) - min(paced.times()) >= 2.0


def test_retry_after_pauses_the_whole_host(tmp_path: Path) -> None:
    server = PacedServer()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            async with Fetcher(options(per_host=2)) as fetcher:
                urls = [f"{base}/ra/4/first.jpg"] + [f"{base}/slow/500/{i}.jpg" for i in range(6)]
                with capture_logs() as logs:
                    done = await download_all(fetcher, urls, tmp_path / "out")
                assert all(not isinstance(d, Exception) for d in done.values())
            nursery.cancel_scope.cancel()
        paused = events(logs, "host_paused")
        assert [(e["host"], e["reason"], e["status"], e["pause_s"]) for e in paused] == [
            ("127.0.0.2", "retry_after", 429, 4.0)
        ]
        retry = events(logs, "download_retry")
        assert [(e["wait"], e["delay_s"]) for e in retry] == [("retry_after", 4.0)]

    on_mock_clock(main)
    hits = sorted(server.hits, key=lambda h: h.at)
    told = next(h.at for h in hits if h.path == "/ra/4/first.jpg")
    after = [h.at - told for h in hits if h.at > told]
    # Nothing reaches the host for 4 s; then the rest, the 429'd URL included.
    assert after and min(after) >= 4.0 - 1e-9, after
    assert server.counts["/ra/4/first.jpg"] == 2


def test_noai_is_opted_out_with_no_body_byte_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PacedServer()

    async def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the body of an opted-out answer was read")

    monkeypatch.setattr(exchange_module, "receive", never)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            async with Fetcher(options()) as fetcher:
                done = await download_all(fetcher, [f"{base}/noai/a.jpg"], tmp_path / "out")
                with trio.fail_after(5):
                    await server.noai_closed.wait()  # we hung up on a 1 GB body
            nursery.cancel_scope.cancel()
        (failure,) = done.values()
        assert isinstance(failure, err.OptedOut)
        assert failure.reason == "opted_out" and failure.attempts == 1
        assert fetcher.stats.peek("127.0.0.2").opt_outs == 1

    on_mock_clock(main)
    assert server.counts["/noai/a.jpg"] == 1
    assert os.listdir(tmp_path / "out") == []
    # What the kernel's buffers took before we hung up, not the gigabyte.
    assert server.body_bytes_sent < 64 * 1024**2


def test_ignore_opt_outs_reads_the_body(tmp_path: Path) -> None:
    server = PacedServer()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            async with Fetcher(options(ignore_opt_outs=True, max_bytes=1024**2)) as fetcher:
                done = await download_all(fetcher, [f"{base}/noai/a.jpg"], tmp_path / "out")
            nursery.cancel_scope.cancel()
        (failure,) = done.values()
        assert isinstance(failure, err.TooLarge)  # read, and stopped by the size cap

    on_mock_clock(main)


def bodies_read_at(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each body was whole, on trio's clock: before its file is published
    (whose fdatasync, in a thread, the mock clock may jump over)."""
    read_at: list[float] = []
    real_receive = body.receive

    async def receive(*args: Any, **kwargs: Any) -> Any:
        got = await real_receive(*args, **kwargs)
        read_at.append(trio.current_time())
        return got

    monkeypatch.setattr(exchange_module, "receive", receive)
    # The body stays in memory: no thread hop while it is read.
    monkeypatch.setattr(filesink, "SPILL_BYTES", 64 * 1024**2)
    return read_at


def test_a_bandwidth_cap_spreads_a_body_over_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 MB under 2 MB/s: about 5 s of the mock clock (accuracy on a real
    clock is the benchmark's business)."""
    read_at = bodies_read_at(monkeypatch)
    server = PacedServer()
    size = 10 * 1024**2
    started: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(server.serve, "127.0.0.2")
            async with Fetcher(options(max_rate=2 * 1024**2)) as fetcher:
                started.append(trio.current_time())
                done = await download_all(fetcher, [f"{base}/big/{size}/a.jpg"], tmp_path / "out")
            nursery.cancel_scope.cancel()
        (result,) = done.values()
        assert not isinstance(result, Exception), result

    on_mock_clock(main)
    took = read_at[0] - started[0]
    # The bucket's burst (a tenth of a second's worth) comes at once.
    assert 4.85 <= took <= 5.1, took
    assert (tmp_path / "out" / "0.jpg").stat().st_size == size


def test_a_host_rule_caps_its_host_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_at = bodies_read_at(monkeypatch)
    capped, free = PacedServer(), PacedServer()
    size = 4 * 1024**2
    started: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            capped_base = await nursery.start(capped.serve, "127.0.0.2")
            free_base = await nursery.start(free.serve, "127.0.0.3")
            table = HostTable([HostRule("127.0.0.2", max_rate=1024**2, per_host=1)])
            async with Fetcher(options(hosts=table)) as fetcher:
                started.append(trio.current_time())
                urls = [f"{capped_base}/big/{size}/a.jpg", f"{free_base}/big/{size}/b.jpg"]
                await download_all(fetcher, urls, tmp_path / "out")
                assert fetcher.hosts.ceiling_of("127.0.0.2") == 1
                assert fetcher.hosts.ceiling_of("127.0.0.3") == 8
            nursery.cancel_scope.cancel()

    on_mock_clock(main)
    free_took, capped_took = (t - started[0] for t in sorted(read_at))
    assert free_took < 0.2, free_took
    assert 3.85 <= capped_took <= 4.1, capped_took  # less the bucket's burst


def test_a_list_mixing_a_paced_host_with_a_fast_one_runs_the_fast_one_at_full_speed(
    tmp_path: Path,
) -> None:
    """One list, its URLs alternating between a host paced at 2/s and a fast
    one, with more of the paced host's than the job has workers (16): they
    wait aside, not in the workers, so the fast host's are not stuck behind."""
    paced, fast = PacedServer(), PacedServer()
    (tmp_path / "out").mkdir()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            paced_base = await nursery.start(paced.serve, "127.0.0.2")
            fast_base = await nursery.start(fast.serve, "127.0.0.3")
            lines = []
            for i in range(40):
                lines += [f"{paced_base}/img/{i}.jpg"] if i < 24 else []
                lines.append(f"{fast_base}/slow/50/{i}.jpg")
            listed = write_list(tmp_path / "mixed.txt", lines)
            table = HostTable([HostRule("127.0.0.2", rate=2.0)])
            fd = open_list(listed)
            try:
                async with Fetcher(options(concurrency=8, per_host=4, hosts=table)) as fetcher:
                    job = Job(
                        name="mixed",
                        list_fd=fd,
                        output=str(tmp_path / "out"),
                        fetcher=fetcher,
                        options=job_options(),
                    )
                    summary = await job.run()
            finally:
                os.close(fd)
            nursery.cancel_scope.cancel()
        assert summary.ok == 64

    on_mock_clock(main)
    start = min(paced.times() + fast.times())
    # 40 downloads of 50 ms on the slots the paced host leaves: about half a
    # second; stuck behind the paced host's 11 s, they would end near its end.
    assert max(fast.times()) - start < 2.0, max(fast.times()) - start
    assert max(paced.times()) - start > 11.0
