"""The daemon as systemd sees it, and the shipped unit."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemonproc import DaemonProcess
from tests.imageserver import ImageServer

UNIT = Path(__file__).parent.parent / "systemd" / "imgdl-watch.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def test_daemon_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.05)
    daemon = DaemonProcess(tmp_path, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
    messages: list[tuple[float, str]] = []

    def collect(until: float) -> None:
        while time.monotonic() < until:
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                pass

    try:
        daemon.wait_event("daemon_started")
        collect(time.monotonic() + 2.6)
        daemon.signal(signal.SIGTERM)
        collect(time.monotonic() + 1.0)
        code = daemon.proc.wait(10)
    finally:
        daemon.stop()
        sock.close()
    texts = [m for _, m in messages]
    ready = [i for i, m in enumerate(texts) if m.startswith("READY=1")]
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    assert ready and ready[0] <= texts.index("WATCHDOG=1")
    assert 4 <= len(pings) <= 7  # about twice a second over ~2.6 s
    assert "STOPPING=1" in texts
    assert code == 0


def test_sighup_reloads_limits_and_reopens_the_log(server: ImageServer, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("concurrency = 2\nper_host = 2\nmax_jobs = 1\n")
    # A hard limit of 512 open files is enough for these settings, but not for 1000 downloads.
    daemon = DaemonProcess(tmp_path, "--config", str(config), open_files=(512, 512))
    try:
        daemon.wait_event("daemon_started")
        config.write_text("concurrency = 5\nper-host = 3\nmax_jobs = 2\n")
        rotated = tmp_path / "daemon.log.1"
        os.rename(daemon.log_path, rotated)
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_event("config_reloaded")
        assert (reloaded[0]["concurrency"], reloaded[0]["per_host"], reloaded[0]["max_jobs"]) == (
            5,
            3,
            2,
        )
        assert "config_reloaded" not in rotated.read_text()
        assert not daemon.events("config_not_reloaded")  # all of that edit was reloaded
        # Settings a reload cannot change are named, not dropped without a word:
        # an operator must not believe the address guard on when it is not.
        guarded = 'block_private = true\nmax_bytes = "100K"\n'
        config.write_text("concurrency = 5\nper-host = 3\nmax_jobs = 2\n" + guarded)
        daemon.signal(signal.SIGHUP)
        (partly,) = daemon.wait_event("config_not_reloaded")
        assert partly["settings"] == ["block_private", "max_bytes"]
        assert "restart" in partly["detail"]
        assert len(daemon.wait_event("config_reloaded", count=2)) == 2
        config.write_text("concurrency = 0\n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("config_reload_failed")
        assert "concurrency must be 1 to 1000" in failed[0]["detail"]
        config.write_text("concurrency = 1000\n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("config_reload_failed", count=2)
        assert "may open only 512" in failed[1]["detail"]
        assert daemon.proc.poll() is None
    finally:
        daemon.stop_cleanly()


def _ignores_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_a_reload_asked_for_while_the_daemon_starts_does_not_stop_it(tmp_path: Path) -> None:
    # Until trio's handler was in place (~0.3 s of imports and start-up),
    # SIGHUP had Python's default action: a logrotate `postrotate` that
    # landed during a restart ended the service, without a word.
    config = tmp_path / "config.toml"
    config.write_text("concurrency = 2\n")
    daemon = DaemonProcess(tmp_path, "--config", str(config))
    try:
        # The command line's first step: from then on, a reload is no stop.
        deadline = time.monotonic() + 30
        while not _ignores_sighup(daemon.proc.pid):
            assert time.monotonic() < deadline, "SIGHUP is never ignored at start"
            time.sleep(0.001)
        while not daemon.events("daemon_started"):
            daemon.signal(signal.SIGHUP)
            assert daemon.proc.poll() is None, daemon.stderr_path.read_text()
            time.sleep(0.01)
        daemon.signal(signal.SIGHUP)  # once it runs, a reload as ever
        daemon.wait_event("config_reloaded")
        assert daemon.proc.poll() is None
    finally:
        daemon.stop_cleanly()


def _stub_root(tmp_path: Path) -> Path:
    """A root with the unit, a stand-in for its binary and the host's targets."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    binary = root / "opt/imgdl-watch/bin/imgdl-watch"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for target in glob.glob("/usr/lib/systemd/system/*.target") + glob.glob(
        "/lib/systemd/system/*.target"
    ):
        shutil.copy(target, units)
    return root


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    assert ANALYZE is not None
    root = _stub_root(tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", UNIT.name], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_analyze
def test_unit_security_score_is_at_most_1_5() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5


def test_shipped_files_agree() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text
    stop_timeout = int(re.search(r"TimeoutStopSec=(\d+)", text).group(1))  # type: ignore[union-attr]
    assert stop_timeout > 10  # the default --grace
    folder = UNIT.parent
    assert "imgdl-watch" in (folder / "imgdl-watch.sysusers").read_text()
    tmpfiles = (folder / "imgdl-watch.tmpfiles").read_text()
    assert "/var/lib/imgdl-watch/inbox             2770" in tmpfiles
    import tomllib

    from imgdl_watch.config import resolve

    example = folder / "config.toml.example"
    tomllib.loads(example.read_text())
    settings = resolve("run", {}, env={}, config_path=str(example))  # every key is known and valid
    assert settings.block_private
