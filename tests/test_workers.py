"""Download workers (`--workers`): real worker processes, against a real server.

`test_fetcher` runs each of its tests with a worker as well; here is what
only workers do: share the slots with the fetcher's process, come back
when one dies or hangs, ignore the signals that are the daemon's to handle,
and step aside when they cannot start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from imgdl_watch import errors as err
from imgdl_watch.download import errands as e
from imgdl_watch.download import workers
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.filesink import SOURCE_XATTR, TEMP_PREFIX
from imgdl_watch.download.workers import Link, RemoteSink, WorkerLost, Workers
from imgdl_watch.naming import source_tag, wide_name
from tests.helpers import fetch_options
from tests.imageserver import ImageServer, image_bytes


def the_link(fetcher: Fetcher) -> Link:
    assert fetcher.workers is not None
    (link,) = fetcher.workers.links
    return link


def saved(out_fd: int, name: str) -> bytes:
    with open(f"/proc/self/fd/{out_fd}/{name}", "rb") as handle:
        return handle.read()


def leftovers(out_fd: int) -> list[str]:
    return [name for name in os.listdir(out_fd) if name.startswith(TEMP_PREFIX)]


async def until(condition: object, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.02)


async def test_the_worker_and_the_fetchers_process_share_the_slots(
    server: ImageServer, out_fd: int
) -> None:
    paths = [f"/img/share/{i}.jpg" for i in range(24)]
    async with Fetcher(fetch_options(workers=1, concurrency=4, per_host=4)) as fetcher:
        link = the_link(fetcher)
        assert link.ready

        async def one(path: str) -> None:
            await fetcher.download(server.base + path, dir_fd=out_fd, name=path.rsplit("/", 1)[1])

        async with trio.open_nursery() as nursery:
            for path in paths:
                nursery.start_soon(one, path)
    for path in paths:
        assert saved(out_fd, path.rsplit("/", 1)[1]) == image_bytes(path)
    # Half the slots are the worker's: each side ran some of the requests.
    assert 0 < link.served < len(paths)
    assert leftovers(out_fd) == []


async def test_a_redirect_and_a_refusal_through_the_worker(
    server: ImageServer, out_fd: int
) -> None:
    # One slot: the worker's (slot 0), so every request goes through it.
    async with Fetcher(fetch_options(workers=1, concurrency=1, retries=0)) as fetcher:
        got = await fetcher.download(server.base + "/redirect/2/r.jpg", dir_fd=out_fd, name="r.jpg")
        with pytest.raises(err.RefusedStatus) as refused:
            await fetcher.download(server.base + "/status/404/n.jpg", dir_fd=out_fd, name="n.jpg")
        link = the_link(fetcher)
    assert saved(out_fd, got.file) == image_bytes("/img/r.jpg")
    assert refused.value.status == 404 and refused.value.attempts == 1
    # The two redirects, the image and the 404: four hops, all the worker's.
    assert link.served == 4


async def test_an_opt_out_is_the_fetchers_to_record(server: ImageServer, out_fd: int) -> None:
    async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
        with pytest.raises(err.OptedOut):
            await fetcher.download(server.base + "/noai/x.jpg", dir_fd=out_fd, name="x.jpg")
        (state,) = fetcher.policy.states(1)
        assert the_link(fetcher).served == 1
    assert state.opt_outs == 1
    # The 64 MB body is not read: what went is what the sockets' buffers took
    # before the worker hung up (as in `test_polite_daemon`).
    assert server.noai_body_bytes < 16 * 1024**2


async def test_a_killed_worker_loses_nothing(server: ImageServer, out_fd: int) -> None:
    path = "/slow/1500/k.jpg"
    with capture_logs() as logs:
        async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
            link = the_link(fetcher)
            first = link.pid

            async def kill_it_mid_way() -> None:
                await trio.to_thread.run_sync(server.wait_for_requests, 1)
                os.kill(first, signal.SIGKILL)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_it_mid_way)
                got = await fetcher.download(server.base + path, dir_fd=out_fd, name="k.jpg")
            # A new worker takes its place.
            await until(lambda: link.ready and link.pid != first)
            after = server.base + "/img/after.jpg"
            again = await fetcher.download(after, dir_fd=out_fd, name="a.jpg")
    assert saved(out_fd, got.file) == image_bytes(path)
    assert saved(out_fd, again.file) == image_bytes("/img/after.jpg")
    # Sent again once the worker died: the file came from the second request.
    assert server.counts[path] == 2
    assert got.attempts == 1  # the lost worker's try is no attempt of the URL's
    assert leftovers(out_fd) == []
    assert any(entry["event"] == "worker_lost" for entry in logs)


async def test_a_hung_worker_is_killed_and_replaced(
    server: ImageServer, out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(workers, "HUNG_S", 0.5)
    monkeypatch.setattr(workers, "EXIT_S", 0.2)
    with capture_logs() as logs:
        async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
            link = the_link(fetcher)
            first = link.pid
            os.kill(first, signal.SIGSTOP)
            try:
                await until(lambda: link.ready and link.pid != first)
            finally:
                with contextlib.suppress(ProcessLookupError):  # killed, as it should be
                    os.kill(first, signal.SIGCONT)
            got = await fetcher.download(server.base + "/img/h.jpg", dir_fd=out_fd, name="h.jpg")
            served = link.served
    assert saved(out_fd, got.file) == image_bytes("/img/h.jpg")
    assert served == 1  # by the new worker
    hung = [entry for entry in logs if entry["event"] == "worker_hung"]
    assert hung and hung[0]["pid"] == first
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)


async def test_a_worker_ignores_the_signals_the_daemon_handles(
    server: ImageServer, out_fd: int
) -> None:
    # systemd's SIGTERM reaches the whole cgroup, a terminal's ^C the whole
    # process group: the daemon drains its downloads, its workers with it.
    async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
        link = the_link(fetcher)
        pid = link.pid
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(pid, signum)
        await trio.sleep(0.3)
        got = await fetcher.download(server.base + "/img/s.jpg", dir_fd=out_fd, name="s.jpg")
        assert link.ready and link.pid == pid and link.served == 1
    assert saved(out_fd, got.file) == image_bytes("/img/s.jpg")
    # Closing the fetcher ends the worker.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_cancelled_download_leaves_nothing_in_the_worker(
    server: ImageServer, out_fd: int
) -> None:
    async with Fetcher(fetch_options(workers=1, concurrency=1, retries=0)) as fetcher:
        with trio.move_on_after(0.5):
            await fetcher.download(server.base + "/stall/c.jpg", dir_fd=out_fd, name="c.jpg")
        server.release.set()
        got = await fetcher.download(server.base + "/img/n.jpg", dir_fd=out_fd, name="n.jpg")
        assert the_link(fetcher).served == 2
    assert sorted(os.listdir(out_fd)) == [got.file]


async def test_workers_that_cannot_start_leave_the_downloads_to_the_fetcher(
    server: ImageServer, out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    monkeypatch.setattr(workers, "RESTART_S", 0)
    with capture_logs() as logs:
        async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
            got = await fetcher.download(server.base + "/img/f.jpg", dir_fd=out_fd, name="f.jpg")
            await until(lambda: any(x["event"] == "workers_unavailable" for x in logs))
            assert not the_link(fetcher).ready
    assert saved(out_fd, got.file) == image_bytes("/img/f.jpg")
    starts = [entry for entry in logs if entry["event"] == "worker_not_started"]
    assert len(starts) == workers.START_FAILURES


def test_slots_are_shared_one_in_n_plus_one() -> None:
    pool = Workers(2, e.Setup(1.0, 1.0, block_private=False, durability=fetch_options().durability))
    for link in pool.links:
        link.ready = True
    assert [pool.for_slot(slot) for slot in range(6)] == [
        pool.links[0],
        pool.links[1],
        None,
        pool.links[0],
        pool.links[1],
        None,
    ]
    pool.links[1].ready = False  # starting again: its slots are served here meanwhile
    assert pool.for_slot(1) is None


def test_errors_cross_as_they_were_raised() -> None:
    filtered = err.Filtered(
        "too_small", "1x1", sha256="ab", width=1, height=1, size=9, content_type="image/png"
    )
    throttled = err.RetryableStatus(429, retry_after=3.0)
    for exc in (filtered, throttled, err.AlreadyThere("a.jpg"), err.DiskFull("no space")):
        back = e.unpack_error(e.pack_error(exc))
        assert type(back) is type(exc) and vars(back) == vars(exc) and str(back) == str(exc)
    assert isinstance(e.unpack_error(("NoSuchError", ("x",), {})), RuntimeError)


def test_fetch_with_a_worker_from_the_command_line(server: ImageServer, tmp_path: Path) -> None:
    paths = [f"/img/cli/{i}.jpg" for i in range(12)]
    listing = tmp_path / "cli.txt"
    listing.write_text("".join(server.base + p + "\n" for p in paths))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "imgdl_watch", "fetch", str(listing), "--output", str(out),
               "--workers", "1", "--concurrency", "4", "--log-format", "json",
               "--log-level", "debug"]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for path in paths:
        assert (out / "cli" / path.rsplit("/", 1)[1]).read_bytes() == image_bytes(path)
    # The worker did start (else the fetcher's process would have done it all).
    assert '"event":"worker_started"' in done.stdout
    assert '"event":"worker_not_started"' not in done.stdout


async def test_a_worker_that_dies_before_it_says_published(
    server: ImageServer, out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is in place, the answer lost with the worker: the download is
    # done, not downloaded again (and then "skipped" for its own file).
    publish = RemoteSink.publish

    async def then_lost(sink: RemoteSink, name: str, *, alias: str | None = None) -> str:
        await publish(sink, name, alias=alias)
        raise WorkerLost

    monkeypatch.setattr(RemoteSink, "publish", then_lost)
    async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
        got = await fetcher.download(server.base + "/img/p.jpg", dir_fd=out_fd, name="p.jpg")
        assert saved(out_fd, got.file) == image_bytes("/img/p.jpg")
        assert server.counts["/img/p.jpg"] == 1 and got.attempts == 1
        # The same under the alias it took, a look-alike's file of the same
        # size under its name: found there, not taken for the look-alike's.
        url = server.base + "/img/q.jpg"
        body = image_bytes("/img/q.jpg")
        fd = os.open("q.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=out_fd)
        os.write(fd, b"x" * len(body))
        os.setxattr(fd, SOURCE_XATTR, source_tag(server.base + "/img/other/q.jpg"))
        os.close(fd)
        got = await fetcher.download(url, dir_fd=out_fd, name="q.jpg")
    assert got.file == wide_name("q.jpg", url) and saved(out_fd, got.file) == body
    assert server.counts["/img/q.jpg"] == 1 and got.attempts == 1


async def test_a_worker_that_dies_with_the_body_unpublished(
    server: ImageServer, out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = RemoteSink.publish
    lost: list[str] = []

    async def lost_once(sink: RemoteSink, name: str, *, alias: str | None = None) -> str:
        if not lost:
            lost.append(name)
            sink.discard()
            raise WorkerLost
        return await publish(sink, name, alias=alias)

    monkeypatch.setattr(RemoteSink, "publish", lost_once)
    async with Fetcher(fetch_options(workers=1, concurrency=1, retries=0)) as fetcher:
        got = await fetcher.download(server.base + "/img/u.jpg", dir_fd=out_fd, name="u.jpg")
    assert saved(out_fd, got.file) == image_bytes("/img/u.jpg")
    # Downloaded again, whole, and both tries are counted, even with no retries.
    assert lost == ["u.jpg"] and server.counts["/img/u.jpg"] == 2 and got.attempts == 2
    assert leftovers(out_fd) == []


async def test_a_cancelled_download_takes_its_temporary_file_with_it(
    server: ImageServer, out_fd: int
) -> None:
    # /endless/ streams past filesink.SPILL_BYTES, so the worker writes a
    # temporary file as the body comes.
    async with Fetcher(fetch_options(workers=1, concurrency=1, max_bytes=1024**3)) as fetcher:
        with trio.move_on_after(10):
            async with trio.open_nursery() as nursery:

                async def cancel_once_written() -> None:
                    await until(lambda: leftovers(out_fd))
                    nursery.cancel_scope.cancel()

                nursery.start_soon(cancel_once_written)
                await fetcher.download(server.base + "/endless/e.jpg", dir_fd=out_fd, name="e.jpg")
        await until(lambda: not leftovers(out_fd))
        assert the_link(fetcher).ready
    assert os.listdir(out_fd) == []


async def test_a_worker_that_hangs_before_its_hello_is_given_up_on(
    server: ImageServer, out_fd: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mute = tmp_path / "mute-python"
    mute.write_text("#!/bin/sh\nexec sleep 60\n")
    mute.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(mute))
    monkeypatch.setattr(workers, "START_S", 0.2)
    monkeypatch.setattr(workers, "RESTART_S", 0)
    monkeypatch.setattr(workers, "EXIT_S", 0.1)
    with capture_logs() as logs:
        async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
            got = await fetcher.download(server.base + "/img/m.jpg", dir_fd=out_fd, name="m.jpg")
            await until(lambda: any(x["event"] == "workers_unavailable" for x in logs))
    assert saved(out_fd, got.file) == image_bytes("/img/m.jpg")
    starts = [entry for entry in logs if entry["event"] == "worker_not_started"]
    assert len(starts) == workers.START_FAILURES


async def test_a_worker_that_cannot_be_run_is_given_up_on(
    server: ImageServer, out_fd: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    monkeypatch.setattr(workers, "RESTART_S", 0)
    with capture_logs() as logs:
        async with Fetcher(fetch_options(workers=1, concurrency=1)) as fetcher:
            got = await fetcher.download(server.base + "/img/x.jpg", dir_fd=out_fd, name="x.jpg")
    assert saved(out_fd, got.file) == image_bytes("/img/x.jpg")
    starts = [entry for entry in logs if entry["event"] == "worker_not_started"]
    assert len(starts) == workers.START_FAILURES and "no-such-python" in starts[0]["detail"]
    assert any(entry["event"] == "workers_unavailable" for entry in logs)


def test_a_workers_process_imports_no_command_line_tool() -> None:
    # httpx imports click, pygments and rich when click is installed (Apprise
    # brings it): ~5 MB a worker, for a tool it never runs.
    tools = "{'click', 'rich', 'pygments', 'structlog'}"
    entry = "imgdl_watch.download.workermain"
    probe = f"import sys, {entry}; print(sorted({tools} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_auto_is_cores_less_one() -> None:
    # For fetch, at most that: only the workers it can fork (test_prefork).
    from imgdl_watch import config

    cores = len(os.sched_getaffinity(0))
    assert config.fetch_options(config.defaults("run")).workers == max(0, cores - 1)
    assert config.fetch_options(config.defaults("fetch")).workers == max(0, cores - 1)
    asked = config.resolve("fetch", {"workers": "2"}, env={}, config_path=None)
    assert config.fetch_options(asked).workers == 2
