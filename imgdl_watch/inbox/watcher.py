"""Watching the inbox folder: tells the daemon *that* something changed.

watchfiles reports a file as `added` while it is still being written, drops
events on an inotify overflow, and never reports files that were there before
it started (watchfiles #345 and its docs). So the watcher does not trust
events for *what* changed: each event, and each tick of `rescan_interval_s`
without one, only pokes the daemon, which then scans the folder itself.

A name that is not UTF-8 (`bad\\xff.txt`, any such name in the inbox) makes
the Rust watcher fail with `WatchfilesRustInternalError`, which ends awatch.
`watch` turns that into `WatchBroken` once the daemon has been poked, and
the daemon starts a new watcher: a stray file name must not stop the service.

Stopping: awatch runs the Rust watch call in a worker thread that a Trio
cancel cannot abandon (watchfiles #162). We set `stop_event` first; the Rust
loop checks it every `step` and returns, so cancelling takes milliseconds,
not `rust_timeout`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import trio
import watchfiles
from watchfiles._rust_notify import WatchfilesRustInternalError

from ..errors import first_leaf
from .layout import is_list_name

# Milliseconds awatch waits for more changes after one before it reports them.
# Small, so that a list renamed into the inbox is picked up within ~50 ms.
STEP_MS = 20
# Milliseconds over which awatch may group a burst of changes.
DEBOUNCE_MS = 200


class WatchBroken(Exception):
    """The watcher stopped on its own (see the module's notes); start another."""


class ChangeSource(Protocol):
    """Anything that yields once per batch of changes (or per quiet tick)."""

    def __call__(self, folder: str, stop: trio.Event) -> AsyncIterator[object]: ...


def inbox_filter(change: watchfiles.Change, path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return is_list_name(name)


def watchfiles_source(
    *,
    rescan_interval_s: float,
    force_polling: bool = False,
    also: Callable[[], Sequence[str]] = list,
) -> ChangeSource:
    """The real change source: awatch on the inbox, not recursive, and on the
    folders `also()` names when it starts (the inbox's categories)."""

    def source(folder: str, stop: trio.Event) -> AsyncIterator[object]:
        return watchfiles.awatch(
            folder,
            *also(),
            watch_filter=inbox_filter,
            recursive=False,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            rust_timeout=int(rescan_interval_s * 1000),
            yield_on_timeout=True,
            force_polling=force_polling,
        )

    return source


async def watch(
    folder: str,
    poke: Callable[[], None],
    *,
    source: ChangeSource,
    stop: trio.Event,
    on_watching: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poke on every batch of changes until `stop` is set (or cancelled).

    Set `stop` *before* cancelling this task: the cancellation cannot reach
    the worker thread, but the event can. `on_watching` is called as the
    watching begins: awatch registers its inotify watch in the very step that
    follows, with no await between them.
    """
    broken: BaseException | None = None
    try:
        changes = source(folder, stop)
        task_status.started()
        if on_watching is not None:
            on_watching()
        async for _batch in changes:
            poke()
    except* WatchfilesRustInternalError as group:
        # awatch raises it from inside its task group, wrapped or not.
        broken = first_leaf(group)
        poke()  # the change it choked on may be a list: look now
    finally:
        # Whatever ended us, make sure the Rust thread ends too.
        stop.set()
    if broken is not None:
        raise WatchBroken(str(broken)) from broken
