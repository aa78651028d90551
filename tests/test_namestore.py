"""The de-duplication's state on disk: exact owners through a filter that
may say "maybe", pairs pending in memory and chunks in a scratch file."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgdl_watch.download.filesink import TEMP_PREFIX
from imgdl_watch.job.namestore import SUFFIX, NameStore, ScratchError
from imgdl_watch.naming import KEY_MASK


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def scratch(folder: int) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]


_KEY = st.integers(0, KEY_MASK)


def test_a_run_of_free_names_is_given_up_to_the_first_the_filter_may_have(folder: int) -> None:
    store = NameStore(folder, filter_bits=1 << 20, partitions=2, chunk_names=2)
    names = [10, 20, 30, 20, 40]  # the second 20: its bits are set by the first
    assert store.give_while_free(names, [1, 2, 3, 4, 5], 0) == 3
    assert store.give_while_free(names, [1, 2, 3, 4, 5], 4) == 5
    assert [store.owner(n) for n in (10, 20, 30, 40, 50)] == [1, 2, 3, 5, None]
    assert store.give_while_free([], [], 0) == 0
    store.close()


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.dictionaries(_KEY, _KEY, max_size=300),
    others=st.lists(_KEY, max_size=50),
    filter_bits=st.sampled_from([8, 1024, 1 << 20]),
    partitions=st.sampled_from([1, 2, 16]),
    chunk_names=st.sampled_from([1, 3, 256]),
)
def test_each_name_has_the_owner_it_was_given_and_no_other_has_one(
    folder: int,
    pairs: dict[int, int],
    others: list[int],
    filter_bits: int,
    partitions: int,
    chunk_names: int,
) -> None:
    store = NameStore(
        folder, filter_bits=filter_bits, partitions=partitions, chunk_names=chunk_names
    )
    try:
        for name, url in pairs.items():
            assert store.owner(name) is None
            if name % 2:
                store.give(name, url)
            elif not store.give_while_free([name], [url], 0):  # a "maybe": it asks
                assert store.owner(name) is None
                store.give(name, url)
        for name, url in pairs.items():
            assert store.owner(name) == url
            assert store.give_while_free([name], [url], 0) == 0
        for other in others:
            if other not in pairs:
                assert store.owner(other) is None
    finally:
        store.close()
    assert not scratch(folder)


def every_bit_set(store: NameStore) -> None:
    """Make the filter say "maybe" to every key, so that each one asked is
    looked for in the pairs (a test's keys would otherwise be answered by
    the filter alone)."""
    store._filter[:] = b"\xff" * len(store._filter)


def counting_preads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(offset)
        return real(fd, size, offset)

    monkeypatch.setattr(os, "pread", pread)
    return reads


def test_an_owner_that_equals_a_name_is_not_taken_for_that_name(
    folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One partition, chunks of two pairs: the first two pairs go to disk,
    # the third stays pending. In both, an owner's value is the key asked,
    # at an owner's place, not a name's.
    store = NameStore(folder, filter_bits=8, partitions=1, chunk_names=2)
    store.give(1, 500)
    store.give(2, 600)
    store.give(3, 700)
    every_bit_set(store)
    reads = counting_preads(monkeypatch)
    assert store.file_bytes == 32  # two pairs of two 8-byte ints, on disk
    assert store.owner(500) is None  # on disk, an owner
    assert reads == [0]  # looked for on disk, not answered by the filter
    assert store.owner(700) is None  # pending, an owner
    assert store.owner(2) == 600 and store.owner(3) == 700
    store.give(700, 800)  # pending twice: as an owner, then as a name
    assert store.owner(700) == 800
    store.close()


def test_a_name_spelled_across_two_ints_on_disk_is_not_found_there(
    folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A little-endian pair (name, owner): the 8 bytes at offset 4 are the
    # name's high half then the owner's low half. A key that spells them is
    # found by `bytes.find` at an offset no pair starts at.
    asked = (5 << 32) | 7  # high half 5, low half 7
    store = NameStore(folder, filter_bits=8, partitions=1, chunk_names=1)
    name, owner = (7 << 32) | 9, (1 << 40) | 5
    assert (name.to_bytes(8, "little") + owner.to_bytes(8, "little"))[4:12] == asked.to_bytes(
        8, "little"
    )
    store.give(name, owner)
    store.give(asked, 42)  # a second chunk, where `asked` is a name
    every_bit_set(store)
    reads = counting_preads(monkeypatch)
    assert store.file_bytes == 32
    if sys.byteorder == "little":
        assert store.owner(asked) == 42  # the second chunk's, not the first's misaligned bytes
        assert reads == [0, 16]
    assert store.owner(name) == owner
    store.close()


def test_the_scratch_file_is_named_as_temporary_and_removed_on_close(folder: int) -> None:
    store = NameStore(folder, filter_bits=8, partitions=1, chunk_names=1)
    store.give(1, 2)
    (name,) = scratch(folder)
    assert name.endswith(SUFFIX) and os.stat(name, dir_fd=folder).st_size == 16
    store.close()
    store.close()  # twice: nothing left to do
    assert not scratch(folder)


def test_an_owner_read_from_disk_is_asked_of_the_disk_once(
    folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = NameStore(folder, filter_bits=8, partitions=1, chunk_names=1)
    store.give(11, 12)
    reads = counting_preads(monkeypatch)
    assert [store.owner(11) for _ in range(5)] == [12] * 5
    assert len(reads) == 1
    store.close()


def test_a_folder_gone_or_full_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder removed under its descriptor: the file cannot be made.
    gone = tmp_path / "gone"
    gone.mkdir()
    fd = os.open(gone, os.O_RDONLY | os.O_DIRECTORY)
    os.rmdir(gone)
    with pytest.raises(ScratchError, match="No such file or directory"):
        NameStore(fd)
    os.close(fd)
    # A full disk: the chunk cannot be written.
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    store = NameStore(fd, filter_bits=8, partitions=1, chunk_names=2)

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    store.give(1, 2)
    with pytest.raises(ScratchError, match="No space left on device"):
        store.give(3, 4)
    # A write that takes 5 bytes, then fails: the disk filling up says so.
    calls: list[int] = []

    def filling(fd: int, data: bytes, offset: int) -> int:
        calls.append(offset)
        if len(calls) > 1:
            full()
        return 5

    monkeypatch.setattr(os, "pwrite", filling)
    with pytest.raises(ScratchError, match="No space left on device"):
        store.give(5, 6)
    assert calls == [0, 5]  # written on from where the short write stopped
    monkeypatch.setattr(os, "pwrite", lambda *args: 0)
    with pytest.raises(ScratchError, match="wrote 0 of 32 bytes"):
        store.give(7, 8)
    store.close()
    assert not scratch(fd)
    os.close(fd)


def test_short_writes_are_written_on_and_the_pairs_read_back(
    folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite

    def short(fd: int, data: bytes, offset: int) -> int:
        return real(fd, bytes(data)[:5], offset)

    monkeypatch.setattr(os, "pwrite", short)
    store = NameStore(folder, filter_bits=8, partitions=1, chunk_names=2)
    for name in range(1, 9):
        store.give(name, name * 100)
    assert store.file_bytes == 128
    assert [store.owner(name) for name in range(1, 9)] == [n * 100 for n in range(1, 9)]
    store.close()


def test_closing_never_raises_and_forgets_the_file(
    folder: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file system that fails close(2) (NFS reports a deferred error
    # there) and unlink(2): the reader's `finally` must not raise.
    store = NameStore(folder, filter_bits=8, partitions=1, chunk_names=1)
    closes: list[object] = []

    def failing(*args: object, **kwargs: object) -> None:
        closes.append(args[0])
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "close", failing)
    monkeypatch.setattr(os, "unlink", failing)
    store.close()
    store.close()  # tried once only
    monkeypatch.undo()
    assert len(closes) == 2  # close(2) and unlink(2), each once
    fd = closes[0]
    assert isinstance(fd, int)
    os.close(fd)
    assert len(scratch(folder)) == 1  # left for the next start's sweep
