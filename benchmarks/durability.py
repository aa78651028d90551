"""What making files durable costs here, strategy by strategy (issue #19, item 1).

    python -m benchmarks.durability [--files 1183] [--size 60000] [--batch 16] [--rounds 5] [DIR]

Each strategy writes `--files` new files of `--size` bytes into a fresh
folder under DIR (default: benchmarks/_work, the disk the product writes
to), each under a temporary name then renamed, the way `filesink`
publishes. Batches of `--batch` files go together, as `GroupCommit` hands
them over. Rounds are interleaved, each in a new order, and the medians printed:

    none          write, rename: no durability (the eatmydata reference)
    fdatasync     write, fdatasync, rename, one file after another (as before)
    write-all     write every file of the batch, then fdatasync each, then rename each
    writeback     write each and start its writeback (sync_file_range), then
                  fdatasync each, then rename each
    threads       one file per thread, N threads at once (fdatasync in parallel)
    syncfs        write the batch, one syncfs of the whole filesystem, rename each

It measures the disk under this one process: what the product pays adds the
event loop's hand-offs (see `make bench`'s no-sync rows).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent
_libc = ctypes.CDLL(None, use_errno=True)
SYNC_FILE_RANGE_WRITE = 2
_OPEN = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _sync_file_range(fd: int) -> None:
    if _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), SYNC_FILE_RANGE_WRITE):
        raise OSError(ctypes.get_errno(), "sync_file_range")


def _syncfs(fd: int) -> None:
    if _libc.syncfs(fd):
        raise OSError(ctypes.get_errno(), "syncfs")


Batch = list[tuple[str, str]]  # (temporary name, final name)


def _write(folder: str, temp: str, body: bytes) -> int:
    fd = os.open(os.path.join(folder, temp), _OPEN, 0o644)
    os.write(fd, body)
    return fd


def none(folder: str, batch: Batch, body: bytes) -> None:
    for temp, final in batch:
        os.close(_write(folder, temp, body))
        os.rename(os.path.join(folder, temp), os.path.join(folder, final))


def fdatasync(folder: str, batch: Batch, body: bytes) -> None:
    for temp, final in batch:
        fd = _write(folder, temp, body)
        os.fdatasync(fd)
        os.close(fd)
        os.rename(os.path.join(folder, temp), os.path.join(folder, final))


def write_all(folder: str, batch: Batch, body: bytes) -> None:
    fds = [_write(folder, temp, body) for temp, _ in batch]
    for fd in fds:
        os.fdatasync(fd)
        os.close(fd)
    for temp, final in batch:
        os.rename(os.path.join(folder, temp), os.path.join(folder, final))


def writeback(folder: str, batch: Batch, body: bytes) -> None:
    fds = []
    for temp, _ in batch:
        fd = _write(folder, temp, body)
        _sync_file_range(fd)
        fds.append(fd)
    for fd in fds:
        os.fdatasync(fd)
        os.close(fd)
    for temp, final in batch:
        os.rename(os.path.join(folder, temp), os.path.join(folder, final))


def syncfs(folder: str, batch: Batch, body: bytes) -> None:
    fds = [_write(folder, temp, body) for temp, _ in batch]
    _syncfs(fds[0])
    for fd in fds:
        os.close(fd)
    for temp, final in batch:
        os.rename(os.path.join(folder, temp), os.path.join(folder, final))


STRATEGIES: dict[str, Callable[[str, Batch, bytes], None]] = {
    "none": none,
    "fdatasync": fdatasync,
    "write-all": write_all,
    "writeback": writeback,
    "syncfs": syncfs,
}


def run(name: str, root: Path, files: int, size: int, batch: int, threads: int) -> float:
    folder = tempfile.mkdtemp(dir=root)
    body = os.urandom(size)
    names = [(f".tmp-{i}", f"{i}.jpg") for i in range(files)]
    batches = [names[i : i + batch] for i in range(0, files, batch)]
    os.sync()  # start from a clean page cache
    started = time.monotonic()
    if name == "threads":
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda one: fdatasync(folder, [one], body), names))
    else:
        for each in batches:
            STRATEGIES[name](folder, each, body)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dir_fd)  # every strategy ends with the names durable too
    os.close(dir_fd)
    elapsed = time.monotonic() - started
    shutil.rmtree(folder)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dir", nargs="?", default=str(HERE / "_work"))
    parser.add_argument("--files", type=int, default=1183)
    parser.add_argument("--size", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    names = [*STRATEGIES, "threads"]
    times: dict[str, list[float]] = {n: [] for n in names}
    shuffle = random.Random(1)
    for _ in range(args.rounds):
        # A new order each round: the disk's state after one strategy is the next one's start.
        for name in shuffle.sample(names, len(names)):
            times[name].append(run(name, root, args.files, args.size, args.batch, args.threads))
    base = statistics.median(times["none"])
    print(f"{args.files} files of {args.size} bytes, batches of {args.batch}, "
          f"{args.threads} threads, median of {args.rounds} rounds, on {root}")  # fmt: skip
    for name in names:
        median = statistics.median(times[name])
        per = (median - base) / args.files * 1000
        print(f"  {name:10} {median:6.3f} s   +{per:6.3f} ms per file over none")


if __name__ == "__main__":
    main()
