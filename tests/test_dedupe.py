"""De-duplication in bounded memory: exactly what one URL after another gives."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgdl_watch import naming
from imgdl_watch.download.filesink import TEMP_PREFIX, sweep_temp_files
from imgdl_watch.job.dedupe import Dedupe
from imgdl_watch.job.namestore import SUFFIX, NameStore
from imgdl_watch.naming import FingerprintSet, NameRegistry, hashed_name, wide_name
from tests.helpers import write_list


def one_by_one(urls: list[str]) -> list[str | None]:
    """The reference: each URL in turn, all in memory."""
    seen, names = FingerprintSet(), NameRegistry()
    return [names.assign(url) if seen.add(url) else None for url in urls]


def tiny_store(dir_fd: int) -> NameStore:
    """A store whose filter says "maybe" to nearly every name once it holds
    a few, with two partitions that write a chunk every two names: each
    look-up goes to its pending pairs and to disk."""
    return NameStore(dir_fd, filter_bits=8, partitions=2, chunk_names=2)


def in_batches(
    folder: int,
    urls: list[str],
    sizes: Iterator[int],
    *,
    memory: int,
    store: Callable[[int], NameStore] = NameStore,
) -> list[str | None]:
    """What a `Dedupe` in `folder` (on disk past `memory` URLs) gives `urls`,
    classified in batches of `sizes`; it is closed after."""
    dedupe = Dedupe(spill_dir_fd=folder, memory_urls=memory, store=store)
    out: list[str | None] = []
    try:
        start = 0
        while start < len(urls):
            size = next(sizes)
            out.extend(dedupe.classify(urls[start : start + size]))
            start += size
    finally:
        dedupe.close()
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


# Few hosts, few names: duplicates and look-alike names everywhere, and now
# and then a plain name that is another URL's hashed one.
_NAME = st.sampled_from(["a.jpg", "b.jpg", "a", "image.png", "x-y.gif", "%41.jpg"])
_URL = st.builds(
    lambda host, path, name: f"http://{host}.example/{path}/{name}",
    st.sampled_from(["h1", "h2"]),
    st.sampled_from(["p", "q", "p/r"]),
    _NAME,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    urls=st.lists(_URL, max_size=120),
    memory=st.sampled_from([0, 5, 40, 10_000]),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=20),
    tiny=st.booleans(),
)
def test_batches_on_disk_give_the_names_one_by_one_gives(
    folder: int, urls: list[str], memory: int, sizes: list[int], tiny: bool
) -> None:
    # A plain name that is another URL's hashed name, in the same batch or not.
    if len(urls) > 2:
        urls.insert(len(urls) // 2, f"http://h9.example/z/{hashed_name(*_first_clash(urls))}")
    store = tiny_store if tiny else NameStore
    got = in_batches(folder, urls, iter(sizes * (len(urls) + 1)), memory=memory, store=store)
    assert got == one_by_one(urls)
    assert not [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]  # closed: gone


_A, _B = "http://h1.example/p/a.jpg", "http://h2.example/p/a.jpg"
# A plain name that is the hashed name `_B` gets (its base is `_A`'s).
_LIKE_B = f"http://h9.example/z/{hashed_name('a.jpg', _B)}"
_C = "http://h1.example/q/c.jpg"


@pytest.mark.parametrize(
    "urls",
    [
        [_A, _C, _C, _B, _B, _A],  # the same URL twice in one batch, new to the list
        [_A, _B, _LIKE_B],  # a hashed name given in one batch, wanted plain in a later one
        [_A, _LIKE_B, _B],  # the plain name first: the hashed one is taken, so it is widened
        [_C, _A, _B, _LIKE_B, _B, _LIKE_B],
    ],
)
@pytest.mark.parametrize("size", [1, 2, 3, 6])
@pytest.mark.parametrize("memory", [0, 1])
@pytest.mark.parametrize("store", [NameStore, tiny_store])
def test_duplicates_and_hashed_names_across_batches_on_disk(
    folder: int, urls: list[str], size: int, memory: int, store: Callable[[int], NameStore]
) -> None:
    got = in_batches(folder, urls, iter([size] * len(urls)), memory=memory, store=store)
    assert got == one_by_one(urls)


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("memory", [0, 1, 10_000])
@pytest.mark.parametrize("store", [NameStore, tiny_store])
def test_a_clash_of_hashed_names_widens_them_the_same_way_on_disk(
    folder: int,
    size: int,
    memory: int,
    store: Callable[[int], NameStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every hashed name clashes (a 32-bit hash shared by all): past the
    # first URL that wants "a.jpg", the second gets "a-00000000.jpg" and each
    # later one a wide name, in the batch or in later ones, on disk or not.
    monkeypatch.setattr(naming, "url_hash", lambda url: "00000000")
    third = "http://h3.example/p/a.jpg"
    urls = [_A, _B, third, _B, third, _A, "http://h4.example/p/a.jpg", third]
    got = in_batches(folder, urls, iter([size] * len(urls)), memory=memory, store=store)
    assert got == one_by_one(urls)
    assert sum(name is not None and len(name) > 30 for name in got) == 2  # two wide names


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("memory", [0, 1, 10_000])
@pytest.mark.parametrize("store", [NameStore, tiny_store])
def test_a_url_whose_three_names_are_other_urls_plain_names_is_seen_once(
    folder: int, size: int, memory: int, store: Callable[[int], NameStore]
) -> None:
    # Other URLs' last segments spell this URL's hashed and wide names: it is
    # given its wide name all the same, as one URL after another gives it,
    # and its repeat is still a duplicate (a review found it was not).
    url = "http://x.example/a.jpg"
    urls = [
        "http://y.example/a.jpg",
        f"http://v.example/{hashed_name('a.jpg', url)}",
        f"http://w.example/{wide_name('a.jpg', url)}",
        url,
        url,
    ]
    got = in_batches(folder, urls, iter([size] * len(urls)), memory=memory, store=store)
    assert got == one_by_one(urls)
    assert got[-1] is None


def _first_clash(urls: list[str]) -> tuple[str, str]:
    """A URL's base name and URL: what `hashed_name` makes of a clash."""
    url = urls[0]
    return url.rsplit("/", 1)[-1].replace("%41", "A") or "image", url


def test_the_state_moves_to_disk_past_its_bound_and_is_swept_after_a_crash(
    folder: int,
) -> None:
    urls = [f"http://h.example/{i % 50}/{i}.jpg" for i in range(500)]
    dedupe = Dedupe(spill_dir_fd=folder, memory_urls=100)
    names = dedupe.classify(urls[:150])
    files = [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
    assert len(files) == 1 and files[0].endswith(SUFFIX)  # past 100 URLs: on disk
    names += dedupe.classify(urls[150:] + urls[:10])  # the last ten are duplicates
    assert names == one_by_one(urls + urls[:10])
    # Killed without closing: the next run of the job sweeps it with the other temporaries.
    assert sweep_temp_files(folder) == 1
    assert not os.listdir(folder)
    dedupe.close()  # its descriptor; the file is gone already


def test_without_a_folder_everything_stays_in_memory(tmp_path: Path) -> None:
    dedupe = Dedupe(spill_dir_fd=None, memory_urls=1)
    urls = [f"http://h.example/{i}.jpg" for i in range(20)] * 2
    assert dedupe.classify(urls) == one_by_one(urls)
    dedupe.close()
    assert write_list(tmp_path / "unused.txt", []).exists()  # nothing else was written
