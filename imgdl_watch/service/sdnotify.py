"""The systemd notify protocol, over a Trio AF_UNIX datagram socket.

A message is one datagram of newline-separated `KEY=value` pairs sent to
`$NOTIFY_SOCKET`: a path, or `@name` for an abstract socket (the `@` stands
for a leading NUL). With no `NOTIFY_SOCKET`, every call does nothing.

The watchdog pings from a Trio task every half of `WATCHDOG_USEC`, and only
if `WATCHDOG_PID` is unset or is our pid. Because the pings come from the
event loop, a loop that is blocked stops pinging, and systemd restarts us.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import trio

# Status text longer than this is cut: systemd shows one line of it.
MAX_STATUS_CHARS = 200


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings, or None when systemd asked for no watchdog."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    watched_pid = env.get("WATCHDOG_PID", "")
    if watched_pid and watched_pid != str(pid):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Sends notify messages to systemd; a no-op outside of systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        self.watchdog_s = watchdog_interval(env, os.getpid()) if self.address else None
        self._sock: trio.socket.SocketType | None = None
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def send(self, *lines: str) -> None:
        if self.address is None:
            return
        if self._sock is None:
            self._sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            await self._sock.sendto("\n".join(lines).encode(), _address(self.address))
        except OSError:
            # systemd went away or the socket is gone: nothing to tell, and
            # nothing worth stopping the service for.
            pass

    async def ready(self, status: str | None = None) -> None:
        await self.send("READY=1", *([f"STATUS={status}"] if status else []))

    async def status(self, text: str) -> None:
        text = text[:MAX_STATUS_CHARS].replace("\n", " ")
        if text != self._last_status:
            self._last_status = text
            await self.send(f"STATUS={text}")

    async def stopping(self) -> None:
        await self.send("STOPPING=1")

    async def reloading(self) -> None:
        # systemd 253+ wants the monotonic time with RELOADING=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        await self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog every half interval, forever (if asked for)."""
        if self.watchdog_s is None:
            return
        while True:
            await self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
