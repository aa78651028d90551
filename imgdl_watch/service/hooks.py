"""Hooks: the operator's commands, run when a job finishes, fails, or the disk is full.

    --on-finished CMD     after each job_finished
    --on-failed CMD       after each job_failed (and job_crashed)
    --on-disk-full CMD    when the output's disk is full (see `events`)

Only the operator sets them (flag, environment, config file): nothing in a
list or its name chooses what runs. CMD is split like a shell line
(`shlex`), but no shell runs it: a job name in `IMGDL_JOB` is data, never
code. Wrap it in `sh -c '...'` to have a shell.

**What a hook gets.** The event as one line of JSON on its standard input,
and `IMGDL_*` variables (`events.Event.env`) in an environment that is the
daemon's own without its `IMGDL_WATCH_*` settings (a `--header` may carry a
credential).

**What it may cost.** Nothing for the downloads: `fire()` only queues the
event, and hooks run in tasks of their own, `MAX_RUNNING` at once. A hook
gets `--hook-timeout` seconds; then its process group gets SIGTERM, and
SIGKILL `KILL_AFTER_S` later. Its output (stdout and stderr) is read as it
comes and only the last `OUTPUT_TAIL_BYTES` are kept, so a hook that prints
gigabytes neither blocks on a full pipe nor fills memory. A hook that leaves
a child behind holding its output still counts as running until the child
lets go or the time limit ends it. Each hook's end is logged: `hook_finished`
(exit status 0) or `hook_failed`.

**On stop.** The stop does not wait for hooks: once the jobs have stopped,
hooks still running are ended as above (SIGTERM, then SIGKILL), and events
whose hooks had not started are dropped; each is logged as `hook_failed`
with reason `stopped`. The jobs themselves are never at stake: a hook runs
after its job's list and report are published.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import structlog
import trio

from .. import metrics
from ..config import ConfigError, Settings
from .events import EVENT_VARIABLES, HOOK_OPTIONS, Event

log = structlog.get_logger("imgdl_watch")

# Hooks running at once; more wait their turn.
MAX_RUNNING = 4
# Events waiting for a hook beyond those running; past this, an event's hook
# is dropped with `hook_failed` (reason `queue_full`) rather than held.
MAX_QUEUED = 256
# Seconds between SIGTERM and SIGKILL to a hook's process group.
KILL_AFTER_S = 1.0
# Bytes of a hook's output kept for its log line: the last ones.
OUTPUT_TAIL_BYTES = 2048
# The daemon's own settings are not passed on (a header may hold a secret).
_OWN_PREFIX = "IMGDL_WATCH_"


@dataclass(frozen=True, slots=True)
class HookCommands:
    """The operator's hook commands, by option name, and their time limit."""

    commands: Mapping[str, str | None]
    timeout_s: float

    def argv(self, option: str) -> list[str] | None:
        command = self.commands.get(option)
        return shlex.split(command) if command else None


def commands_of(settings: Settings) -> HookCommands:
    return HookCommands(
        {option: getattr(settings, option) for option in HOOK_OPTIONS.values()},
        timeout_s=settings.hook_timeout,
    )


def check_commands(settings: Settings) -> None:
    """Each hook's program exists and may be run: else one line, at start-up."""
    commands = commands_of(settings)
    for option in HOOK_OPTIONS.values():
        argv = commands.argv(option)
        if argv is None:
            continue
        program = argv[0]
        found = (
            os.path.isfile(program) and os.access(program, os.X_OK)
            if os.sep in program
            else shutil.which(program) is not None
        )
        if not found:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(
                f"{flag}: cannot run {program!r}: no such program "
                "(give its full path, or put it on PATH)"
            )


class _Tail:
    """The last `limit` bytes of a stream, and how many came in all."""

    __slots__ = ("data", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    async def read(self, stream: trio.abc.ReceiveStream) -> None:
        async with stream:
            async for chunk in stream:
                self.total += len(chunk)
                self.data += chunk
                if len(self.data) > 2 * self.limit:
                    del self.data[: -self.limit]

    def text(self) -> str:
        return bytes(self.data[-self.limit :]).decode("utf-8", "replace").strip()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass  # the group is gone already


async def _end_group(process: trio.Process) -> None:
    """SIGTERM to the hook's process group, then SIGKILL (trio's `deliver_cancel`)."""
    _signal_group(process.pid, signal.SIGTERM)
    await trio.sleep(KILL_AFTER_S)
    _signal_group(process.pid, signal.SIGKILL)


def hook_environment(event: Event, base: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment without its own settings, and without any
    variable an event may set (one the daemon was started with, such as
    an `IMGDL_RETRY_S`, must not pass for this event's), then the event's."""
    env = {
        k: v for k, v in base.items() if not k.startswith(_OWN_PREFIX) and k not in EVENT_VARIABLES
    }
    env.update(event.env())
    return env


class Hooks:
    """Runs the operator's hook for each event, never in the way of the jobs."""

    def __init__(self, commands: HookCommands) -> None:
        self.commands = commands
        self._send, self._receive = trio.open_memory_channel[tuple[str, list[str], Event]](
            MAX_QUEUED
        )

    def fire(self, event: Event) -> None:
        """Queue `event`'s hook, if the operator set one. Never blocks."""
        option = HOOK_OPTIONS[event.name]
        argv = self.commands.argv(option)
        if argv is None:
            return
        try:
            self._send.send_nowait((option, argv, event))
        except trio.WouldBlock:
            self._failed(option, event, reason="queue_full", detail=f"{MAX_QUEUED} hooks waiting")

    async def run(self) -> None:
        """Run queued hooks, `MAX_RUNNING` at once, until cancelled (the stop)."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(MAX_RUNNING):
                    nursery.start_soon(self._worker)
        finally:
            # The stop: what never started is dropped, and said so.
            while True:
                try:
                    option, _argv, event = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.ClosedResourceError):
                    break
                self._failed(option, event, reason="stopped", detail="the daemon stopped first")

    async def _worker(self) -> None:
        async for option, argv, event in self._receive:
            await self.run_one(option, argv, event)

    async def run_one(self, option: str, argv: list[str], event: Event) -> None:
        """Run one hook to its end, or to its time limit; log how it went."""
        run = _Run(option, event)
        not_started: str | None = None
        try:
            with trio.move_on_after(self.commands.timeout_s) as limit:
                await run.spawn(argv)
        except* OSError as group:  # it could not start: not found, not executable
            exc = group.exceptions[0]
            strerror = exc.strerror if isinstance(exc, OSError) else None
            not_started = f"cannot run {argv[0]}: {strerror or exc}"
        except* trio.Cancelled:
            run.log(reason="stopped", detail="the daemon stopped while it ran")
            raise
        process = run.process
        if not_started is not None or process is None:
            run.log(reason="not_started", detail=not_started or "")
        elif limit.cancelled_caught:
            # Its main process may be gone while a child holds the output.
            _signal_group(process.pid, signal.SIGKILL)
            run.log(reason="timeout", detail=f"still running after {self.commands.timeout_s:g} s")
        elif process.returncode:
            detail = _exit_text(process.returncode)
            run.log(reason="exit_status", detail=detail, exit_status=process.returncode)
        else:
            run.log()

    def _failed(self, option: str, event: Event, *, reason: str, detail: str) -> None:
        _Run(option, event).log(reason=reason, detail=detail)


class _Run:
    """One run of a hook: its process, its output's tail, and its log line."""

    __slots__ = ("event", "option", "process", "started", "tail")

    def __init__(self, option: str, event: Event) -> None:
        self.option = option
        self.event = event
        self.tail = _Tail(OUTPUT_TAIL_BYTES)
        self.started = time.monotonic()
        self.process: trio.Process | None = None

    async def spawn(self, argv: list[str]) -> None:
        """Start the hook in a session of its own, and read its output to the end."""
        async with trio.open_nursery() as nursery:
            self.process = await nursery.start(
                partial(
                    trio.run_process,
                    argv,
                    stdin=self.event.payload(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=hook_environment(self.event, os.environ),
                    check=False,
                    start_new_session=True,
                    deliver_cancel=_end_group,
                )
            )
            assert self.process.stdout is not None
            await self.tail.read(self.process.stdout)

    def log(
        self, *, reason: str | None = None, detail: str = "", exit_status: int | None = None
    ) -> None:
        """`hook_finished`, or `hook_failed` with `reason`."""
        fields = {
            "hook": self.option,
            "hook_event": self.event.name,
            "job": self.event.fields.get("job"),
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "output": self.tail.text(),
            "output_bytes": self.tail.total,
        }
        if reason is None:
            metrics.recorder.hook(self.option, "ok")
            log.info("hook_finished", exit_status=0, **fields)
        else:
            metrics.recorder.hook(self.option, "failed")
            log.warning(
                "hook_failed", reason=reason, detail=detail, exit_status=exit_status, **fields
            )


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
