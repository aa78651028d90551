"""A slot's own connections: kept per origin, the least recently used closed first."""

from __future__ import annotations

import pytest

from imgdl_watch.download import connections
from imgdl_watch.download.connections import SLOT_CONNECTIONS, SlotConnections
from imgdl_watch.download.fetcher import Fetcher
from tests.helpers import fetch_options
from tests.imageserver import ImageServer


async def test_a_slot_keeps_two_origins_and_closes_the_least_recently_used(out_fd: int) -> None:
    assert SLOT_CONNECTIONS == 2
    with ImageServer() as one, ImageServer() as two, ImageServer() as three:
        order = [one, two, one, two, three, one]
        async with Fetcher(fetch_options(concurrency=1, retries=0)) as fetcher:
            for number, server in enumerate(order):
                name = f"{number}.jpg"
                await fetcher.download(f"{server.base}/img/{name}", dir_fd=out_fd, name=name)
            assert fetcher.transports.kept(0) == SLOT_CONNECTIONS
        # `three` pushed out `one` (then least recently used), and `one`, back,
        # pushed out `two`: one connection more for `one`, none for the others.
        assert [s.opened_connections for s in (one, two, three)] == [2, 1, 1]


class FakeConnection:
    def __init__(self, *, available: bool, expired: bool) -> None:
        self.available = available
        self.expired = expired
        self.asked = 0

    def is_available(self) -> bool:
        return self.available

    def has_expired(self) -> bool:
        self.asked += 1
        return self.expired


@pytest.mark.parametrize(
    ("available", "idle_s", "expired", "reusable", "asked"),
    [
        (True, 0.0, True, True, 0),  # used just now: the socket is not asked
        (True, connections.IDLE_CHECK_S, False, True, 1),  # idle a while: asked, still open
        (True, connections.IDLE_CHECK_S, True, False, 1),  # idle a while: closed by the server
        (False, 0.0, False, False, 0),  # a body left unread, or a failure
    ],
)
def test_only_a_connection_idle_for_a_while_is_asked_whether_it_is_open(
    available: bool, idle_s: float, expired: bool, reusable: bool, asked: int
) -> None:
    fake = FakeConnection(available=available, expired=expired)
    assert SlotConnections._reusable(fake, 100.0, 100.0 + idle_s) is reusable  # type: ignore[arg-type]
    assert fake.asked == asked
