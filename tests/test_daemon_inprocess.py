"""The daemon's task tree in-process, with an injected change source."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import imgdl_watch.job.job as job_module
from imgdl_watch.config import resolve
from imgdl_watch.job import listformat
from imgdl_watch.job.progress import JobSummary
from imgdl_watch.service.daemon import Daemon
from imgdl_watch.service.events import Event
from tests.helpers import events, watching_logs
from tests.imageserver import ImageServer


async def quiet_source(folder: str, stop: trio.Event) -> AsyncIterator[object]:
    """No events at all: the daemon must find lists by scanning."""
    await stop.wait()
    return
    yield  # an async generator that yields nothing


def quiet_daemon(inbox: Path, output: Path, *, rescan_interval: str) -> Daemon:
    """The daemon in-process, lists taken at once, found by its scans alone."""
    flags = {
        "inbox": str(inbox),
        "output": str(output),
        "settle": "0",
        "rescan_interval": rescan_interval,
    }
    return Daemon(resolve("run", flags, env={}, config_path=None), change_source=quiet_source)


async def test_a_job_that_crashes_goes_to_failed_and_the_daemon_goes_on(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = job_module.Job.run

    async def run_or_crash(
        self: job_module.Job, end: job_module.JobEnd | None = None
    ) -> JobSummary:
        if self.name == "bad":
            raise RuntimeError("a bug met on this list")
        return await real_run(self, end)

    monkeypatch.setattr(job_module.Job, "run", run_or_crash)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.txt").write_text(f"{server.base}/img/never.jpg\n")
    daemon = quiet_daemon(inbox, tmp_path / "out", rescan_interval="0.1")
    with watching_logs() as log:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await log.wait_for("job_crashed")
            (inbox / "good.txt").write_text(f"{server.base}/img/good.jpg\n")
            await log.wait_for("job_finished")
            nursery.cancel_scope.cancel()
    logs = log.entries
    crashed = events(logs, "job_crashed")[0]
    assert crashed["job"] == "bad" and crashed["error"] == "RuntimeError: a bug met on this list"
    assert "Traceback" in crashed["traceback"]
    assert (inbox / "failed" / "bad.txt").exists()
    assert not (inbox / "processing" / "bad.txt").exists()
    assert events(logs, "job_finished")[0]["job"] == "good"


async def test_a_zst_list_without_the_library_fails_once_and_goes_to_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its failures' list would be a .zst too, and is opened first: that used
    # to fail the job as an inbox error, tried again and again.
    monkeypatch.setattr(listformat, "_zstandard", lambda: None)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "zz.csv.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"not read")
    daemon = quiet_daemon(inbox, tmp_path / "out", rescan_interval="0.1")
    with watching_logs() as log:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await log.wait_for("job_failed")
            (inbox / "good.txt").write_text("")  # a later list is taken: the first is over
            await log.wait_for("job_finished")
            nursery.cancel_scope.cancel()
    failed = events(log.entries, "job_failed")
    assert len(failed) == 1 and failed[0]["reason"] == "list_unreadable"
    assert "pip install 'imgdl-watch[zstd]'" in failed[0]["detail"]
    assert (inbox / "failed" / "zz.csv.zst").exists()
    assert not (inbox / "processing" / "zz.csv.zst").exists()


async def test_an_inbox_deleted_again_while_it_is_recreated_is_recreated_later(
    server: ImageServer, tmp_path: Path
) -> None:
    # `rm -rf` of the inbox can still be at work while the daemon creates the
    # folder again; makedirs then fails with FileNotFoundError or even
    # FileExistsError. A real deletion loop races the daemon's recreation
    # until that has happened, and the daemon must go on.
    inbox = tmp_path / "inbox"
    daemon = quiet_daemon(inbox, tmp_path / "out", rescan_interval="0.01")
    deleting = threading.Event()
    deleting.set()
    deleted = trio.Event()

    def delete_again_and_again() -> None:
        while deleting.is_set():
            shutil.rmtree(inbox, ignore_errors=True)

    async def deleter() -> None:
        await trio.to_thread.run_sync(delete_again_and_again)
        deleted.set()

    with watching_logs() as log:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            nursery.start_soon(deleter)
            try:
                await log.wait_for("inbox_missing", action="retry", timeout=30)
            finally:
                deleting.clear()
            await deleted.wait()  # its last deletion is over
            # Recreated after it: a state of the folder, which no event alone
            # tells (the last recreation may come before or after the last rmtree).
            with trio.fail_after(10):
                while not (inbox / "processing").is_dir():
                    await trio.sleep(0.01)
            (inbox / "back.txt").write_text(f"{server.base}/img/back.jpg\n")
            await log.wait_for("job_finished")
            nursery.cancel_scope.cancel()
    logs = log.entries
    assert events(logs, "job_finished")[0]["ok"] == 1
    assert (tmp_path / "out" / "back" / "back.jpg").exists()


def planted_inbox(server: ImageServer, tmp_path: Path, planted: str) -> tuple[Path, Daemon]:
    """An inbox with a file where its folder `planted` goes, a list waiting in
    it, and a daemon (not started) that rescans every 0.01 s."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / planted).write_text("not a folder")
    (inbox / "cats.txt").write_text(f"{server.base}/img/cat.jpg\n")
    return inbox, quiet_daemon(inbox, tmp_path / "out", rescan_interval="0.01")


async def test_a_file_in_place_of_done_is_said_once_and_the_lists_wait(
    server: ImageServer, tmp_path: Path
) -> None:
    # A user of the inbox put a file where done/ goes: nothing can be
    # published. It used to stop every scan with `inbox_missing` ... `retry`,
    # twice a second, for as long as the file stayed.
    inbox, daemon = planted_inbox(server, tmp_path, "done")
    with watching_logs() as log:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await log.wait_for("inbox_unusable")
            await trio.sleep(0.3)  # dozens of scans, each finding it again
            assert (inbox / "cats.txt").exists()  # waits, unclaimed
            (inbox / "done").unlink()
            await log.wait_for("job_finished")
            nursery.cancel_scope.cancel()
    said = events(log.entries, "inbox_unusable")
    assert len(said) == 1 and said[0]["folder"] == str(inbox / "done")
    assert "never followed" in said[0]["reason"]
    assert (inbox / "done" / "cats.txt").exists()
    assert (tmp_path / "out" / "cats" / "cat.jpg").exists()


async def test_a_symlink_planted_as_a_jobs_report_part_is_never_written_through(
    server: ImageServer, tmp_path: Path
) -> None:
    # processing/ is writable by the inbox's group: a member could name a
    # symlink as a job's report part, and the report was written over its
    # target (any file the daemon may write), then published as the symlink.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    inbox = tmp_path / "inbox"
    (inbox / "processing").mkdir(parents=True)
    (inbox / "processing" / ".cats.report.part").symlink_to(victim)
    (inbox / "processing" / ".cats.failed.part").symlink_to(victim)
    (inbox / "processing" / "cats.txt").write_text(f"{server.base}/img/cat.jpg\n")
    daemon = quiet_daemon(inbox, tmp_path / "out", rescan_interval="0.1")
    with watching_logs() as log:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await log.wait_for("job_finished")
            nursery.cancel_scope.cancel()
    assert victim.read_text() == "precious\n"
    report = inbox / "done" / "cats.report.jsonl"
    assert not report.is_symlink() and '"outcome":"ok"' in report.read_text()


async def test_a_file_in_place_of_the_state_folder_stops_no_daemon(
    server: ImageServer, tmp_path: Path
) -> None:
    # It made the start (or a scan that recreated a missing processing/)
    # crash with NotADirectoryError, and a job's end too, releasing its lock.
    inbox, daemon = planted_inbox(server, tmp_path, ".imgdl-watch")
    with watching_logs() as log:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await log.wait_for("inbox_unusable")
            (inbox / "processing").rmdir()  # the scan makes it again: no crash
            await log.wait_for("inbox_missing", action="recreated")
            assert (inbox / "cats.txt").exists()  # no lock can be taken: it waits
            (inbox / ".imgdl-watch").unlink()
            await log.wait_for("job_finished")
            # The state folder replaced by a file while a job runs: its end
            # (publishing, letting go of its lock) fails the job, not the daemon.
            (inbox / "slow.txt").write_text(f"{server.base}/slow/600/s.jpg\n")
            await log.wait_for("job_started", job="slow")
            os.rename(inbox / ".imgdl-watch", tmp_path / "state.away")
            (inbox / ".imgdl-watch").write_text("again")
            await log.wait_for("job_failed", job="slow")
            (inbox / "dogs.txt").write_text(f"{server.base}/img/dog.jpg\n")
            await log.wait_for("inbox_unusable")
            nursery.cancel_scope.cancel()
    assert not events(log.entries, "crashed") and not events(log.entries, "job_crashed")
    assert (tmp_path / "out" / "cats" / "cat.jpg").exists()
    assert (inbox / "dogs.txt").exists()


async def test_a_job_that_crashes_while_the_state_folder_is_planted_stays_and_the_daemon_goes_on(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crash's move to failed/ refused to take the publish lock through
    # the planted state folder, and that stopped the whole daemon.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    state, away = inbox / ".imgdl-watch", tmp_path / "state.away"

    planted: list[bool] = []

    async def plant_and_crash(
        self: job_module.Job, end: job_module.JobEnd | None = None
    ) -> JobSummary:
        if not planted:  # the first time only
            planted.append(True)
            os.rename(state, away)
            state.symlink_to(tmp_path)
        raise RuntimeError("a bug met on this list")

    monkeypatch.setattr(job_module.Job, "run", plant_and_crash)
    (inbox / "bad.txt").write_text(f"{server.base}/img/never.jpg\n")
    daemon = quiet_daemon(inbox, tmp_path / "out", rescan_interval="0.05")
    told: list[Event] = []
    monkeypatch.setattr(daemon.jobs, "_announce", told.append)
    with watching_logs() as log:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            (failed,) = await log.wait_for("job_failed", reason="inbox_error")
            assert (inbox / "processing" / "bad.txt").exists()  # kept, to be taken up again
            # The hooks hear of it as the log does, with when it is tried again.
            assert [(e.name, e.fields["reason"]) for e in told] == [("job_failed", "inbox_error")]
            assert told[0].fields["retry_s"] == failed["retry_s"] == 0.05
            assert told[0].fields["detail"] == failed["detail"]
            assert failed["detail"].startswith("a symlink or a file in place of")
            assert failed["detail"].endswith("in " + str(state / "locks"))
            state.unlink()
            os.rename(away, state)
            await log.wait_for("job_crashed", count=2)
            with trio.fail_after(10):
                while not (inbox / "failed" / "bad.txt").exists():
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert not events(log.entries, "crashed")
