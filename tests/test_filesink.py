"""FileSink and GroupCommit on real files, with real worker threads."""

from __future__ import annotations

import errno
import itertools
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import imgdl_watch.download.durability as durability_module
import imgdl_watch.download.filesink as filesink
from imgdl_watch import errors as err
from imgdl_watch.download import syscalls
from imgdl_watch.download.durability import Durability
from imgdl_watch.download.filesink import TEMP_PREFIX, FileSink, GroupCommit


async def publish(commit: GroupCommit, dir_fd: int, name: str, body: bytes) -> None:
    sink = FileSink(dir_fd)
    await sink.write(body)
    try:
        await commit.publish(sink, name)
    finally:
        sink.discard()


async def test_files_published_together_share_thread_hops(
    out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    real = filesink._publish_batch

    def counting(batch: list[filesink._Entry], durability: Durability) -> None:
        batches.append(len(batch))
        real(batch, durability)

    monkeypatch.setattr(filesink, "_publish_batch", counting)
    commit = GroupCommit()
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(publish, commit, out_fd, f"{i}.jpg", bytes([i]) * 1000)
    assert sorted(os.listdir(out_fd)) == sorted(f"{i}.jpg" for i in range(50))
    for i in range(50):
        assert Path(f"/proc/self/fd/{out_fd}/{i}.jpg").read_bytes() == bytes([i]) * 1000
    assert sum(batches) == 50
    assert len(batches) < 50  # files that finished together went together


async def test_a_temporary_name_that_exists_is_passed_over(
    out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filesink, "_serial", itertools.count(7))
    planted = f"{TEMP_PREFIX}{filesink.RUN_TOKEN}-7.part"
    with open(f"/proc/self/fd/{out_fd}/{planted}", "wb") as handle:
        handle.write(b"not ours")
    await publish(GroupCommit(), out_fd, "a.jpg", b"ours")
    assert Path(f"/proc/self/fd/{out_fd}/a.jpg").read_bytes() == b"ours"
    assert Path(f"/proc/self/fd/{out_fd}/{planted}").read_bytes() == b"not ours"


async def _publish_as(dir_fd: int, source: bytes, body: bytes) -> str:
    sink = FileSink(dir_fd, source=source)
    await sink.write(body)
    try:
        return await GroupCommit().publish(sink, "a.png", alias="a-wide.png")
    finally:
        sink.discard()


async def test_a_name_another_urls_file_took_sends_the_body_to_its_alias(out_fd: int) -> None:
    folder = Path(f"/proc/self/fd/{out_fd}")
    assert await _publish_as(out_fd, b"first", b"1") == "a.png"
    # Another URL's body under the same name: to its alias, the first kept.
    assert await _publish_as(out_fd, b"second", b"2") == "a-wide.png"
    assert (folder / "a.png").read_bytes() == b"1"
    assert (folder / "a-wide.png").read_bytes() == b"2"
    assert os.getxattr(folder / "a-wide.png", filesink.SOURCE_XATTR) == b"second"
    # The same URL's: left as it is, and named.
    with pytest.raises(err.AlreadyThere) as there:
        await _publish_as(out_fd, b"first", b"3")
    assert there.value.file == "a.png"
    # Another's once the alias is taken too: left as they are, the alias named.
    with pytest.raises(err.AlreadyThere) as there:
        await _publish_as(out_fd, b"third", b"3")
    assert there.value.file == "a-wide.png"
    assert sorted(os.listdir(out_fd)) == ["a-wide.png", "a.png"]
    assert (folder / "a.png").read_bytes() == b"1"
    assert (folder / "a-wide.png").read_bytes() == b"2"


async def test_a_name_an_untagged_file_took_sends_the_body_to_its_alias(out_fd: int) -> None:
    # A file that says nothing of its URL (no user attributes here, or put
    # there by someone) and appeared while the body came is no earlier
    # run's of this URL (the job looks for those first): left as it is, and
    # the body takes its alias, rather than being lost as skipped.
    folder = Path(f"/proc/self/fd/{out_fd}")
    (folder / "a.png").write_bytes(b"theirs")
    assert await _publish_as(out_fd, b"ours", b"ours") == "a-wide.png"
    assert (folder / "a.png").read_bytes() == b"theirs"
    assert (folder / "a-wide.png").read_bytes() == b"ours"


async def test_an_error_reaches_only_its_own_file(out_fd: int) -> None:
    os.mkdir("taken.jpg", dir_fd=out_fd)  # renaming a file onto a folder fails
    commit = GroupCommit()
    outcomes: dict[str, str] = {}

    async def one(name: str) -> None:
        try:
            await publish(commit, out_fd, name, b"x" * 100)
            outcomes[name] = "ok"
        except err.WriteFailed as exc:
            outcomes[name] = exc.reason

    async with trio.open_nursery() as nursery:
        for name in ("a.jpg", "taken.jpg", "b.jpg"):
            nursery.start_soon(one, name)
    assert outcomes == {"a.jpg": "ok", "taken.jpg": "write_error", "b.jpg": "ok"}
    assert not [n for n in os.listdir(out_fd) if n.startswith(TEMP_PREFIX)]


async def test_a_cancelled_waiter_leaves_nothing_and_blocks_no_one(out_fd: int) -> None:
    commit = GroupCommit()
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(publish, commit, out_fd, f"keep{i}.jpg", b"k" * 10)
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before its batch starts: it must leave the queue
            await publish(commit, out_fd, "gone.jpg", b"g" * 10)
        for i in range(20):
            nursery.start_soon(publish, commit, out_fd, f"late{i}.jpg", b"l" * 10)
    names = set(os.listdir(out_fd))
    assert "gone.jpg" not in names
    assert {f"keep{i}.jpg" for i in range(20)} | {f"late{i}.jpg" for i in range(20)} == names


async def test_a_waiter_cancelled_in_the_queue_leaves_it(
    out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    release = threading.Event()
    real = filesink._publish_batch
    first = True

    def held(batch: list[filesink._Entry], durability: Durability) -> None:
        nonlocal first
        if first:
            first = False
            release.wait(10)  # the first batch stays in its thread until released
        real(batch, durability)

    monkeypatch.setattr(filesink, "_publish_batch", held)
    commit = GroupCommit()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish, commit, out_fd, "first.jpg", b"1")
        # first.jpg leads: its batch is taken, and held in its thread.
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as queued:
            queued.start_soon(publish, commit, out_fd, "gone.jpg", b"g")
            await trio.testing.wait_all_tasks_blocked()  # gone.jpg waits behind it...
            queued.cancel_scope.cancel()  # ...and is cancelled there
        nursery.start_soon(publish, commit, out_fd, "next.jpg", b"n")
        await trio.testing.wait_all_tasks_blocked()  # next.jpg waits too
        release.set()
    assert sorted(os.listdir(out_fd)) == ["first.jpg", "next.jpg"]


def _batch_of(dir_fd: int, count: int) -> list[filesink._Entry]:
    entries = []
    for i in range(count):
        sink = FileSink(dir_fd)
        sink._chunks = [bytes([i]) * 5000]  # a body held in memory, as most are
        sink.size = 5000
        entries.append(filesink._Entry(sink, f"{i}.jpg"))
    return entries


@pytest.mark.parametrize("durability", list(Durability), ids=lambda d: d.value)
def test_every_file_of_a_batch_is_durable_before_any_name_appears(
    out_fd: int, monkeypatch: pytest.MonkeyPatch, durability: Durability
) -> None:
    trace: list[tuple[str, int | str]] = []
    real_fdatasync, real_rename = os.fdatasync, syscalls.rename_new
    real_syncfs, real_writeback = syscalls.syncfs, syscalls.start_writeback

    def fdatasync(fd: int) -> None:
        trace.append(("fdatasync", fd))
        real_fdatasync(fd)

    def syncfs(fd: int) -> bool:
        trace.append(("syncfs", fd))
        return real_syncfs(fd)

    def writeback(fd: int) -> None:
        trace.append(("writeback", fd))
        real_writeback(fd)

    def rename(src: str, dst: str, *, dir_fd: int) -> None:
        trace.append(("rename", dst))
        real_rename(src, dst, dir_fd=dir_fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(filesink, "rename_new", rename)
    monkeypatch.setattr(durability_module, "syncfs", syncfs)
    monkeypatch.setattr(filesink, "start_writeback", writeback)
    batch = _batch_of(out_fd, 6)
    filesink._publish_batch(batch, durability)
    assert all(entry.error is None for entry in batch)
    kinds = [kind for kind, _ in trace]
    first_rename = kinds.index("rename")
    assert kinds[first_rename:] == ["rename"] * 6  # names appear last, all six
    made_durable = kinds[:first_rename]
    if durability is Durability.FILE:
        # Every writeback started before the first wait, then each file synced.
        assert made_durable == ["writeback"] * 6 + ["fdatasync"] * 6
        fds = [fd for kind, fd in trace if kind == "writeback"]
        assert fds == [fd for kind, fd in trace if kind == "fdatasync"]
    elif durability is Durability.FILESYSTEM:
        assert made_durable == ["writeback"] * 6 + ["syncfs"]  # one for the batch
    else:
        assert made_durable == []  # whole after a kill, not after a power loss
    for i in range(6):
        assert os.read(os.open(f"{i}.jpg", os.O_RDONLY, dir_fd=out_fd), 10000) == bytes([i]) * 5000


def test_a_file_that_cannot_be_made_durable_fails_alone(
    out_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fdatasync
    batch = _batch_of(out_fd, 3)
    broken = {"fd": -1}

    def fdatasync(fd: int) -> None:
        if fd == broken["fd"]:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    real_write_out = FileSink.write_out

    def write_out(self: FileSink, *, writeback: bool) -> int:
        fd = real_write_out(self, writeback=writeback)
        if self is batch[1].sink:
            broken["fd"] = fd
        return fd

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(FileSink, "write_out", write_out)
    filesink._publish_batch(batch, Durability.FILE)
    assert [e.error is None for e in batch] == [True, False, True]
    names = [n for n in sorted(os.listdir(out_fd)) if not n.startswith(TEMP_PREFIX)]
    assert names == ["0.jpg", "2.jpg"]  # 1.jpg never appeared
    batch[1].sink.discard()
    assert sorted(os.listdir(out_fd)) == ["0.jpg", "2.jpg"]


@pytest.mark.parametrize("libc", [True, False], ids=["libc", "fallbacks"])
def test_the_system_calls_are_libcs_and_each_has_its_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, libc: bool
) -> None:
    # Found in the process's own symbols, where `ctypes.util.find_library`
    # would have run `ldconfig -p` at every start; without them (an older
    # libc: renameat2 came with glibc 2.28 and musl 1.2.5), the fallbacks:
    # a link and an unlink, a sync per file, no early writeback.
    if libc:
        name, version = platform.libc_ver()
        if name != "glibc" or tuple(map(int, version.split("."))) < (2, 28):
            pytest.skip(f"{name or 'this libc'} {version}: not known to have all three")
        assert None not in (syscalls._SYNC_FILE_RANGE, syscalls._SYNCFS, syscalls._RENAMEAT2)
    else:
        for call in ("_RENAMEAT2", "_SYNCFS", "_SYNC_FILE_RANGE"):
            monkeypatch.setattr(syscalls, call, None)
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        assert syscalls.syncfs(folder) is libc
        syscalls.start_writeback(folder)
        (tmp_path / "a").write_bytes(b"1")
        (tmp_path / "b").write_bytes(b"2")
        with pytest.raises(FileExistsError):
            syscalls.rename_new("a", "b", dir_fd=folder)
        syscalls.rename_new("a", "c", dir_fd=folder)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"b": b"2", "c": b"1"}
    finally:
        os.close(folder)


def test_finding_libc_imports_no_ctypes_util() -> None:
    probe = "import sys, imgdl_watch.download.syscalls; print(sorted(sys.modules))"
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "'ctypes.util'" not in found and "'ctypes'" in found
