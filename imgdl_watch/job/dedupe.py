"""What a job remembers of its list: each URL seen, and each name given out.

Exact, and in bounded memory whatever the list's length:

- Up to `MEMORY_URLS` distinct URLs, both are kept in memory as 60-bit
  fingerprints (`naming.FingerprintSet`, of `naming.key`): ~160 bytes a URL,
  with the sets' own overhead.
- Past that, both sets move into a SQLite file in the job folder, under a
  hidden temporary name (`filesink.TEMP_PREFIX`, so that a crash's leftover
  is swept with the others), and the rest of the list is checked there, a
  batch at a time, in a few queries. SQLite runs in C with the GIL
  released, in the reader's thread; its page cache is bounded
  (`CACHE_KIB`), and the file is the operating system's to cache. Each
  table is asked and filled by one statement a batch, its fingerprints
  passed as one JSON array (`json_each`), so that a batch costs two calls
  into SQLite, not one a URL. The file is scratch: it is removed when the
  job ends, and a resumed job starts a new one, since it reads its list
  again from the start.

Two distinct URLs sharing a fingerprint (~4e-7 for a million of them,
~4e-3 for a hundred million) would make the second a duplicate: that is
the one inexactness. The fingerprints are this process's (`naming.key`):
such a clash is not repeated by the next run, which then downloads it.

Names are given in list order, exactly as `naming.NameRegistry.assign`
does one URL after another: the first URL that wants a name gets it, a
later one a hash of its URL (`a.jpg`, `a-3f9c2d1e.jpg`). A batch is
settled in that same order, so that names never depend on where batches
begin or where the list moved to disk: a resumed job finds the same names.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterable, Sequence

from ..download.filesink import TEMP_PREFIX
from ..naming import FingerprintSet, NameRegistry, base_name, hashed_name, key, wide_name

# Distinct URLs kept in memory before the list moves to disk: ~40 MB of sets.
# A list below it (nearly every list) never touches the disk.
MEMORY_URLS = 250_000
# SQLite's page cache, in KiB: what the disk state adds to the process's memory.
CACHE_KIB = 16 * 1024
# Fingerprints moved to disk per statement when the state moves there.
SPILL_SLICE = 16_384
# Batches between commits. The state is scratch (no journal, no sync): a
# commit only bounds how much an open transaction holds.
COMMIT_EVERY = 64

# Each fingerprint of the array that is not in the table yet goes in; those
# that went in come back. `DO NOTHING` leaves out those it had, and the
# second of a fingerprint the array holds twice.
_ADD = (
    "INSERT INTO {} SELECT value FROM json_each(?) WHERE true ON CONFLICT DO NOTHING RETURNING fp"
)
_HAS = "SELECT fp FROM {} WHERE fp IN (SELECT value FROM json_each(?))"


def _array(fps: Iterable[int]) -> str:
    # Sorted, so that the B-tree is walked in order.
    return json.dumps(sorted(fps))


class Dedupe:
    """Each URL seen, and each name given out (see the module's notes).

    `spill_dir_fd`: the job folder, where the state moves past `memory_urls`;
    None keeps everything in memory.
    """

    def __init__(self, *, spill_dir_fd: int | None = None, memory_urls: int = MEMORY_URLS) -> None:
        self._seen = FingerprintSet()
        self._names = NameRegistry()
        self._spill_dir_fd = spill_dir_fd
        self._memory_urls = memory_urls
        self._urls = 0
        self._db: sqlite3.Connection | None = None
        self._db_name: str | None = None
        self._batches = 0

    def classify(self, urls: Sequence[str]) -> list[str | None]:
        """For each URL, in order: the name it gets, or None when it is a
        duplicate of an earlier one in the list. Blocking: call from a thread."""
        if self._db is not None:
            return self._classify_on_disk(urls)
        # `FingerprintSet.add` and `NameRegistry.assign` one URL after the
        # other, spelled out on the sets: a third of the reader's time was
        # these calls (`benchmarks/lines_probe.py --reader` measures it).
        seen, taken, registry = self._seen.keys, self._names.keys, self._names
        names: list[str | None] = []
        for url in urls:
            fp = key(url)
            if fp in seen:
                names.append(None)
                continue
            seen.add(fp)
            name = base_name(url)
            name_fp = key(name)
            if name_fp in taken:
                name = registry.assign(url)  # its base is taken: the hashed way
            else:
                taken.add(name_fp)
            names.append(name)
        self._urls = len(seen)
        if self._spill_dir_fd is not None and self._urls > self._memory_urls:
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
        for table, fps in (("seen", self._seen.keys), ("names", self._names.keys)):
            db.execute(f"CREATE TABLE {table} (fp INTEGER PRIMARY KEY)")
            ordered = sorted(fps)
            # A slice at a time: the whole set as one array, its text and
            # SQLite's parse of it, was a third more of the process's peak.
            for start in range(0, len(ordered), SPILL_SLICE):
                chunk = json.dumps(ordered[start : start + SPILL_SLICE])
                db.execute(f"INSERT INTO {table} SELECT value FROM json_each(?)", (chunk,))  # noqa: S608 - a table name of ours
        db.commit()
        self._db = db
        self._seen = FingerprintSet()
        self._names = NameRegistry()

    def _add(self, table: str, fps: Iterable[int]) -> set[int]:
        """Put `fps` in `table`; return those it did not hold yet."""
        assert self._db is not None
        rows = self._db.execute(_ADD.format(table), (_array(fps),))
        return {fp for (fp,) in rows}

    def _taken(self, table: str, fps: Iterable[int]) -> set[int]:
        """Which of `fps` the disk state holds already."""
        assert self._db is not None
        rows = self._db.execute(_HAS.format(table), (_array(fps),))
        return {fp for (fp,) in rows}

    def _classify_on_disk(self, urls: Sequence[str]) -> list[str | None]:
        assert self._db is not None
        url_fps = [key(url) for url in urls]
        added = self._add("seen", url_fps)
        new: list[int] = []  # indices of the URLs new to the list, in order
        for i, fp in enumerate(url_fps):
            if fp in added:
                added.discard(fp)  # a second of it in this batch is a duplicate
                new.append(i)
        names: list[str | None] = [None] * len(urls)
        claims = _NameClaims(self, [urls[i] for i in new])
        for i, name in zip(new, claims.settle(), strict=True):
            names[i] = name
        claims.record()
        self._batches += 1
        if self._batches % COMMIT_EVERY == 0:
            self._db.commit()
        return names


class _NameClaims:
    """One batch's names, settled in list order against the disk state.

    The batch's base names go in first, with one statement that also says
    which the disk held already. A base that went in is this batch's to
    give, and it is given: to the first URL that wants it as its base, or
    to an earlier one whose hashed name it is (settled below in list order,
    as one URL after another would be). So what went in is what the batch
    gives out, and only hashed and wide names are left to put in after.
    """

    def __init__(self, dedupe: Dedupe, urls: list[str]) -> None:
        self._dedupe = dedupe
        self._urls = urls
        self._bases = [base_name(url) for url in urls]
        self._base_fps = [key(base) for base in self._bases]
        # What the disk is known to hold, among the fingerprints asked (the
        # bases, and more as a URL turns out to need a hashed name).
        self._asked: set[int] = set(self._base_fps)
        self._put = dedupe._add("names", self._asked) if self._asked else set()
        self._taken = self._asked - self._put
        # The fingerprints of the names this batch gives out.
        self.new: set[int] = set()

    def _free(self, fp: int) -> bool:
        if fp not in self._asked:
            self._asked.add(fp)
            self._taken |= self._dedupe._taken("names", [fp])
        return fp not in self._taken and fp not in self.new

    def settle(self) -> list[str]:
        """The names, in order: a base name if free, else its hashed one, else a wide one."""
        # The hashed names likely wanted: those of bases the disk holds, or
        # that this batch wants more than once. Asked for in one query; any
        # other turns up only when a base equals another URL's hashed name.
        counts: dict[int, int] = {}
        for fp in self._base_fps:
            counts[fp] = counts.get(fp, 0) + 1
        hashed: dict[int, tuple[str, int]] = {}
        for i, fp in enumerate(self._base_fps):
            if counts[fp] > 1 or fp in self._taken:
                name = hashed_name(self._bases[i], self._urls[i])
                hashed[i] = (name, key(name))
        fps = {fp for _, fp in hashed.values()} - self._asked
        if fps:
            self._asked |= fps
            self._taken |= self._dedupe._taken("names", fps)
        names = []
        for i, (base, base_fp) in enumerate(zip(self._bases, self._base_fps, strict=True)):
            name, fp = base, base_fp
            if not self._free(fp):
                name, fp = hashed.get(i) or _named(hashed_name(base, self._urls[i]))
                if not self._free(fp):
                    name, fp = _named(wide_name(base, self._urls[i]))
            self.new.add(fp)
            names.append(name)
        return names

    def record(self) -> None:
        """Put in the names given out that the bases' statement did not."""
        if rest := self.new - self._put:
            self._dedupe._add("names", rest)


def _named(name: str) -> tuple[str, int]:
    return name, key(name)
