"""An inbox's folders and names: what is a list, and where a running job writes.

    INBOX/cats.txt          dropped by a user; taken once it has settled
    INBOX/processing/       claimed lists (`claims`)
    INBOX/done/             finished lists, with <name>.report.jsonl beside each
    INBOX/failed/           the URLs that failed, one per line, ready to re-drop
    INBOX/.imgdl-watch/     the daemons' own: status files, and the locks

Pure: names and paths only.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..naming import list_suffix

# The suffix of the plainest list; every list suffix is in `naming.LIST_SUFFIXES`.
LIST_SUFFIX = ".txt"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
STATE = ".imgdl-watch"
# The daemons' locks, inside the state folder.
LOCKS = "locks"
# A finished list's report, in done/ beside it: `cats.txt`, `cats.report.jsonl`.
REPORT_SUFFIX = ".report.jsonl"
# Editors and downloaders write these while a file is not finished yet.
TEMP_PREFIXES = (".", "~", "#")


# The folders of an inbox that are not lists nor categories.
OWN_FOLDERS = (PROCESSING, DONE, FAILED)
# Why `scan` passes over an entry, as `file_ignored` says it.
NOT_A_LIST = "not a regular list file (*.txt, *.csv, *.tsv, *.jsonl, optionally .gz or .zst)"
NOT_A_CATEGORY = "a folder that no category of the config names"
# A list's name on something that is not a regular file.
SYMLINK_NOT_A_LIST = "a symlink, never followed: move or copy the list itself into the inbox"
FOLDER_NOT_A_LIST = "a folder, not a list file"
# A job left in processing/ by a category that the config no longer names (a
# restart, or a reload, after its table was taken out): not resumed, since
# its settings are gone, and said rather than left there without a word.
STRANDED = (
    "an unfinished job of a category the config no longer names: not resumed; add its"
    " [category.NAME] table back to finish it, or move the list into the inbox to run"
    " it again with the inbox's settings"
)
NAMED_AS_CATEGORY = "a top-level list may not be named after a category (its output folder)"
CATEGORY_SYMLINK = "a category's folder, but a symlink: not followed, its lists wait"
CATEGORY_NOT_A_FOLDER = "a category's name, but not a folder: its lists wait"
# One of processing/, done/ and failed/ (an inbox's or a category's), or the
# state folder, replaced by a user of the inbox: the daemon never follows it,
# and never removes it.
FOLDER_PLANTED = (
    "a symlink or a file in place of one of the inbox's own folders (processing/, done/,"
    " failed/, .imgdl-watch/): never followed, lists wait until it is moved away"
    " (the daemon then makes the folder again)"
)
# Why a claimed entry goes to failed/ unread, as `file_ignored` says it.
NOT_A_FILE_CLAIMED = (
    "not a regular file once claimed (a symlink, folder or device): moved to failed/, unread"
)
WAITING_CLAIMED = (
    "not a regular file, or one the daemon may not read, once claimed; it could not be"
    " moved to failed/ either, so it waits in processing/, unread, tried again at each rescan"
)
NOT_READABLE_CLAIMED = (
    "the daemon may not read it: moved to failed/, unread; make it readable by the"
    " daemon (a umask of 022 or 002 when it is written) and drop it again"
)


def is_list_name(name: str) -> bool:
    """A list is `*.txt`, `*.csv`, `*.tsv` or `*.jsonl` (optionally `.gz` or
    `.zst`), neither hidden nor an editor's or tool's temp name."""
    return list_suffix(name) is not None and not name.startswith(TEMP_PREFIXES)


class Parts(NamedTuple):
    """Where a running job's report and its list of failures are written, in
    processing/ (hidden), until `Inbox.finish` publishes them."""

    report: str
    failed: str


def parts_in(processing: str, stem: str) -> Parts:
    """The hidden report and failures of a job of `stem`, in the folder `processing`."""
    return Parts(
        report=os.path.join(processing, f".{stem}.report.part"),
        failed=os.path.join(processing, f".{stem}.failed.part"),
    )
