"""Where the bench's rows write: a journaled ext4 of their own, when it can make one.

**Why.** This VM's root filesystem is ext4 mounted *without a journal*
(`dmesg | grep EXT4-fs`: "mounted filesystem ... without journal";
`/sys/fs/ext4/vda/journal_task` reads `<none>`). On such a filesystem,
ext4's inode allocator passes over every inode deleted in the last 60 s
(300 s while its inode table block is dirty), reading the table to find out
(`recently_deleted()` in `find_inode_bit()`, fs/ext4/ialloc.c; the check is
made only when there is no journal). A bench deletes each row's 1183 files
before the next row runs, so every file any later row creates costs a scan
past thousands of recently deleted inodes: ~0.6 ms of kernel CPU per file,
where a journaled ext4 takes ~0.04 ms. Measure it again:

    python3 -c 'import os
    for i in range(2000): os.close(os.open(f"c{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL))
    for i in range(2000): os.unlink(f"c{i}")'      # twice, under `time`: sys ~1.2 s
    perf record -g python3 ...; perf report --no-children   # ~70% in recently_deleted

That cost is the filesystem's and the bench's, not the downloader's: a disk
formatted as mkfs.ext4, XFS or btrfs make it has no such scan. It is most
of wget2's CPU on the static set, a large share of ours, and it grows
through a run as deletions pile up, which is much of the "drift" the
static set showed between rounds (`README.md`, "A VM whose speed drifts").

**What.** As root, with `mkfs.ext4` and loop devices, the rows write to a
sparse image formatted with mkfs.ext4's defaults (journal included) and
loop-mounted under the work folder: its data still goes to the same
virtio disk, and fsync still waits for it. Otherwise (or with `--output-fs
work`), they write in the work folder, and the run says which, and whether
that filesystem has a journal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

# The image's size: sparse, so only what the rows write takes disk space.
# The largest writer is the long list (`--lines 10000000`: ~0.7 GB of list).
IMAGE_BYTES = 8 << 30


def journal_of(path: Path) -> str:
    """What `path`'s filesystem is, for the run's header: its type, and for
    ext4 whether it has a journal."""
    found = subprocess.run(
        ["findmnt", "-no", "FSTYPE", "--target", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    # The mount on top, if a killed run left one under it.
    kind = (found.stdout.strip().splitlines() or ["unknown filesystem"])[-1]
    if kind != "ext4":
        return kind
    dev = os.stat(path).st_dev
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    with contextlib.suppress(OSError):
        task = Path("/sys/fs/ext4") / block.resolve().name / "journal_task"
        if task.read_text().strip() == "<none>":
            return "ext4 without a journal"
        return "ext4 with a journal"
    return kind


@contextlib.contextmanager
def output_root(folder: Path, *, own: bool = True) -> Iterator[str]:
    """Make `folder` (the rows' outputs) for the run, and say what it is.
    With `own`, an ext4 of its own is mounted on it, when this process can
    make one (its image beside it, removed after); else it is a plain
    folder."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder.with_name(folder.name + ".img")
    if own and os.geteuid() == 0 and shutil.which("mkfs.ext4"):
        # A killed run's mount (its image deleted, its loop device held).
        while _mounted(folder):
            if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
                break
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
        with image.open("wb") as handle:
            handle.truncate(IMAGE_BYTES)
        made = all(
            subprocess.run(command, check=False, capture_output=True).returncode == 0
            for command in (
                ["mkfs.ext4", "-q", "-F", str(image)],
                ["mount", "-o", "loop", str(image), str(folder)],
            )
        )
        if made:
            try:
                yield f"an ext4 of its own, loop-mounted ({journal_of(folder)})"
            finally:
                subprocess.run(["umount", "--lazy", str(folder)], check=False)
                image.unlink()
            return
        image.unlink()
    yield f"a folder of the work folder's filesystem ({journal_of(folder)})"


def _mounted(folder: Path) -> bool:
    return (
        subprocess.run(
            ["findmnt", "--mountpoint", str(folder)], check=False, capture_output=True
        ).returncode
        == 0
    )
