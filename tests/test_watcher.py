"""The watcher on a real folder with real watchfiles, under Trio."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from imgdl_watch.inbox.watcher import WatchBroken, watch, watchfiles_source


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
async def test_real_watchfiles_pokes_on_a_new_list_and_stops_fast(
    tmp_path: Path, polling: bool
) -> None:
    poked = trio.Event()
    stop = trio.Event()
    source = watchfiles_source(rescan_interval_s=30, force_polling=polling)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch, source=source, stop=stop), str(tmp_path), poked.set)
        # awatch registers its inotify watch before its first wait (in a thread).
        await trio.testing.wait_all_tasks_blocked()
        (tmp_path / "ignored.xlsx").write_text("x")
        (tmp_path / ".hidden.txt").write_text("x")
        # Not a synchronisation: time for a poke that must not come (debounce 200 ms).
        await trio.sleep(0.3)
        assert not poked.is_set()
        tmp = tmp_path / "x.part"
        tmp.write_text("http://a.example/a.jpg\n")
        os.rename(tmp, tmp_path / "cats.txt")
        with trio.fail_after(5):
            await poked.wait()
        started = time.monotonic()
        stop.set()
        nursery.cancel_scope.cancel()
    # rust_timeout is 30 s here: only the stop event can end it this fast.
    assert time.monotonic() - started < 1.0


async def test_a_name_the_rust_watcher_cannot_decode_pokes_then_breaks(tmp_path: Path) -> None:
    poked = trio.Event()
    source = watchfiles_source(rescan_interval_s=30)
    (tmp_path / ".x.part").write_text("x")
    with pytest.raises(ExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(watch, source=source, stop=trio.Event()), str(tmp_path), poked.set
            )
            await trio.testing.wait_all_tasks_blocked()  # its inotify watch is there
            os.rename(tmp_path / ".x.part", os.fsencode(tmp_path) + b"/caf\xe9.txt")
            with trio.fail_after(5):
                await trio.sleep_forever()  # until watch() raises
    assert raised.group_contains(WatchBroken, match="Unable to decode path", depth=1)
    assert poked.is_set()  # the daemon was told to look first
