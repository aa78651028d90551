"""A job's end in the inbox: its list to done/ (failures to failed/), or to failed/ as it is.

A name already taken there gets a number (`cats.1.txt`): nothing is
overwritten. A list whose name is too long for that number and for its
report's name is published under its job's (shortened) stem instead
(`Claim.published_name`). Every daemon picks free names under the inbox's
publish lock, so that a name found free is still free when the rename lands.
Each move goes from the claim's processing/ folder to done/ or failed/ as
`folders` opens them: never through a symlink planted in their place.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ..naming import STEM_XATTR, list_suffix
from .layout import DONE, FAILED, REPORT_SUFFIX
from .locks import PUBLISH_LOCK, holding

if TYPE_CHECKING:
    from .claims import Claim
    from .lifecycle import Inbox


def finish_here(inbox: Inbox, claim: Claim, *, failed: int) -> str:
    """Publish a finished job of `inbox`'s own folder: list to done/, report
    beside it, failures to failed/. Returns where the list went."""
    report = inbox.parts(claim.stem)
    source = claim.folder_fd
    # Both folders are opened before anything moves: one that cannot be (a
    # symlink in its place) leaves the job whole in processing/.
    with (
        holding(inbox.top, inbox.locks_way, PUBLISH_LOCK),
        inbox.folder(DONE) as done_fd,
        inbox.folder(FAILED) as failed_fd,
    ):
        to_done, to_failed = (inbox.processing, inbox.done), (inbox.processing, inbox.failed)
        done_name = move_unique(
            source,
            claim.entry,
            done_fd,
            claim.published_name,
            paths=to_done,
            companion=REPORT_SUFFIX,
        )
        # Free, as the list's move made sure: the report is named after it.
        report_name = done_name[: -len(claim.suffix)] + REPORT_SUFFIX
        move_unique(source, _entry(report.report), done_fd, report_name, paths=to_done)
        if failed:
            failures = _entry(report.failed)
            _tag_stem(source, failures, claim.stem)
            move_unique(source, failures, failed_fd, claim.published_name, paths=to_failed)
        else:
            _unlink_quietly(source, _entry(report.failed))
    return os.path.join(inbox.done, done_name)


def fail_here(inbox: Inbox, claim: Claim) -> str:
    """A list of `inbox`'s own folder that could not run at all goes to
    failed/ as it is, to retry later; its report parts go."""
    report = inbox.parts(claim.stem)
    source = claim.folder_fd
    with holding(inbox.top, inbox.locks_way, PUBLISH_LOCK), inbox.folder(FAILED) as failed_fd:
        to_failed = (inbox.processing, inbox.failed)
        name = move_unique(source, claim.entry, failed_fd, claim.published_name, paths=to_failed)
    _unlink_quietly(source, _entry(report.report))
    _unlink_quietly(source, _entry(report.failed))
    return os.path.join(inbox.failed, name)


def _tag_stem(folder_fd: int, name: str, stem: str) -> None:
    """Say in the failed list `name` (ours: the job wrote it) which stem it
    failed in (`naming.STEM_XATTR`): published under a number and dropped
    again, it runs as that job. Without user attributes, it runs as its name's."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError:
        return  # the move says what is wrong
    try:
        os.setxattr(fd, STEM_XATTR, stem.encode("utf-8"))
    except OSError:
        pass  # no user attributes on this filesystem
    finally:
        os.close(fd)


def stem_tag(fd: int) -> bytes | None:
    """The stem a list says it failed in (`naming.STEM_XATTR`), if it says one."""
    try:
        return os.getxattr(fd, STEM_XATTR)
    except OSError:  # no tag (most lists), or no user attributes here
        return None


def _taken(folder_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _entry(path: str) -> str:
    return os.path.basename(path)


def _unlink_quietly(folder_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        pass


def move_unique(
    source_fd: int,
    source: str,
    folder_fd: int,
    name: str,
    *,
    paths: tuple[str, str],
    companion: str = "",
) -> str:
    """Move `source`, in the folder open at `source_fd`, into the folder open
    at `folder_fd` as `name`, or `stem.N.ext` if that is taken; the name it got.
    `paths`: the two folders' paths, which an OSError of the move names (the
    calls are relative to the descriptors, and would name the entries alone).
    `companion`: the suffix of a file that goes beside it under the same
    stem (`.report.jsonl`), whose name must be free too: so `pair.csv`
    after `pair.txt` is `pair.1.csv`, beside `pair.1.report.jsonl`.

    Call under the publish lock. (A rename, not a link and an unlink: the
    list may belong to another user, see `claims`.)
    """
    # A list keeps its whole suffix after the number (`cats.1.csv.gz`), so that
    # it is still a list when it is dropped again.
    suffix = list_suffix(name)
    if suffix is None:
        base, dot, ext = name.rpartition(".")
        suffix = f".{ext}" if dot else ""
    base = name[: len(name) - len(suffix)]
    for n in range(100_000):
        stem = base if n == 0 else f"{base}.{n}"
        candidate = stem + suffix
        if _taken(folder_fd, candidate) or (companion and _taken(folder_fd, stem + companion)):
            continue
        try:
            os.rename(source, candidate, src_dir_fd=source_fd, dst_dir_fd=folder_fd)
        except OSError as exc:
            source_path, target_path = (
                os.path.join(paths[0], source),
                os.path.join(paths[1], candidate),
            )
            raise OSError(exc.errno, exc.strerror, source_path, None, target_path) from exc
        return candidate
    raise FileExistsError(errno.EEXIST, f"no free name for {name}")
