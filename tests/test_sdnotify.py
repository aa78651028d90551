"""The notify protocol against real AF_UNIX datagram sockets."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from imgdl_watch.service.sdnotify import Notifier, watchdog_interval


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        name = f"imgdl-watch-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.setblocking(False)
    yield sock, address
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_watchdog_cadence_on_a_fake_clock(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    pings: list[float] = []
    last: list[str] = []

    async def main() -> None:
        receiver = trio.socket.from_stdlib_socket(sock)
        notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
        assert notifier.watchdog_s == 0.5

        async def receive() -> None:
            while True:
                message = (await receiver.recv(4096)).decode()
                if message == "WATCHDOG=1":
                    pings.append(trio.current_time())
                last.append(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await notifier.ready()
            async with trio.open_nursery() as watchdog:
                watchdog.start_soon(notifier.watchdog_loop)
                await trio.sleep(5.2)
                watchdog.cancel_scope.cancel()
            await notifier.stopping()
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        notifier.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert last[0] == "READY=1"
    assert len(pings) == 11  # at 0, 0.5, ... 5.0 s of fake time
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(pings)}
    assert gaps == {0.5}
    assert last[-1] == "STOPPING=1"


def test_first_messages(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener

    async def main() -> None:
        notifier = Notifier({"NOTIFY_SOCKET": address})
        await notifier.ready("starting")
        await notifier.status("1 jobs")
        await notifier.reloading()
        await notifier.stopping()

    trio.run(main)
    messages = received(sock)
    assert messages[0] == "READY=1\nSTATUS=starting"
    assert messages[1] == "STATUS=1 jobs"
    assert messages[2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert messages[3] == "STOPPING=1"


def test_a_blocked_event_loop_stops_the_pings(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    arrivals: list[float] = []

    async def main() -> None:
        notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.watchdog_loop)
            await trio.sleep(0.3)
            arrivals.extend(time.monotonic() for _ in received(sock))
            time.sleep(0.6)  # the loop is stuck: no ping may be sent meanwhile
            stuck_until = time.monotonic()
            assert received(sock) == []
            await trio.sleep(0.2)
            assert received(sock)  # pings resume with the loop
            nursery.cancel_scope.cancel()
            arrivals.append(stuck_until)

    trio.run(main)
    assert len(arrivals) >= 4


def test_watchdog_pid_and_absence() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}, pid=7) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, pid=7) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({}, pid=7) is None

    async def main() -> None:
        notifier = Notifier({})
        assert not notifier.enabled
        await notifier.ready()  # no socket, no error, nothing
        await notifier.watchdog_loop()  # returns at once

    trio.run(main)
