"""Issue #7: progress events, `status`, metrics, and `fetch` at a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from imgdl_watch.job.progress import RATE_WINDOW_S, JobSummary, RateMeter, report_progress
from imgdl_watch.service.status import collect
from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer


def test_progress_cadence_and_fields_on_a_fake_clock() -> None:
    summary = JobSummary("cats", found=100)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(report_progress, summary, 5.0)
            await trio.sleep(2.5)
            summary.ok, summary.bytes = 40, 4_000_000
            await trio.sleep(5.0)  # t = 7.5: the first event (t=5) is out
            summary.ok, summary.failed, summary.listed, summary.bytes = 80, 10, True, 8_000_000
            await trio.sleep(5.0)  # t = 12.5: the second (t=10) is out
            nursery.cancel_scope.cancel()

    with capture_logs() as logs:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    events = [e for e in logs if e["event"] == "job_progress"]
    assert len(events) == 2  # every 5 s, not once per image
    first, second = events
    assert (first["done"], first["total"], first["rate_img_s"], first["eta_s"]) == (
        40,
        100,
        8.0,
        None,
    )
    assert first["rate_bytes_s"] == 800_000
    assert (second["done"], second["failed"], second["rate_img_s"]) == (80, 10, 10.0)
    assert second["eta_s"] == 1.0  # 10 left at 10 img/s, now that the list is read


def test_a_paced_jobs_rate_holds_still_when_sampled_every_second() -> None:
    # A host paced at 5/s answers in bursts: 5 images just after each whole
    # second, none in between. Sampled every second (the status file's
    # cadence) half a second after the burst or just before it, the rate is
    # 5/s once the window is full, never 0 nor 10.
    summary = JobSummary("paced", found=1000, listed=True)
    meter = RateMeter(summary, 0.0)
    rates = []
    for tick in range(1, 21):
        summary.ok = 5 * tick  # the burst at `tick - 1 + 0.1`, all of it in
        now = tick + (0.5 if tick % 2 else 0.95)
        rates.append(meter.sample(now).rate_img_s)
    steady = rates[int(RATE_WINDOW_S) + 1 :]
    assert steady and all(4.0 <= rate <= 6.0 for rate in steady), rates


def test_a_meter_sampled_less_often_than_its_window_measures_since_its_last_look() -> None:
    summary = JobSummary("slow", found=100)
    meter = RateMeter(summary, 0.0, window_s=5.0)
    summary.ok = 50
    assert meter.sample(10.0).rate_img_s == 5.0
    summary.ok = 60
    assert meter.sample(20.0).rate_img_s == 1.0  # the last 10 s only, not since 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(inbox: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgdl_watch", "status", "--inbox", str(inbox), *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def wait_for_status(
    inbox: Path, ready: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> None:
    """Until the daemons' status files say what `ready` wants: they are
    rewritten every second, so a test waits for their content, not a second."""
    deadline = time.monotonic() + timeout
    while not ready(report := collect(str(inbox))):
        assert time.monotonic() < deadline, report
        time.sleep(0.05)


def test_status_and_metrics_of_a_running_daemon(server: ImageServer, tmp_path: Path) -> None:
    port = free_port()
    daemon = DaemonProcess(
        tmp_path, "--metrics-port", str(port), "--concurrency", "2", "--max-jobs", "1"
    )
    try:
        daemon.wait_event("daemon_started")
        drop(
            daemon.inbox,
            "long.txt",
            "".join(f"{server.base}/slow/300/{i}.jpg\n" for i in range(40)),
        )
        daemon.wait_event("download_ok", count=4)
        drop(daemon.inbox, "next.txt", f"{server.base}/img/next.jpg\n")  # waits: max-jobs 1
        wait_for_status(daemon.inbox, lambda r: bool(r["running"]) and r["queued"] == ["next.txt"])

        report = json.loads(status(daemon.inbox, "--json").stdout)
        assert report["daemon_alive"] is True
        running = report["running"]
        assert [j["job"] for j in running] == ["long"]
        assert running[0]["total"] == 40 and 4 <= running[0]["done"] < 40
        assert {"rate_img_s", "rate_bytes_s", "eta_s", "bytes", "failed"} <= running[0].keys()
        assert report["queued"] == ["next.txt"]

        text = status(daemon.inbox)
        assert text.returncode == 0
        assert (
            "daemon: running" in text.stdout
            and "long:" in text.stdout
            and "next.txt" in text.stdout
        )

        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        for name in (
            'imgdl_downloads_total{result="ok"}',
            "imgdl_download_bytes_total",
            "imgdl_download_duration_seconds_bucket",
            "imgdl_jobs_running 1.0",
            "imgdl_downloads_in_flight",
            "imgdl_lists_queued",
        ):
            assert name in scraped, name
        daemon.wait_event("job_finished", count=2, timeout=60)
    finally:
        daemon.stop_cleanly()
    after = status(daemon.inbox, "--json")
    report = json.loads(after.stdout)
    assert after.returncode == 0
    assert report["daemon_alive"] is False
    assert sorted(j["job"] for j in report["recent"]) == ["long", "next"]
    assert "no daemon is running" in status(daemon.inbox).stdout


def test_status_says_when_a_daemon_has_fewer_workers_ready_than_asked() -> None:
    from imgdl_watch.service.status import render

    def report(ready: int) -> dict[str, Any]:
        daemon = {"pid": 7, "host": "vm", "state": "running", "alive": True,
                  "workers": {"ready": ready, "count": 2}}  # fmt: skip
        return {"inbox": "/in", "daemons": [daemon], "running": [], "queued": [], "recent": []}

    lines = render(report(1)).splitlines()
    assert lines[:2] == [
        "daemon: running (pid 7 on vm) on /in",
        "  pid 7: 1 of 2 download workers ready; the others' downloads run in the daemon's"
        " own process (see worker_lost and workers_unavailable in its log)",
    ]
    assert "download workers" not in render(report(2))


def test_status_tells_finished_lists_of_one_stem_apart_by_their_reports() -> None:
    from imgdl_watch.service.status import render

    def finished(job: str, report: str) -> dict[str, Any]:
        return {"job": job, "finished_at": "T", "ok": 1, "failed": 0, "skipped": 0,
                "invalid": 0, "elapsed_s": 1.0, "report": report}  # fmt: skip

    recent = [
        finished("pair", "pair.1.report.jsonl"),
        finished("pair", "pair.report.jsonl"),
        finished("art/cats", "art/cats.report.jsonl"),
    ]
    report = {"inbox": "/in", "daemons": [], "running": [], "queued": [], "recent": recent}
    lines = render(report).splitlines()
    assert lines[-3:] == [
        "  pair (pair.1.report.jsonl) at T: 1 ok, 0 failed, 0 skipped, 0 invalid (1.0 s)",
        "  pair at T: 1 ok, 0 failed, 0 skipped, 0 invalid (1.0 s)",
        "  art/cats at T: 1 ok, 0 failed, 0 skipped, 0 invalid (1.0 s)",
    ]


def test_a_hosts_limit_lowered_below_what_is_in_flight_is_said_so() -> None:
    from imgdl_watch.service.status import render

    host = {"host": "h.example", "in_flight": 6, "limit": 4, "ceiling": 8, "waiting": 0,
            "req_s": 1.0, "rate": None, "min_gap_s": 0, "paused_s": 0, "paused_for_s": 0,
            "opt_outs": 0}  # fmt: skip
    report = {"inbox": "/in", "daemons": [], "running": [], "queued": [], "recent": []}
    text = render({**report, "hosts": [host]})
    # It said "6/4 in flight (ceiling 8)".
    assert "  h.example: 6 in flight, over its limit of 4 (lowered) (ceiling 8), 1.0 req/s" in (
        text.splitlines()
    )


def test_status_without_any_daemon(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    result = status(tmp_path / "inbox")
    assert result.returncode == 0
    assert "no daemon is running" in result.stdout
    assert "unfinished" not in result.stdout


def test_status_shows_the_jobs_left_unfinished_in_processing(tmp_path: Path) -> None:
    # A half-done job left by a stopped daemon was nowhere in `status`.
    inbox = tmp_path / "inbox"
    (inbox / "processing").mkdir(parents=True)
    (inbox / "processing" / "cats.txt").write_text("http://x/a.jpg\n")
    (inbox / "processing" / ".cats.report.part").write_text("")
    (inbox / "art" / "processing").mkdir(parents=True)
    (inbox / "art" / "processing" / "dogs.csv").write_text("url\nhttp://x/a.jpg\n")
    config = tmp_path / "config.toml"
    config.write_text("[category.art]\n")
    report = json.loads(status(inbox, "--json", "--config", str(config)).stdout)
    assert report["unfinished"] == ["art/processing/dogs.csv", "processing/cats.txt"]
    text = status(inbox, "--config", str(config)).stdout
    assert "unfinished jobs, not running now (a daemon resumes them): 2" in text
    assert "  processing/cats.txt" in text.splitlines()


@pytest.mark.parametrize("args", [(), ("--json",)], ids=["text", "json"])
def test_status_into_a_pipe_whose_reader_is_gone_is_no_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    # `imgdl-watch status | head -1`, with head gone before status writes.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "imgdl_watch", "status", "--inbox", str(inbox), *args],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    "planted",
    [
        "[]",
        "3",
        '{"state": "running", "host": "%(host)s", "pid": "not a pid"}',
        '{"state": "running", "host": "%(host)s"}',
        '{"recent": [3, {"job": "x"}, {"job": "y", "finished_at": 7}]}',
        '{"state": "running", "host": "%(host)s", "pid": null}',
        '{"state": "running", "host": "%(host)s", "pid": 99999999999999999999}',
        '{"recent": [{"finished_at": "9999"}, {"job": "x", "finished_at": "9999"}]}',
        # "alive" (this test's own pid), with its lists of another shape
        '{"state": "running", "host": "%(host)s", "pid": %(pid)d, "running": 3, "hosts": [1]}',
        '{"state": "running", "host": "%(host)s", "pid": %(pid)d, "running": [{}], "hosts": [{}]}',
    ],
)
def test_status_passes_over_a_status_file_that_is_not_a_daemons(
    tmp_path: Path, planted: str
) -> None:
    # A status file is JSON that a daemon wrote; one that is JSON of another
    # shape (a hand edit, another program) is passed over, as a broken one is.
    inbox = tmp_path / "inbox"
    state = inbox / ".imgdl-watch"
    state.mkdir(parents=True)
    fields = {"host": socket.gethostname(), "pid": os.getpid()}
    (state / "status-planted.json").write_text(planted % fields)
    for args in ((), ("--json",)):
        result = status(inbox, *args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    if '"running": [{}]' in planted or '"finished_at": "9999"' in planted:
        assert "(a record this version cannot read)" in status(inbox).stdout


def test_status_of_a_mistyped_inbox_says_so(tmp_path: Path) -> None:
    result = status(tmp_path / "nothing-here")
    assert result.returncode == 2
    missing = tmp_path / "nothing-here"
    assert result.stderr.strip() == (
        f"imgdl-watch: error: no inbox at {missing}: give the daemon's --inbox DIR"
    )


def test_throttled_hosts_are_counted(server: ImageServer, tmp_path: Path) -> None:
    port = free_port()
    daemon = DaemonProcess(tmp_path, "--metrics-port", str(port))
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "busy.txt", f"{server.base}/flaky/2/429/a.jpg?ra=0\n")
        daemon.wait_event("job_finished")
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
    finally:
        daemon.stop_cleanly()
    assert 'imgdl_host_throttled_total{host="127.0.0.1",status="429"} 2.0' in scraped


def test_fetch_at_a_terminal_shows_a_bar_and_a_summary(server: ImageServer, tmp_path: Path) -> None:
    (tmp_path / "tty.txt").write_text(
        "".join(f"{server.base}/img/t{i}.jpg\n" for i in range(30))
        + f"{server.base}/status/404/x.jpg\n"
    )
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgdl_watch", "fetch", "tty.txt", "--retries", "0"],
        cwd=tmp_path, stdin=child, stdout=child, stderr=child, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    os.close(child)
    output = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    code = proc.wait(30)
    os.close(main)
    text = output.decode(errors="replace")
    assert code == 1
    assert "Fetched 30 images" in text and "1 failed" in text
    assert "30/31" in text or "31/31" in text  # the bar counted them
    assert "download_failed" in text  # warnings above the bar
    assert "download_ok" not in text  # not one line per image at a terminal
    assert "Traceback" not in text


def test_the_summary_counts_in_words_and_names_repeated_lines() -> None:
    from imgdl_watch.cli.terminal import summary_paragraph
    from imgdl_watch.job.progress import JobSummary

    one = JobSummary("cats", ok=1, skipped=1, duplicates=2, bytes=2_000_000)
    text = summary_paragraph([one], "out")
    assert text.startswith("Fetched 1 image (2.0 MB) in ")
    assert "; 1 was already there. 2 lines repeated a URL of the list, fetched once." in text
    many = summary_paragraph([JobSummary("dogs", ok=3, skipped=2)], "out")
    assert "Fetched 3 images" in many and "2 were already there." in many
    assert "repeated" not in many


def test_a_new_daemon_adopts_the_history_of_dead_ones(server: ImageServer, tmp_path: Path) -> None:
    first = DaemonProcess(tmp_path, name="first")
    try:
        first.wait_event("daemon_started")
        drop(first.inbox, "old.txt", f"{server.base}/img/old.jpg\n")
        first.wait_event("job_finished")
    finally:
        first.stop_cleanly()
    second = DaemonProcess(tmp_path, name="second")
    try:
        second.wait_event("daemon_started")
        wait_for_status(second.inbox, lambda r: r["daemon_alive"] and bool(r["recent"]))
        report = json.loads(status(second.inbox, "--json").stdout)
        state_files = [n for n in os.listdir(second.inbox / ".imgdl-watch") if n != "locks"]
    finally:
        second.stop_cleanly()
    assert report["daemon_alive"] is True
    assert [j["job"] for j in report["recent"]] == ["old"]
    assert len(state_files) == 1  # the dead daemon's file was taken over, not kept


def test_status_that_cannot_be_written_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "imgdl_watch", "status", "--inbox", str(tmp_path / "inbox")],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == "imgdl-watch: error: cannot write the status: No space left on device\n"
