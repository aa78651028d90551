"""The real daemon, as a subprocess, with signals."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer, image_bytes

SEED = Path(__file__).parent / "data" / "cats.txt"


def seed_list(server: ImageServer) -> tuple[str, list[str]]:
    text = SEED.read_text().replace("https://cdn.pixabay.com", server.base)
    urls = [line for line in text.splitlines() if line.strip()]
    return text, urls


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".imgdl-tmp-")]


def test_seed_list_end_to_end(server: ImageServer, tmp_path: Path) -> None:
    text, urls = seed_list(server)
    assert len(urls) == 1183
    daemon = DaemonProcess(tmp_path)
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "cats.txt", text)
        finished = daemon.wait_event("job_finished", timeout=120)
        assert finished[0]["ok"] == 1183 and finished[0]["failed"] == 0
        assert len(daemon.events("download_ok")) == 1183
        folder = daemon.output / "cats"
        for url in urls:
            path = url[len(server.base) :]
            assert (folder / path.rsplit("/", 1)[-1]).read_bytes() == image_bytes(path)
        assert len(os.listdir(folder)) == 1183
        assert (daemon.inbox / "done" / "cats.txt").read_text() == text
        assert not (daemon.inbox / "failed" / "cats.txt").exists()
        assert os.listdir(daemon.inbox / "processing") == []

        requests = sum(server.counts.values())
        drop(daemon.inbox, "cats.txt", text)
        second = daemon.wait_event("job_finished", count=2)[1]
        assert (second["ok"], second["skipped"]) == (0, 1183)
        assert sum(server.counts.values()) == requests
    finally:
        code = daemon.stop()
    assert code == 0
    assert daemon.events()[-1]["event"] == "daemon_stopped"
    assert all({"timestamp", "level", "event"} <= e.keys() for e in daemon.events())


def test_list_written_slowly_in_place_is_one_job(server: ImageServer, tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "--settle", "0.6")
    try:
        daemon.wait_event("daemon_started")
        target = daemon.inbox / "slow.txt"
        with open(target, "w") as handle:
            for i in range(6):
                handle.write(f"{server.base}/img/slow/{i}.jpg\n")
                handle.flush()
                time.sleep(0.25)  # pauses shorter than --settle
        finished = daemon.wait_event("job_finished")
        assert finished[0]["ok"] == 6
        assert len(daemon.events("job_started")) == 1
    finally:
        daemon.stop_cleanly()


def test_lists_present_at_start_and_leftovers_are_taken(
    server: ImageServer, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "processing").mkdir(parents=True)
    (inbox / "early.txt").write_text(f"{server.base}/img/early.jpg\n")
    (inbox / "processing" / "left.txt").write_text(f"{server.base}/img/left.jpg\n")
    daemon = DaemonProcess(tmp_path)
    try:
        finished = daemon.wait_event("job_finished", count=2)
        assert sorted(e["job"] for e in finished) == ["early", "left"]
        assert daemon.events("job_resumed")[0]["job"] == "left"
    finally:
        daemon.stop_cleanly()


def test_sigterm_mid_job_exits_cleanly_and_resumes(server: ImageServer, tmp_path: Path) -> None:
    urls = [f"{server.base}/slow/400/{i}.jpg" for i in range(40)]
    daemon = DaemonProcess(tmp_path, "--concurrency", "4", "--grace", "0.1")
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "long.txt", "\n".join(urls) + "\n")
        daemon.wait_event("download_ok")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.proc.wait(10)
    finally:
        daemon.stop()
    assert code == 0
    assert time.monotonic() - started < 10
    kinds = [e["event"] for e in daemon.events()]
    assert "daemon_stopping" in kinds and kinds[-1] == "daemon_stopped"
    assert "job_finished" not in kinds
    # Its downloads outlasted the grace and were cancelled: the log still says
    # which job was left for the next run, and how far it got.
    (interrupted,) = daemon.events("job_interrupted")
    assert interrupted["job"] == "long" and interrupted["ok"] >= 1
    assert kinds.index("daemon_stopping") < kinds.index("job_interrupted")
    assert (daemon.inbox / "processing" / "long.txt").exists()
    assert os.listdir(daemon.inbox / "processing") == ["long.txt"]
    assert no_temp_files(daemon.output)
    done_before = {e["url"] for e in daemon.events("download_ok")}

    again = DaemonProcess(tmp_path, "--concurrency", "8", name="again")
    try:
        finished = again.wait_event("job_finished", timeout=60)
        assert finished[0]["ok"] + finished[0]["skipped"] == 40
        assert finished[0]["skipped"] >= len(done_before)
    finally:
        again.stop_cleanly()
    for url in done_before:
        assert server.counts[url[len(server.base) :]] == 1


def test_kill_9_then_restart_completes_byte_identical(server: ImageServer, tmp_path: Path) -> None:
    urls = [f"{server.base}/slow/150/k{i}.jpg" for i in range(60)]
    daemon = DaemonProcess(tmp_path, "--concurrency", "6")
    daemon.wait_event("daemon_started")
    drop(daemon.inbox, "kill.txt", "\n".join(urls) + "\n")
    daemon.wait_event("download_ok", count=10)
    daemon.kill()
    done_before = {e["url"] for e in daemon.events("download_ok")}

    again = DaemonProcess(tmp_path, "--concurrency", "6", name="again")
    try:
        finished = again.wait_event("job_finished", timeout=60)
        assert finished[0]["failed"] == 0
    finally:
        again.stop_cleanly()
    folder = again.output / "kill"
    assert sorted(os.listdir(folder)) == sorted(f"k{i}.jpg" for i in range(60))
    for url in urls:
        path = url[len(server.base) :]
        assert (folder / path.rsplit("/", 1)[-1]).read_bytes() == image_bytes(path)
        # finished before the kill: never asked again; others at most twice (in flight at the kill)
        assert server.counts[path] == 1 if url in done_before else server.counts[path] <= 2
    assert (again.inbox / "done" / "kill.txt").exists()


def test_two_daemons_share_one_inbox(server: ImageServer, tmp_path: Path) -> None:
    first = DaemonProcess(tmp_path, "--max-jobs", "2", name="first")
    second = DaemonProcess(tmp_path, "--max-jobs", "2", name="second")
    try:
        first.wait_event("daemon_started")
        second.wait_event("daemon_started")
        for n in range(20):
            urls = [f"{server.base}/slow/20/l{n}/{i}.jpg" for i in range(5)]
            drop(first.inbox, f"list{n:02}.txt", "\n".join(urls) + "\n")

        def all_done(_: object) -> bool:
            return len(first.events("job_finished")) + len(second.events("job_finished")) >= 20

        first.wait_for(all_done, timeout=90)
    finally:
        first.stop_cleanly()
        second.stop_cleanly()
    jobs = [e["job"] for e in first.events("job_finished") + second.events("job_finished")]
    assert sorted(jobs) == [f"list{n:02}" for n in range(20)]
    assert first.events("job_finished") and second.events("job_finished")  # both took a share
    assert len(server.counts) == 100 and set(server.counts.values()) == {1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "concurrency must be 1 to 1000"),
        (["--log-level", "loud"], "log-level must be one of"),
        (["--settle", "soon"], "settle 'soon' is not a number of seconds"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    daemon = DaemonProcess(tmp_path, *args)
    code = daemon.proc.wait(30)
    daemon.stop()
    err = daemon.stderr_path.read_text()
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
