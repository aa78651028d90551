"""The log's sinks fail (a full disk, a closed pipe, a vanished folder): the
program goes on, says so once, and loses only log lines."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from imgdl_watch.service import logs
from tests.daemonproc import DaemonProcess, drop
from tests.helpers import fill
from tests.imageserver import ImageServer
from tests.test_cli import one_clean_line

Event = dict[str, Any]


def json_lines(text: str) -> list[Event]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def structlog_reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_a_full_log_disk_costs_lines_and_says_how_many(
    tiny_disk: Path, monkeypatch: pytest.MonkeyPatch, structlog_reset: None
) -> None:
    now = [0.0]
    monkeypatch.setattr(logs, "_clock", lambda: now[0])
    stream = io.StringIO()
    log_path = tiny_disk / "imgdl-watch.log"
    output = logs.configure(fmt="json", log_file=str(log_path), stream=stream)
    log = structlog.get_logger()
    log.info("before")
    filler = fill(tiny_disk)
    for n in range(100):  # more than the last page of the file can take
        log.info("while_full", n=n, pad="x" * 500)
    failed = [e for e in json_lines(stream.getvalue()) if e["event"] == "log_file_failed"]
    assert len(failed) == 1, "said once, not once per lost line"
    assert failed[0]["file"] == str(log_path) and failed[0]["detail"] == "No space left on device"
    filler.unlink()
    now[0] = logs.LOG_FILE_RETRY_S / 2
    log.info("not_yet")  # no system call per line until the retry is due
    now[0] = logs.LOG_FILE_RETRY_S
    log.info("after")
    output.close()
    # Every line in the file is whole JSON: a write cut short was taken back.
    in_file = json_lines(log_path.read_text())
    in_stream = json_lines(stream.getvalue())
    assert [e["event"] for e in in_file][:2] == ["before", "while_full"]
    assert [e["event"] for e in in_file][-2:] == ["after", "log_file_ok"]
    lost = in_file[-1]["lost_lines"]
    # The stream had every line; the file lacks exactly the lost ones.
    assert lost > 90 and len(in_stream) - len(in_file) == lost
    assert "not_yet" not in {e["event"] for e in in_file}


def test_fetch_goes_on_when_its_stdout_goes_away(server: ImageServer, tmp_path: Path) -> None:
    urls = [f"{server.base}/slow/30/pipe/{i}.jpg" for i in range(20)]
    (tmp_path / "pipe.txt").write_text("".join(u + "\n" for u in urls))
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgdl_watch", "fetch", "pipe.txt", "--output", "out",
         "--log-format", "json", "--log-file", "fetch.log", "--concurrency", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert '"job_started"' in proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(60) == 0
    assert one_clean_line(proc.stderr.read()) == (
        "imgdl-watch: cannot write the log to standard output (Broken pipe); going on without it"
    )
    assert len(list((tmp_path / "out" / "pipe").iterdir())) == 20
    events = json_lines((tmp_path / "fetch.log").read_text())
    assert [e["detail"] for e in events if e["event"] == "log_stream_failed"] == ["Broken pipe"]
    assert [e["ok"] for e in events if e["event"] == "job_finished"] == [20]


def test_the_daemon_works_on_while_its_log_disk_is_full(
    server: ImageServer, tmp_path: Path, tiny_disk: Path
) -> None:
    fill(tiny_disk)
    daemon = DaemonProcess(tmp_path, log_file=tiny_disk / "daemon.log")
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "full.txt", f"{server.base}/img/full.jpg\n")
        daemon.wait_event("job_finished")
        assert len(daemon.events("log_file_failed")) == 1
        assert (daemon.output / "full" / "full.jpg").exists()
    finally:
        daemon.stop_cleanly()
    assert daemon.stderr_path.read_text() == ""


def test_a_reload_whose_log_folder_is_gone_goes_on_without_the_file(
    server: ImageServer, tmp_path: Path
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    daemon = DaemonProcess(tmp_path, log_file=folder / "daemon.log")
    try:
        daemon.wait_event("daemon_started")
        (folder / "daemon.log").unlink()
        folder.rmdir()
        daemon.signal(signal.SIGHUP)  # as logrotate's postrotate does
        daemon.wait_event("log_file_failed")
        drop(daemon.inbox, "gone.txt", f"{server.base}/img/gone.jpg\n")
        daemon.wait_event("job_finished")
        folder.mkdir()
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("config_reloaded", count=2)
        daemon.wait_for(lambda _events: (folder / "daemon.log").exists())
    finally:
        daemon.stop_cleanly()
    assert daemon.stderr_path.read_text() == ""
    in_file = json_lines((folder / "daemon.log").read_text())
    assert in_file[1]["event"] == "log_file_ok" and in_file[1]["lost_lines"] > 0


def test_a_console_line_escapes_what_a_terminal_would_act_on() -> None:
    # A list's name went raw into list_claimed's file= at a terminal: ESC's
    # sequences could recolour it, retitle the window or hide what follows.
    stream = io.StringIO()
    output = logs.LogOutput(stream=stream, console=True, log_file=None)
    name = "\x1b]0;TITLE\x07\x1b[2Jcats\u202e.txt"
    output.emit(event="list_claimed", level="info", file=name, size=3)
    line = stream.getvalue()
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert "file=\\x1b]0;TITLE\\x07\\x1b[2Jcats\\u202e.txt" in line


def test_a_console_line_leaves_out_fields_with_no_value() -> None:
    # `status=None` after a timeout's retry, `eta_s=None` before a rate is
    # known: noise at a terminal. The JSON line keeps them, as null.
    stream = io.StringIO()
    output = logs.LogOutput(stream=stream, console=True, log_file=None)
    output.emit(event="download_retry", level="info", attempt=2, status=None, delay_s=0.5)
    line = stream.getvalue()
    assert "status" not in line and "None" not in line and "attempt=2" in line
    stream = io.StringIO()
    logs.LogOutput(stream=stream, console=False, log_file=None).emit(
        event="download_retry", level="info", status=None
    )
    assert json.loads(stream.getvalue())["status"] is None


def test_a_json_line_escapes_what_json_alone_would_not() -> None:
    # JSON escapes U+0000-U+001F only; DEL, C1's CSI, a bidi override and a
    # line separator went out raw to a terminal that tails the log.
    stream = io.StringIO()
    output = logs.LogOutput(stream=stream, console=False, log_file=None)
    name = "a\x7fb\x9bc\u202ed\u2028e.txt"
    output.emit(event="list_claimed", level="info", file=name)
    output.emit(event="list_claimed", level="info", file="chat-é.txt")
    first, second = stream.getvalue().splitlines()
    assert first.isprintable() and json.loads(first)["file"] == name
    assert "chat-é.txt" in second  # the rest stays as it is, readable
