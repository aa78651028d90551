"""Running the real daemon as a subprocess, and reading its JSON log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import with_open_files

Event = dict[str, Any]
# Every daemon a test started; the conftest kills what a test left running.
STARTED: list[DaemonProcess] = []


class DaemonProcess:
    def __init__(
        self,
        root: Path,
        *args: str,
        name: str = "daemon",
        env: dict[str, str] | None = None,
        open_files: tuple[int, int] | None = None,
        log_file: Path | None = None,
        user: tuple[int, int] | None = None,
        python: str = sys.executable,
    ) -> None:
        """`log_file`: the daemon's `--log-file` elsewhere, for a test that makes
        it fail; events are then read from the daemon's stdout (the journal,
        under systemd), which is kept in a file. `user`: (uid, gid) to run the
        daemon as, with no other groups, as a service user (needs root), with
        `python`, an interpreter that user may run."""
        self.root = root
        self.inbox = root / "inbox"
        self.output = root / "downloads"
        self.log_path = log_file or root / f"{name}.log"
        self.stderr_path = root / f"{name}.stderr"
        self._events_path = root / f"{name}.stdout" if log_file else self.log_path
        command = [
            python, "-m", "imgdl_watch", "run",
            "--inbox", str(self.inbox), "--output", str(self.output),
            "--log-file", str(self.log_path), "--log-format", "json",
            "--settle", "0.2", "--rescan-interval", "1",
            *args,
        ]  # fmt: skip
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        with contextlib.ExitStack() as stack:
            stdout = (
                stack.enter_context(open(self._events_path, "wb"))
                if log_file
                else subprocess.DEVNULL
            )
            self.proc = subprocess.Popen(
                # RLIMIT_NOFILE (soft, hard) for the daemon only, if given.
                with_open_files(command, open_files),
                stdout=stdout,
                stderr=self._stderr,
                env={**os.environ, **(env or {})},
                **_as_user(user),
            )
        STARTED.append(self)

    def events(self, name: str | None = None) -> list[Event]:
        try:
            text = self._events_path.read_text()
        except FileNotFoundError:
            return []
        # Only whole lines: the daemon may be writing the last one right now,
        # and a write that crosses a page boundary can be read half done.
        lines = text.split("\n")[:-1]
        parsed = [json.loads(line) for line in lines if line.strip()]
        return [e for e in parsed if name is None or e["event"] == name]

    def wait_for(
        self, predicate: Callable[[list[Event]], bool], timeout: float = 60
    ) -> list[Event]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events()
            if predicate(found):
                return found
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}: {self.stderr_path.read_text()}"
                )
            time.sleep(0.02)
        raise AssertionError(f"timed out; last events: {[e['event'] for e in self.events()][-10:]}")

    def wait_event(self, name: str, count: int = 1, timeout: float = 60) -> list[Event]:
        self.wait_for(lambda evs: sum(e["event"] == name for e in evs) >= count, timeout)
        return self.events(name)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def stop_cleanly(self, timeout: float = 15) -> None:
        """Stop with SIGTERM and require exit 0; if not, say what the daemon said last."""
        code = self.stop(timeout)
        if code != 0:
            last = [e["event"] for e in self.events()][-15:]
            stderr = self.stderr_path.read_text()[-2000:]
            raise AssertionError(
                f"daemon exited with {code}; stderr: {stderr!r}; last events: {last}"
            )

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._stderr.close()


def kill_leftovers() -> list[str]:
    """Kill every daemon still running; the names of those that were."""
    left = []
    while STARTED:
        daemon = STARTED.pop()
        if daemon.proc.poll() is None:
            left.append(daemon.log_path.name)
            daemon.kill()
    return left


def _as_user(user: tuple[int, int] | None) -> dict[str, Any]:
    if user is None:
        return {}
    uid, gid = user
    return {"user": uid, "group": gid, "extra_groups": []}


def drop(inbox: Path, name: str, text: str) -> None:
    """Drop a list the way a careful user does: write aside, rename in."""
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.part"
    tmp.write_text(text)
    os.rename(tmp, inbox / name)
