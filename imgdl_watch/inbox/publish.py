"""A job's end in the inbox: its list to done/ (failures to failed/), or to failed/ as it is.

A name already taken there gets a number (`cats.1.txt`): nothing is
overwritten. A list whose name is too long for that number and for its
report's name is published under its job's (shortened) stem instead
(`Claim.published_name`). Every daemon picks free names under the inbox's
publish lock, so that a name found free is still free when the rename lands.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ..naming import list_suffix
from .locks import PUBLISH_LOCK, holding

if TYPE_CHECKING:
    from .claims import Claim
    from .lifecycle import Inbox


def finish_here(inbox: Inbox, claim: Claim, *, failed: int) -> str:
    """Publish a finished job of `inbox`'s own folder: list to done/, report
    beside it, failures to failed/. Returns where the list went."""
    report = inbox.parts(claim.stem)
    with holding(inbox.locks, PUBLISH_LOCK):
        done_path = move_unique(claim.path, inbox.done, claim.published_name)
        done_stem = os.path.basename(done_path)[: -len(claim.suffix)]
        move_unique(report.report, inbox.done, f"{done_stem}.report.jsonl")
        if failed:
            move_unique(report.failed, inbox.failed, claim.published_name)
        else:
            _unlink_quietly(report.failed)
    return done_path


def fail_here(inbox: Inbox, claim: Claim) -> str:
    """A list of `inbox`'s own folder that could not run at all goes to
    failed/ as it is, to retry later; its report parts go."""
    report = inbox.parts(claim.stem)
    with holding(inbox.locks, PUBLISH_LOCK):
        path = move_unique(claim.path, inbox.failed, claim.published_name)
    _unlink_quietly(report.report)
    _unlink_quietly(report.failed)
    return path


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def move_unique(source: str, folder: str, name: str) -> str:
    """Move `source` into `folder` as `name`, or `stem.N.ext` if that is taken.

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
        candidate = name if n == 0 else f"{base}.{n}{suffix}"
        target = os.path.join(folder, candidate)
        if os.path.lexists(target):
            continue
        os.rename(source, target)
        return target
    raise FileExistsError(errno.EEXIST, f"no free name for {name}", folder)
