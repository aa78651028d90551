"""How a batch of finished files is made durable before their names appear.

The promise of the default, `file`: after kill -9 or a power loss, a final
name never holds a partial file. Each file's data (and the size needed to
read it back) is on the disk before its rename. A batch goes in three
phases, and what makes that cheap is the first one:

    1. every file of the batch is written out, and its writeback started
       (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: the disk gets all of them
       at once, without waiting for any)
    2. each is fdatasync'ed: by then most of its data is on its way, and one
       journal commit covers the sizes of many
    3. each is renamed into place

`filesystem` makes phase 2 a single `syncfs` of the filesystem that holds
the job folder: the same promise, at a fraction of the cost, but it flushes
everything dirty on that filesystem, other programs' writes included. It is
meant for an output on a filesystem of its own.

`none` skips phases 1 and 2. A name is still whole after the daemon is
killed (its bytes are in the kernel), but not after a power loss.

What each costs on the benchmark machine, measured with
`python -m benchmarks.durability` (1183 files of 60 KB in batches of 16),
is in benchmarks/README.md ("Durability").
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence

from .syscalls import syncfs


class Durability(enum.Enum):
    """`--durability`: what a final name promises after a crash or a power loss."""

    # Each file's data is on the disk before its name appears (the default).
    FILE = "file"
    # The same, by one syncfs per batch: for an output on a filesystem of its own.
    FILESYSTEM = "filesystem"
    # A name is whole after the daemon is killed, not after a power loss.
    NONE = "none"


def make_durable(fds: Sequence[int], durability: Durability) -> list[OSError | None]:
    """Phase 2 for the files open at `fds`, whose writeback phase 1 started:
    the error of each (None: durable), so that one bad file fails alone."""
    errors: list[OSError | None] = [None] * len(fds)
    if durability is Durability.NONE or not fds:
        return errors
    if durability is Durability.FILESYSTEM:
        try:
            if syncfs(fds[0]):
                return errors
        except OSError as exc:  # the filesystem could not write: none of them is durable
            return [exc] * len(fds)
    for i, fd in enumerate(fds):
        try:
            os.fdatasync(fd)
        except OSError as exc:
            errors[i] = exc
    return errors
