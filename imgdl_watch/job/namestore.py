"""The names a long list has given out, once memory no longer holds them.

What a job's de-duplication asks of a name, by its 60-bit key
(`naming.key`): the URL it went to, or none. Past `dedupe.MEMORY_URLS` those
pairs are kept here, in two parts:

- **A filter in memory** of fixed size (`FILTER_BITS`, two bits a name, a
  Bloom filter): a name it has no bit of was never given out. Nearly every
  URL of a long list has a new base name, and this answers it with no disk
  at all: that is what keeps the reading of a 10M-line list near its rate
  in memory.
- **The pairs on disk**, in a scratch file, by partition (`PARTITIONS`, on
  the key's top bits): each partition gathers its pairs in memory and
  writes them out together, `CHUNK_NAMES` at a time, at the file's end. A
  name the filter may know is looked for in its partition only: the pairs
  it holds in memory, then its chunks on disk (one `pread` each).

No B-tree, and nothing is ever sorted: a new name costs two bits and an
append; what costs the disk is a name the filter may know, that is a
duplicate, a base name another URL has, or one of the filter's false
"maybe"s. Their odds, for N names: (1 - e^(-2N / FILTER_BITS))^2, 0.5% at
10M names, 3.7% at 30M, 27% at 100M. A false "maybe" only costs a look-up;
it never makes an answer wrong. The owners found on disk are cached (a
name's owner never changes), so a name that many URLs want (`image.jpg`) is
read once.

Memory does not grow with the list: the filter, the partitions' pairs not
yet written (at most 16 bytes x `CHUNK_NAMES` x `PARTITIONS`) and the cache
are bounded; what grows is one 8-byte offset a chunk (0.03 bytes a name, 3
MB at 100M names) and the file, 16 bytes a name.

The file is scratch, under a hidden temporary name in the job folder
(`filesink.TEMP_PREFIX`, so that a crash's leftover is swept with the
others); `close` removes it. A file that cannot be made, written or read
(a full disk, say) is a `ScratchError`, saying why.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from array import array
from collections.abc import Sequence

from ..download.filesink import TEMP_PREFIX

# The filter's bits: 32 MiB, allocated when a list first moves to disk.
# False "maybe" odds are in the module's notes.
FILTER_BITS = 1 << 28
# Partitions on disk: a look-up reads the chunks of one (~10 at 10M names).
PARTITIONS = 4096
# Pairs a partition holds before it writes them out as one chunk: 4 KiB.
CHUNK_NAMES = 256
# Owners found on disk, kept for the names asked again; cleared when full.
CACHE_NAMES = 65_536
# The scratch file's name, after the temporary prefix.
SUFFIX = ".names"

# A pair is two native 64-bit ints (a key is 60 bits): the name's, its URL's.
_PAIR = 2 * array("q").itemsize
_KEY_BITS = 60


class ScratchError(Exception):
    """The scratch file cannot be made, written or read: `str()` says why."""


class NameStore:
    """Names given out, with the URL each went to (see the module's notes).

    `dir_fd`: the folder the scratch file goes in.
    """

    def __init__(
        self,
        dir_fd: int,
        *,
        filter_bits: int = FILTER_BITS,
        partitions: int = PARTITIONS,
        chunk_names: int = CHUNK_NAMES,
    ) -> None:
        # Powers of two: a bit and a partition are masks of a key.
        assert filter_bits & (filter_bits - 1) == 0 and 8 <= filter_bits <= 1 << 30
        assert partitions & (partitions - 1) == 0 and partitions <= 1 << 12
        self._filter = bytearray(filter_bits // 8)
        self._mask = filter_bits - 1
        # The second bit comes from the key's bits above the first's.
        self._shift = filter_bits.bit_length() - 1
        self._part_shift = _KEY_BITS - (partitions.bit_length() - 1)
        # Each partition's pairs not written yet, and its chunks' offsets.
        self._pending = [array("q") for _ in range(partitions)]
        self._chunks = [array("q") for _ in range(partitions)]
        self._chunk_items = 2 * chunk_names
        self._chunk_bytes = chunk_names * _PAIR
        self._cache: dict[int, int] = {}
        self._dir_fd = dir_fd
        self.name = f"{TEMP_PREFIX}dedupe-{secrets.token_hex(8)}{SUFFIX}"
        try:
            self._fd: int | None = os.open(
                self.name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
        except OSError as exc:
            raise ScratchError(exc.strerror or str(exc)) from exc
        self._end = 0

    def give_while_free(self, fps: Sequence[int], url_fps: Sequence[int], start: int) -> int:
        """Give each name of `fps` from `start` on to its URL of `url_fps`
        while the filter has not got it (it is surely free), and stop at the
        first it may have: its index (`len(fps)` when there is none). One
        call for the run of a batch that is new, with what it needs in
        locals: ~0.6 µs a name where a call for each took ~1.3 (cProfile
        over `benchmarks/lines_probe.py --reader` on a 1M-line list)."""
        bits, mask, shift = self._filter, self._mask, self._shift
        part_shift, partitions, full = self._part_shift, self._pending, self._chunk_items
        end = len(fps)
        at = start
        while at < end:
            fp = fps[at]
            i = fp & mask
            j = (fp >> shift) & mask
            bit_i = 1 << (i & 7)
            bit_j = 1 << (j & 7)
            if bits[i >> 3] & bit_i and bits[j >> 3] & bit_j:
                return at
            bits[i >> 3] |= bit_i
            bits[j >> 3] |= bit_j
            part = fp >> part_shift
            pending = partitions[part]
            pending.append(fp)
            pending.append(url_fps[at])
            if len(pending) >= full:
                self._write(part)
            at += 1
        return end

    def give(self, fp: int, url_fp: int) -> None:
        """Give name `fp` (not given out yet) to the URL `url_fp`."""
        bits = self._filter
        i = fp & self._mask
        j = (fp >> self._shift) & self._mask
        bits[i >> 3] |= 1 << (i & 7)
        bits[j >> 3] |= 1 << (j & 7)
        part = fp >> self._part_shift
        pending = self._pending[part]
        pending.append(fp)
        pending.append(url_fp)
        if len(pending) >= self._chunk_items:
            self._write(part)

    def owner(self, fp: int) -> int | None:
        """The URL name `fp` went to, or None when it is free."""
        bits = self._filter
        i = fp & self._mask
        j = (fp >> self._shift) & self._mask
        if not (bits[i >> 3] >> (i & 7) & 1 and bits[j >> 3] >> (j & 7) & 1):
            return None
        cached = self._cache.get(fp)
        if cached is not None:
            return cached
        found = self._look_up(fp)
        if found is not None:
            if len(self._cache) >= CACHE_NAMES:
                self._cache.clear()
            self._cache[fp] = found
        return found

    @property
    def file_bytes(self) -> int:
        """What the scratch file holds."""
        return self._end

    def close(self) -> None:
        """Remove the scratch file.

        Never raises: it runs in the reader's `finally`, where an error of
        its own would hide the one that ended the reading. A file it could
        not remove is a temporary one, swept at the job's next start."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.name, dir_fd=self._dir_fd)

    def _write(self, part: int) -> None:
        assert self._fd is not None
        pending = self._pending[part]
        # Exactly one chunk, whatever a failed write left pending: the
        # offsets assume it. The file is scratch: no sync. A short write
        # (a disk filling up) is written on, so that a full disk says so.
        size, written = self._chunk_bytes, 0
        with memoryview(pending) as items, items.cast("B") as chunk:
            while written < size:
                try:
                    done = os.pwrite(self._fd, chunk[written:size], self._end + written)
                except OSError as exc:
                    raise ScratchError(exc.strerror or str(exc)) from exc
                if done <= 0:
                    raise ScratchError(f"wrote {written} of {size} bytes")
                written += done
        self._chunks[part].append(self._end)
        self._end += size
        del pending[: self._chunk_items]

    def _look_up(self, fp: int) -> int | None:
        """Name `fp`'s owner, from its partition: the pairs pending, then
        each chunk on disk."""
        assert self._fd is not None
        part = fp >> self._part_shift
        pending = self._pending[part]
        if fp in pending:
            # At an even place: a key. An owner (odd) equal to it is passed over.
            at = -1
            with contextlib.suppress(ValueError):
                while True:
                    at = pending.index(fp, at + 1)
                    if at % 2 == 0:
                        return pending[at + 1]
        wanted = fp.to_bytes(8, sys.byteorder, signed=True)
        for offset in self._chunks[part]:
            try:
                chunk = os.pread(self._fd, self._chunk_bytes, offset)
            except OSError as exc:
                raise ScratchError(exc.strerror or str(exc)) from exc
            at = chunk.find(wanted)
            while at >= 0 and at % _PAIR:
                at = chunk.find(wanted, at + 1)
            if at >= 0:
                return int.from_bytes(chunk[at + 8 : at + _PAIR], sys.byteorder, signed=True)
        return None
