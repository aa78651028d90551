"""What a job remembers of its list: each name given out, and to which URL.

One structure answers both questions a job asks of a URL, "is it a
duplicate?" and "what is its name?": the names given out so far, each with
a fingerprint of the URL it went to. A URL wants its base name, else that
name with a hash of the URL (`a-3f9c2d1e.jpg`), else a wider hash: so a URL
seen before holds one of those three (or, when all three are other URLs',
a mark of its own), and a URL holds one of them only if it was seen before.
It is a duplicate exactly when one of them is given to it, and its base name
not given out at all (nearly every URL of a real list) means at once that it
is new, with one look-up.

Exact, and in bounded memory whatever the list's length:

- Up to `MEMORY_URLS` distinct URLs, the names are kept in memory as a dict
  of 60-bit fingerprints (`naming.key`), name to URL: ~110 bytes a URL.
- Past that, they move into a SQLite file in the job folder, under a hidden
  temporary name (`filesink.TEMP_PREFIX`, so that a crash's leftover is
  swept with the others), and the rest of the list is checked there, a
  batch at a time: one query for the batch's base names (and one more for
  the hashed names of those taken by other URLs), each passed as one JSON
  array (`json_each`) rather than a query a URL, and one `executemany` that
  puts in what the batch gave out. SQLite runs in C with the GIL
  released, in the reader's thread; its page cache is bounded
  (`CACHE_KIB`), and the file is the operating system's to cache. The file
  is scratch: it is removed when the job ends, and a resumed job starts a
  new one, since it reads its list again from the start.

A URL is taken for a duplicate only if another URL of the list shares both
its fingerprint and one of its names' (fingerprints are 60 bits: far rarer
than 4e-7 for a million URLs). The fingerprints are this process's
(`naming.key`): such a clash is not repeated by the next run.

Names are given in list order, exactly as `naming.NameRegistry.assign` gives
them one URL after another to the URLs that `naming.FingerprintSet` finds
new: the first URL that wants a name gets it. A batch is settled in that
same order, so that names never depend on where batches begin or where the
list moved to disk: a resumed job finds the same names.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from ..download.filesink import TEMP_PREFIX
from ..naming import base_name, hashed_name, key, wide_name

# Distinct URLs kept in memory before the list moves to disk: ~28 MB.
# A list below it (nearly every list) never touches the disk.
MEMORY_URLS = 250_000
# SQLite's page cache, in KiB: what the disk state adds to the process's memory.
CACHE_KIB = 16 * 1024
# Batches between commits. The state is scratch (no journal, no sync): a
# commit only bounds how much an open transaction holds.
COMMIT_EVERY = 64

_CREATE = "CREATE TABLE names (fp INTEGER PRIMARY KEY, url INTEGER NOT NULL)"
# The URL each of the array's names went to, for those given out.
_OWNERS = "SELECT fp, url FROM names WHERE fp IN (SELECT value FROM json_each(?))"
_PUT = "INSERT INTO names VALUES (?, ?)"

# Before a URL, the key that marks it as seen when none of its names can.
_SEEN_MARK = "\0seen\0"
# What a name is given to: the URL's fingerprint, or None when it is free.
Owner = Callable[[int], "int | None"]


def settle(
    url: str,
    url_fp: int,
    base: str,
    base_fp: int,
    *,
    owner: Owner,
    give: Callable[[int, int], None],
) -> str | None:
    """The name `url` gets: its base name if free, else its hashed name, else
    its wide one; None when one of them is its own (a duplicate)."""
    held = owner(base_fp)
    if held is None:  # nearly every URL: new, and its base is free
        give(base_fp, url_fp)
        return base
    if held == url_fp:
        return None
    name = base
    for named in (hashed_name, wide_name):
        name = named(base, url)
        fp = key(name)
        held = owner(fp)
        if held is None:
            give(fp, url_fp)
            return name
        if held == url_fp:
            return None
    # Its wide name is another URL's too: a URL whose plain name spells it
    # (or a clash of 128-bit hashes). It is given all the same, as one URL
    # after another gives it; what marks this URL as seen is then a key of
    # its own, which no name can be (a name holds no NUL).
    mark = key(_SEEN_MARK + url)
    if owner(mark) == url_fp:
        return None
    give(mark, url_fp)
    return name


class Dedupe:
    """Each name given out, and to which URL (see the module's notes).

    `spill_dir_fd`: the job folder, where the state moves past `memory_urls`;
    None keeps everything in memory.
    """

    def __init__(self, *, spill_dir_fd: int | None = None, memory_urls: int = MEMORY_URLS) -> None:
        # Name fingerprint -> the fingerprint of the URL it went to.
        self._given: dict[int, int] = {}
        self._spill_dir_fd = spill_dir_fd
        self._memory_urls = memory_urls
        self._db: sqlite3.Connection | None = None
        self._db_name: str | None = None
        self._batches = 0

    def classify(self, urls: Sequence[str]) -> list[str | None]:
        """For each URL, in order: the name it gets, or None when it is a
        duplicate of an earlier one in the list. Blocking: call from a thread."""
        if self._db is not None:
            return self._classify_on_disk(urls)
        given = self._given
        owner, give = given.get, given.__setitem__
        names: list[str | None] = []
        for url in urls:
            base = base_name(url)
            base_fp = key(base)
            # `settle`'s first step, inline: nearly every URL ends here, and
            # the call it saves is ~0.3 µs of the ~4 a line costs.
            if base_fp not in given:
                given[base_fp] = key(url)
                names.append(base)
                continue
            names.append(settle(url, key(url), base, base_fp, owner=owner, give=give))
        if self._spill_dir_fd is not None and len(given) > self._memory_urls:
            self._spill(self._spill_dir_fd)
        return names

    def close(self) -> None:
        """Remove the disk state, if there is one."""
        if self._db is None:
            return
        self._db.close()
        self._db = None
        if self._db_name is not None and self._spill_dir_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._db_name, dir_fd=self._spill_dir_fd)

    # -- on disk ------------------------------------------------------------

    def _spill(self, dir_fd: int) -> None:
        self._db_name = f"{TEMP_PREFIX}dedupe-{secrets.token_hex(8)}.sqlite"
        # Through the folder's descriptor: the folder is never looked up by name again.
        db = sqlite3.connect(f"/proc/self/fd/{dir_fd}/{self._db_name}", check_same_thread=False)
        # Scratch state: a crash loses nothing that the next run does not rebuild.
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE"):
            db.execute(f"PRAGMA {pragma}")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.execute(_CREATE)
        given = self._given
        # In order, for the B-tree's sake; a pair at a time, so that only the
        # sorted keys (8 bytes each) are made beside the state.
        db.executemany(_PUT, ((fp, given[fp]) for fp in sorted(given)))
        self._given = {}
        db.commit()
        self._db = db

    def _owners(self, fps: Iterable[int]) -> dict[int, int]:
        """The URL each of `fps` went to, for those the disk holds."""
        assert self._db is not None
        rows = self._db.execute(_OWNERS, (json.dumps(list(fps)),))
        return dict(rows.fetchall())

    def _classify_on_disk(self, urls: Sequence[str]) -> list[str | None]:
        assert self._db is not None
        url_fps = [key(url) for url in urls]
        bases = [base_name(url) for url in urls]
        base_fps = [key(base) for base in bases]
        # What the disk holds of each fingerprint asked (absent: free there).
        asked = set(base_fps)
        on_disk = self._owners(asked)
        # The hashed names likely wanted: those of bases given to other URLs,
        # or that this batch wants more than once. Asked for in one query;
        # any other turns up only when a base is another URL's hashed name.
        wanted = Counter(base_fps)
        hashed = {
            key(hashed_name(bases[i], urls[i]))
            for i, fp in enumerate(base_fps)
            if wanted[fp] > 1 or (fp in on_disk and on_disk[fp] != url_fps[i])
        } - asked
        if hashed:
            on_disk.update(self._owners(hashed))
            asked |= hashed
        batch: dict[int, int] = {}  # what this batch gives out

        def owner(fp: int) -> int | None:
            if fp in batch:
                return batch[fp]
            if fp not in asked:
                asked.add(fp)
                on_disk.update(self._owners([fp]))
            return on_disk.get(fp)

        give = batch.__setitem__
        names = [
            settle(url, url_fp, base, base_fp, owner=owner, give=give)
            for url, url_fp, base, base_fp in zip(urls, url_fps, bases, base_fps, strict=True)
        ]
        # In order, for the B-tree's sake.
        self._db.executemany(_PUT, sorted(batch.items()))
        self._batches += 1
        if self._batches % COMMIT_EVERY == 0:
            self._db.commit()
        return names
