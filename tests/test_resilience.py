"""Issue #4: disks that fill, floods of lists, fairness, signals, vanishing folders."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs
from structlog.typing import EventDict

import imgdl_watch.download.filesink as filesink
import imgdl_watch.job.report as report_module
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.retrypolicy import Backoff
from imgdl_watch.job.job import Job
from imgdl_watch.job.listformat import ListFormat
from imgdl_watch.job.report import ReportPaths
from imgdl_watch.service.events import Event
from imgdl_watch.service.jobs import Jobs
from tests.daemonproc import DaemonProcess, drop
from tests.helpers import (
    EventLog,
    events,
    fetch_options,
    fill,
    job_options,
    open_list,
    watching_logs,
    write_list,
)
from tests.imageserver import ImageServer

FAST = fetch_options(retries=1, backoff=Backoff(base_s=0.001, cap_s=0.002))


async def run_job(list_path: Path, output: Path) -> tuple[Job, list[EventDict]]:
    fd = open_list(list_path)
    try:
        async with Fetcher(FAST) as fetcher:
            job = Job(
                name="j",
                list_fd=fd,
                output=str(output),
                fetcher=fetcher,
                options=job_options(),
                workers=4,
            )
            with capture_logs() as logs:
                await job.run()
    finally:
        os.close(fd)
    return job, logs


async def test_enospc_on_a_real_full_disk(
    server: ImageServer, tmp_path: Path, tiny_disk: Path
) -> None:
    urls = [f"{server.base}/img/full/{i}.jpg" for i in range(12)]
    job, logs = await run_job(write_list(tmp_path / "j.txt", urls), tiny_disk)
    summary = job.summary
    assert summary.complete and summary.failed > 0 and summary.ok + summary.failed == 12
    assert {e["reason"] for e in events(logs, "download_failed")} == {"disk_full"}
    # no temporary file is left behind on the full disk
    assert not [n for n in os.listdir(tiny_disk / "j") if n.startswith(filesink.TEMP_PREFIX)]


async def test_enospc_injected(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdatasync", no_space)
    urls = [f"{server.base}/img/inj/{i}.jpg" for i in range(3)]
    job, logs = await run_job(write_list(tmp_path / "j.txt", urls), tmp_path / "out")
    assert job.summary.failed == 3
    assert {e["reason"] for e in events(logs, "download_failed")} == {"disk_full"}
    assert os.listdir(tmp_path / "out" / "j") == []


async def test_a_report_that_cannot_be_written_stops_its_job_with_inbox_error(
    server: ImageServer, tmp_path: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report lives in the inbox. Its disk filled while the job ran: the
    # error used to reach the daemon inside the job's ExceptionGroup, which
    # made it a "crash" that sent the list to failed/.
    monkeypatch.setattr(report_module, "BUFFER_BYTES", 512)
    fill(tiny_disk)
    paths = ReportPaths(str(tiny_disk / "r.part"), str(tiny_disk / "f.part"))
    # 150 lines: text passes to the buffer 8 KB at a time.
    urls = [f"{server.base}/img/rep/{i}.jpg" for i in range(150)]
    fd = open_list(write_list(tmp_path / "j.txt", urls))
    try:
        async with Fetcher(FAST) as fetcher:
            job = Job(
                name="j",
                list_fd=fd,
                output=str(tmp_path),
                fetcher=fetcher,
                options=job_options(),
                report=paths,
            )
            with capture_logs() as logs:
                summary = await job.run()
    finally:
        os.close(fd)
    (failed,) = events(logs, "job_failed")
    assert failed["reason"] == "inbox_error" and summary.failure == "inbox_error"
    assert os.strerror(errno.ENOSPC) in failed["detail"]
    assert not summary.complete and 0 < summary.ok < 150  # it stopped early
    # Its part files are gone, though closing them raised ENOSPC again.
    assert not os.path.exists(paths.report) and not os.path.exists(paths.failed)
    assert not [n for n in os.listdir(tmp_path / "j") if n.startswith(filesink.TEMP_PREFIX)]


def test_a_full_inbox_disk_holds_its_job_back_until_there_is_room(
    server: ImageServer, tmp_path: Path, tiny_disk: Path
) -> None:
    # The job's images are saved, but its report does not fit in the inbox.
    # The daemon used to crash here (ENOSPC again while discarding the report).
    inbox = tiny_disk / "inbox"
    # The hooks hear each failure with when it is tried again, then the end.
    heard = tmp_path / "heard.jsonl"
    (tmp_path / "hook.py").write_text(
        "import json, os, sys\n"
        "event = json.loads(sys.stdin.read())\n"
        "event['env_retry_s'] = os.environ.get('IMGDL_RETRY_S')\n"
        f"open({str(heard)!r}, 'a').write(json.dumps(event) + '\\n')\n"
    )
    hook = f"{sys.executable} {tmp_path / 'hook.py'}"
    daemon = DaemonProcess(
        tmp_path,
        *("--inbox", str(inbox), "--rescan-interval", "0.2"),
        *("--on-failed", hook, "--on-finished", hook),
    )
    urls = [f"{server.base}/img/roomless/{i}.jpg" for i in range(30)]
    try:
        daemon.wait_event("daemon_started")
        (inbox / ".l.part").write_text("".join(u + "\n" for u in urls))
        filler = fill(tiny_disk)
        os.rename(inbox / ".l.part", inbox / "l.txt")
        failed = daemon.wait_event("job_failed", count=3)
        assert {e["reason"] for e in failed} == {"inbox_error"}
        assert "No space left on device" in failed[0]["detail"]
        # Held back twice as long each time, not re-run at every rescan.
        assert [e["retry_s"] for e in failed[:3]] == [0.2, 0.4, 0.8]
        assert os.listdir(inbox / "processing")[0] == "l.txt"
        filler.unlink()
        daemon.wait_event("job_finished")
        daemon.wait_event("hook_finished", count=len(daemon.events("job_failed")) + 1)
        assert daemon.proc.poll() is None
    finally:
        daemon.stop_cleanly()
    *retried, finished = [json.loads(line) for line in heard.read_text().splitlines()]
    assert finished["event"] == "job_finished" and "retry_s" not in finished
    assert finished["env_retry_s"] is None
    assert [e["retry_s"] for e in retried] == [e["retry_s"] for e in daemon.events("job_failed")]
    for event in retried:
        assert (event["event"], event["reason"]) == ("job_failed", "inbox_error")
        assert "No space left on device" in event["detail"]
        assert float(event["env_retry_s"]) == event["retry_s"] > 0
    assert len(daemon.events("download_ok")) == 30  # each image fetched once
    assert sorted(os.listdir(inbox / "done")) == ["l.report.jsonl", "l.txt"]
    report = (inbox / "done" / "l.report.jsonl").read_text().splitlines()
    assert len(report) == 30
    assert len(os.listdir(daemon.output / "l")) == 30


async def test_min_free_holds_downloads_until_stopped(server: ImageServer, tmp_path: Path) -> None:
    list_path = write_list(
        tmp_path / "j.txt", [f"{server.base}/img/free/{i}.jpg" for i in range(3)]
    )
    fd = open_list(list_path)
    async with Fetcher(FAST) as fetcher:
        job = Job(
            name="j",
            list_fd=fd,
            output=str(tmp_path),
            fetcher=fetcher,
            workers=2,
            options=job_options(min_free=1 << 62),
        )
        with watching_logs() as log:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(job.run)
                await log.wait_for("disk_low", timeout=5)
                fetcher.stopping.set()
    os.close(fd)
    assert not job.summary.complete
    assert sum(server.counts.values()) == 0


async def test_short_list_is_not_starved_behind_a_huge_one(
    server: ImageServer, tmp_path: Path
) -> None:
    big = write_list(
        tmp_path / "big.txt", [f"{server.base}/slow/40/big/{i}.jpg" for i in range(160)]
    )
    small = write_list(
        tmp_path / "small.txt", [f"{server.base}/slow/40/small/{i}.jpg" for i in range(8)]
    )
    big_fd, small_fd = open_list(big), open_list(small)
    progress_when_small_done = -1
    async with Fetcher(fetch_options(concurrency=4, per_host=4)) as fetcher:
        big_job = Job(
            name="big",
            list_fd=big_fd,
            output=str(tmp_path),
            fetcher=fetcher,
            options=job_options(),
            workers=4,
        )
        small_job = Job(
            name="small",
            list_fd=small_fd,
            output=str(tmp_path),
            fetcher=fetcher,
            options=job_options(),
            workers=4,
        )

        async def run_small(log: EventLog) -> None:
            nonlocal progress_when_small_done
            await log.wait_for("download_ok", 8, job="big")  # the big one is well under way
            await small_job.run()
            progress_when_small_done = big_job.summary.ok

        with watching_logs() as log:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(big_job.run)
                nursery.start_soon(run_small, log)
    os.close(big_fd)
    os.close(small_fd)
    assert small_job.summary.ok == 8 and big_job.summary.ok == 160
    # with a FIFO global limiter the small list gets half the slots: it ends
    # long before the big one, not after it
    assert progress_when_small_done < 60


def test_flood_of_lists_respects_max_jobs(server: ImageServer, tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "--max-jobs", "3", "--concurrency", "8")
    count = 300
    peak_fds = 0
    try:
        daemon.wait_event("daemon_started")
        staging = tmp_path / "staging"
        staging.mkdir()
        for n in range(count):
            write_list(
                staging / f"f{n:03}.txt", [f"{server.base}/img/flood/{n}/{i}.jpg" for i in range(3)]
            )
        for n in range(count):
            os.rename(staging / f"f{n:03}.txt", daemon.inbox / f"f{n:03}.txt")
        deadline = time.monotonic() + 120
        while len(daemon.events("job_finished")) < count:
            assert time.monotonic() < deadline, "flood did not finish"
            peak_fds = max(peak_fds, len(os.listdir(f"/proc/{daemon.proc.pid}/fd")))
            time.sleep(0.05)
    finally:
        daemon.stop_cleanly()
    running = peak = 0
    for event in daemon.events():
        if event["event"] == "job_started":
            running += 1
            peak = max(peak, running)
        elif event["event"] in ("job_finished", "job_interrupted", "job_failed"):
            running -= 1
    assert peak == 3
    assert sorted(e["job"] for e in daemon.events("job_finished")) == [
        f"f{n:03}" for n in range(count)
    ]
    assert len(server.counts) == count * 3 and set(server.counts.values()) == {1}
    assert peak_fds < 150  # bounded by max-jobs and concurrency, not by the number of lists


def test_second_signal_stops_at_once(server: ImageServer, tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "--grace", "60", "--concurrency", "4")
    daemon.wait_event("daemon_started")
    drop(
        daemon.inbox,
        "slow.txt",
        "\n".join(f"{server.base}/slow/20000/{i}.jpg" for i in range(8)) + "\n",
    )
    daemon.wait_for(lambda _: len(server.counts) >= 4, timeout=20)
    daemon.signal(signal.SIGINT)
    daemon.wait_event("daemon_stopping")
    # Within its grace, the daemon says it is stopping: `status` said
    # "running", with its jobs' ETAs, until the end.
    status = [sys.executable, "-m", "imgdl_watch", "status", "--inbox", str(daemon.inbox)]
    shown = subprocess.run([*status, "--json"], capture_output=True, text=True, timeout=30)
    (mine,) = json.loads(shown.stdout)["daemons"]
    assert (mine["state"], mine["alive"]) == ("stopping", True)
    text = subprocess.run(status, capture_output=True, text=True, timeout=30).stdout
    assert text.startswith(f"daemon: stopping (pid {daemon.proc.pid} on ")
    started = time.monotonic()
    daemon.signal(signal.SIGINT)
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - started < 3
    kinds = [e["event"] for e in daemon.events()]
    assert "daemon_stop_now" in kinds and kinds[-1] == "daemon_stopped"
    assert (daemon.inbox / "processing" / "slow.txt").exists()
    assert not [p for p in daemon.output.rglob("*") if p.name.startswith(filesink.TEMP_PREFIX)]
    daemon.stop()


def test_deleted_inbox_and_output_are_recreated(server: ImageServer, tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    try:
        daemon.wait_event("daemon_started")
        # The daemon keeps writing its status file into the inbox, so a
        # deletion can race a new file in and fail on a folder not empty:
        # delete until both are gone, as a user would repeat `rm -rf`.
        for _ in range(50):
            subprocess.run(["rm", "-rf", str(daemon.inbox), str(daemon.output)], check=False)
            if not daemon.inbox.exists() and not daemon.output.exists():
                break
        else:
            raise AssertionError("could not delete the inbox and output folders")
        daemon.wait_event("inbox_missing", timeout=20)
        drop(daemon.inbox, "back.txt", f"{server.base}/img/back.jpg\n")
        finished = daemon.wait_event("job_finished", timeout=20)
        assert finished[0]["ok"] == 1
        assert (daemon.output / "back" / "back.jpg").exists()
        assert daemon.proc.poll() is None
    finally:
        daemon.stop_cleanly()


class _FullFailed:
    """A job's end whose failed/ is full: the list's own failure, then its
    move to failed/ fails too, and it stays to be tried again."""

    def __init__(self) -> None:
        self.detail = ""
        self.report = None

    async def publish(self, summary: object) -> None:  # pragma: no cover - not reached
        raise AssertionError(summary)

    async def give_up(self, error: Exception) -> None:
        self.detail = str(error)  # as the daemon's end does, before the move
        raise OSError(errno.ENOSPC, "No space left on device", "failed")

    def retry_in(self) -> float:
        return 0.4


async def test_a_failure_whose_move_fails_tells_the_hooks_the_moves_detail(
    tmp_path: Path,
) -> None:
    listed = tmp_path / "cats.csv"
    listed.write_text("title,other\nx,y\n")  # no URL column: bad_header
    fd = open_list(listed)
    end = _FullFailed()
    try:
        async with Fetcher(FAST) as fetcher:
            job = Job(
                name="cats", list_fd=fd, output=str(tmp_path / "out"), fetcher=fetcher,
                options=job_options(), list_format=ListFormat.of("cats.csv"),
            )  # fmt: skip
            summary = await job.run(end)
    finally:
        os.close(fd)
    heard: list[Event] = []
    jobs = Jobs.__new__(Jobs)
    jobs._announce = heard.append
    jobs._announce_end("cats", summary, end, "/o/cats")  # type: ignore[arg-type]
    [event] = heard
    assert (event.fields["reason"], event.fields["retry_s"]) == ("inbox_error", 0.4)
    assert "No space left on device" in event.fields["detail"]
