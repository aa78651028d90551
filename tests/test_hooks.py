"""The operator's hooks: real processes, run by `Hooks` under trio, and by the
real daemon (a hook gets the finished event; a SIGTERM while a hook runs)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from imgdl_watch.service import hooks as hooks_module
from imgdl_watch.service.events import Event
from imgdl_watch.service.hooks import OUTPUT_TAIL_BYTES, HookCommands, Hooks
from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer

PY = sys.executable


def finished_event(job: str = "cats") -> Event:
    counts = {"ok": 3, "failed": 1, "skipped": 0, "invalid": 0, "duplicates": 0, "bytes": 10}
    return Event.job_finished(job, counts, folder=f"/out/{job}", report=f"/in/done/{job}.r")


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return f"{PY} {path}"


def run_hook(command: str, event: Event, *, timeout_s: float = 10.0) -> list[Any]:
    """Run `command` as the hook for `event`; the hook log lines."""
    hooks = Hooks(HookCommands({"on_finished": command, "on_failed": command}, timeout_s=timeout_s))
    option = "on_finished" if event.name == "job_finished" else "on_failed"
    argv = hooks.commands.argv(option)
    assert argv is not None
    with capture_logs() as logs:
        trio.run(hooks.run_one, option, argv, event)
    return [e for e in logs if e["event"].startswith("hook_")]


def test_a_hook_gets_the_event_on_stdin_and_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    command = script(
        tmp_path,
        "hook.py",
        "import json, os, sys\n"
        f"seen = {{'stdin': json.loads(sys.stdin.read()), 'env': dict(os.environ)}}\n"
        f"open({str(out)!r}, 'w').write(json.dumps(seen))\n"
        "print('all good')\n",
    )
    os.environ["IMGDL_WATCH_HEADER"] = "Authorization: Bearer secret"
    try:
        logs = run_hook(command, finished_event("a 'b' $c"))
    finally:
        del os.environ["IMGDL_WATCH_HEADER"]
    assert [(e["event"], e["exit_status"], e["output"]) for e in logs] == [
        ("hook_finished", 0, "all good")
    ]
    seen = json.loads(out.read_text())
    stdin, env = seen["stdin"], seen["env"]
    assert stdin["event"] == "job_finished" and stdin["job"] == "a 'b' $c"
    assert (stdin["ok"], stdin["failed"], stdin["report"]) == (3, 1, "/in/done/a 'b' $c.r")
    assert env["IMGDL_JOB"] == "a 'b' $c" and env["IMGDL_EVENT"] == "job_finished"
    assert (env["IMGDL_OK"], env["IMGDL_FAILED"]) == ("3", "1")
    assert env["IMGDL_FOLDER"] == "/out/a 'b' $c" and env["IMGDL_REPORT"] == "/in/done/a 'b' $c.r"
    assert "IMGDL_WATCH_HEADER" not in env  # the daemon's settings stay with the daemon
    assert env["PATH"] == os.environ["PATH"]


def test_a_failing_hook_is_logged_with_its_status_and_output(tmp_path: Path) -> None:
    command = script(
        tmp_path, "fail.py", "import sys\nprint('no luck', file=sys.stderr)\nsys.exit(3)\n"
    )
    logs = run_hook(command, finished_event())
    assert len(logs) == 1
    failed = logs[0]
    assert (failed["event"], failed["reason"], failed["exit_status"]) == (
        "hook_failed",
        "exit_status",
        3,
    )
    assert failed["output"] == "no luck" and failed["detail"] == "exit status 3"


def test_a_missing_program_is_not_started(tmp_path: Path) -> None:
    logs = run_hook(str(tmp_path / "nothing-here"), finished_event())
    assert [(e["event"], e["reason"]) for e in logs] == [("hook_failed", "not_started")]
    assert "cannot run" in str(logs[0]["detail"])


def test_a_hook_that_hangs_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The hook starts a child that holds its output, then both hang; the
    # main process ignores SIGTERM, so only the SIGKILL ends it.
    command = script(
        tmp_path,
        "hang.py",
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n",
    )
    started = time.monotonic()
    logs = run_hook(command, finished_event(), timeout_s=1.0)
    took = time.monotonic() - started
    assert [(e["event"], e["reason"]) for e in logs] == [("hook_failed", "timeout")]
    assert logs[0]["output"] == "started"
    assert took < 1.0 + hooks_module.KILL_AFTER_S + 3.0, took  # the limit, then the kill
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid), pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: its parent (this test's hook) just has not reaped it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hook_that_prints_megabytes_runs_to_its_end(tmp_path: Path) -> None:
    megabytes = 20
    command = script(
        tmp_path,
        "loud.py",
        "import sys\n"
        f"for i in range({megabytes} * 16):\n"
        "    sys.stdout.write(('%06d' % i) * 10922 + '\\n')\n"  # 64 KiB a line
        "sys.stdout.write('THE END\\n')\n",
    )
    logs = run_hook(command, finished_event(), timeout_s=60)
    assert [e["event"] for e in logs] == ["hook_finished"]
    line = logs[0]
    assert line["output_bytes"] == megabytes * 16 * 65533 + len("THE END\n")
    output = str(line["output"])
    assert output.endswith("THE END") and len(output.encode()) <= OUTPUT_TAIL_BYTES


def test_fire_never_waits_and_a_full_queue_drops_with_a_line(tmp_path: Path) -> None:
    hooks = Hooks(HookCommands({"on_finished": "true"}, timeout_s=1))
    with capture_logs() as logs:
        for _ in range(hooks_module.MAX_QUEUED + 3):
            hooks.fire(finished_event())  # nothing runs them: they queue, then overflow
        hooks.fire(Event.job_failed("cats", "list_unreadable", {}, folder="/x"))  # no hook set
    assert [e["reason"] for e in logs] == ["queue_full"] * 3


def test_the_daemon_runs_the_finished_hook(server: ImageServer, tmp_path: Path) -> None:
    seen = tmp_path / "seen.jsonl"
    hook = script(
        tmp_path,
        "hook.py",
        "import json, os, sys\n"
        "event = json.loads(sys.stdin.read())\n"
        "event['env_report'] = os.environ['IMGDL_REPORT']\n"
        f"open({str(seen)!r}, 'a').write(json.dumps(event) + '\\n')\n",
    )
    daemon = DaemonProcess(tmp_path, "--on-finished", hook)
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "cats.txt", f"{server.base}/img/a.jpg\n{server.base}/status/404/b.jpg\n")
        daemon.wait_event("hook_finished")
    finally:
        daemon.stop_cleanly()
    event = json.loads(seen.read_text())
    assert (event["event"], event["job"], event["ok"], event["failed"]) == (
        "job_finished", "cats", 1, 1,
    )  # fmt: skip
    report = daemon.inbox / "done" / "cats.report.jsonl"
    assert event["report"] == event["env_report"] == str(report) and report.exists()
    assert event["folder"] == str(daemon.output / "cats")
    finished = daemon.events("job_finished")[0]
    assert {k: event[k] for k in finished if k not in ("timestamp", "level", "event")} == {
        k: v for k, v in finished.items() if k not in ("timestamp", "level", "event")
    }


def test_sigterm_while_a_hook_runs_ends_it_and_loses_no_job(
    server: ImageServer, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    hook = script(
        tmp_path,
        "slow.py",
        "import os, time\n"
        f"open(os.path.join({str(pids)!r}, os.environ['IMGDL_JOB']), 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n",
    )
    daemon = DaemonProcess(tmp_path, "--on-finished", hook, "--hook-timeout", "120")

    def hook_pid(job: str) -> int:
        deadline = time.monotonic() + 30
        while not (pids / job).exists() or not (pids / job).read_text():
            assert time.monotonic() < deadline, f"the hook of {job} never started"
            time.sleep(0.02)
        return int((pids / job).read_text())

    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "cats.txt", f"{server.base}/img/a.jpg\n")
        first = hook_pid("cats")
        # The next job is not held up by a hook that runs.
        drop(daemon.inbox, "dogs.txt", f"{server.base}/img/b.jpg\n")
        daemon.wait_event("job_finished", count=2)
        second = hook_pid("dogs")
        assert _alive(first) and _alive(second)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.proc.wait(30)
        took = time.monotonic() - started
    finally:
        daemon.stop_cleanly()
    assert code == 0
    assert took < 5, took  # neither the hooks' 60 s nor their 120 s limit, nor the 10 s grace
    assert not _alive(first) and not _alive(second)
    failed = daemon.events("hook_failed")
    assert sorted((e["job"], e["reason"]) for e in failed) == [
        ("cats", "stopped"), ("dogs", "stopped"),
    ]  # fmt: skip
    assert sorted(os.listdir(daemon.inbox / "done")) == [
        "cats.report.jsonl", "cats.txt", "dogs.report.jsonl", "dogs.txt",
    ]  # fmt: skip
    assert os.listdir(daemon.inbox / "processing") == []
    assert daemon.events()[-1]["event"] == "daemon_stopped"


def test_a_hook_program_that_does_not_exist_stops_the_start(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [PY, "-m", "imgdl_watch", "run", "--inbox", str(tmp_path / "in"), "--output",
         str(tmp_path / "out"), "--on-failed", "no-such-program-here --flag"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "imgdl-watch: error: --on-failed: cannot run 'no-such-program-here': no such program "
        "(give its full path, or put it on PATH)"
    )


@pytest.mark.parametrize("bad", ["'unclosed", "   "])
def test_a_hook_that_is_not_a_command_line_is_refused(tmp_path: Path, bad: str) -> None:
    import subprocess

    done = subprocess.run(
        [PY, "-m", "imgdl_watch", "run", "--inbox", str(tmp_path / "in"), "--on-finished", bad],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "on-finished" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_full_output_disk_runs_the_disk_full_hook_once(
    server: ImageServer, tmp_path: Path, tiny_disk: Path
) -> None:
    seen = tmp_path / "disk.jsonl"
    hook = script(
        tmp_path,
        "disk.py",
        f"import sys\nopen({str(seen)!r}, 'a').write(sys.stdin.read())\n",
    )
    daemon = DaemonProcess(tmp_path, "--output", str(tiny_disk), "--on-disk-full", hook)
    try:
        daemon.wait_event("daemon_started")
        # ~40 KB each on a 128 KB disk: the first few fit, the rest fail with disk_full.
        drop(daemon.inbox, "big.txt", "".join(f"{server.base}/img/d/{i}.jpg\n" for i in range(12)))
        finished = daemon.wait_event("job_finished")[0]
        daemon.wait_event("hook_finished")
    finally:
        daemon.stop_cleanly()
    assert finished["failed"] >= 2
    reasons = {e["reason"] for e in daemon.events("download_failed")}
    assert reasons == {"disk_full"}
    [event] = [json.loads(line) for line in seen.read_text().splitlines()]  # once per job
    assert (event["event"], event["job"], event["source"]) == (
        "disk_full",
        "big",
        "download_failed",
    )
    assert event["folder"] == str(tiny_disk / "big") and isinstance(event["free_bytes"], int)


def test_sighup_reloads_the_hooks(server: ImageServer, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    config = tmp_path / "config.toml"

    def hook_writing(mark: str) -> str:
        return f"{PY} -c \"open('{marks / mark}', 'w').close()\""

    config.write_text(f"on_finished = {json.dumps(hook_writing('before'))}\n")
    daemon = DaemonProcess(tmp_path, "--config", str(config))
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "one.txt", f"{server.base}/img/h1.jpg\n")
        daemon.wait_event("hook_finished")
        config.write_text(f"on_finished = {json.dumps(hook_writing('after'))}\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("config_reloaded")
        drop(daemon.inbox, "two.txt", f"{server.base}/img/h2.jpg\n")
        daemon.wait_event("hook_finished", count=2)
    finally:
        daemon.stop_cleanly()
    assert sorted(os.listdir(marks)) == ["after", "before"]


def test_a_list_that_cannot_run_runs_the_failed_hook(server: ImageServer, tmp_path: Path) -> None:
    seen = tmp_path / "failed.json"
    hook = script(
        tmp_path,
        "failed.py",
        "import json, os, sys\n"
        "event = json.loads(sys.stdin.read())\n"
        "event['env_reason'] = os.environ['IMGDL_REASON']\n"
        f"open({str(seen)!r}, 'w').write(json.dumps(event))\n",
    )
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "bad").write_text("a file where the job's folder should be")
    daemon = DaemonProcess(tmp_path, "--on-failed", hook)
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "bad.txt", f"{server.base}/img/x.jpg\n")
        daemon.wait_event("hook_finished")
    finally:
        daemon.stop_cleanly()
    event = json.loads(seen.read_text())
    assert (event["event"], event["job"], event["reason"], event["env_reason"]) == (
        "job_failed", "bad", "folder_error", "folder_error",
    )  # fmt: skip
    assert "cannot use" in event["detail"]
    assert (daemon.inbox / "failed" / "bad.txt").exists()


def test_a_hook_gets_only_its_own_events_variables() -> None:
    # The daemon started with an IMGDL_RETRY_S (or IMGDL_REASON...) of its
    # own: a final failure's hook must not see it as the event's.
    final = Event.job_failed("cats", "bad_header", {}, folder="/o/cats")
    base = {"PATH": "/bin", "IMGDL_RETRY_S": "5", "IMGDL_REASON": "old", "IMGDL_WATCH_INBOX": "i"}
    env = hooks_module.hook_environment(final, base)
    assert env["PATH"] == "/bin" and env["IMGDL_REASON"] == "bad_header"
    assert "IMGDL_RETRY_S" not in env and "IMGDL_WATCH_INBOX" not in env
