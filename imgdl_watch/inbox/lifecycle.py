"""The inbox lifecycle: which files are lists, when they are complete, and
where they go.

    INBOX/cats.txt          dropped by a user; taken once it has settled
    INBOX/processing/       claimed lists, each locked by the daemon running it
    INBOX/done/             finished lists, with <name>.report.jsonl beside each
    INBOX/failed/           the URLs that failed, one per line, ready to re-drop

**Complete.** A file is taken once it has settled (`settle`).

**Claim.** A list is claimed under its stem's lock (`locks`): the claimer
takes the lock of `job_stem(name)`, makes sure no job of that stem waits in
`processing/` already, and renames the list to `processing/<stem>.txt`. The
rename needs only write access to the inbox, so it works for a list any
user dropped, with any mode (a hard link would not: under
`fs.protected_hardlinks`, the default, a service may not link a file it
does not own). Only one renamer can win, since the source vanishes; the
lock makes sure the target never exists when it lands, so nothing is ever
replaced. Nothing in the inbox is ever removed by name.

The lock is then held until the job is published or given up: it is the
daemon's "I am running this". A killed daemon's lock goes with its
process, so any daemon may resume that job; a stem whose lock is held
waits, so two lists of one stem never run at once (they would share a
folder and a report).

**Finish.** The list moves to `done/` and its report beside it; failures go to
`failed/`. A name already taken there gets a number (`cats.1.txt`): nothing
is overwritten. A list whose name is too long for that number and for its
report's name is published under its job's (shortened) stem instead.

**Formats.** A list is `*.txt`, `*.csv`, `*.tsv` or `*.jsonl`, each
optionally compressed (`.gz`, `.zst`): the suffix travels with the list
(`processing/cats.csv.gz`, `done/cats.1.csv.gz`), and its stem is its job's.

**Categories.** A subfolder that the operator's config names (`INBOX/art/`)
is an inbox of its own, with its own processing/, done/ and failed/, and
its locks in a folder of their own (`locks/art/`), so that `art/cats` and
`cats` are distinct stems. `Inbox` scans its categories with itself and
hands each claim, finish and fail to the category's own inbox. A subfolder
that no category names is ignored, and so is a top-level list named after
a category (its output folder is the category's).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from ..naming import JOB_NAME_ROOM, MAX_NAME_BYTES, job_stem, list_suffix
from .locks import LOCK_SUFFIX, PUBLISH_LOCK, HeldLock, holding, try_lock
from .settle import Seen

# The suffix of the plainest list; every list suffix is in `naming.LIST_SUFFIXES`.
LIST_SUFFIX = ".txt"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
STATE = ".imgdl-watch"
# The daemons' locks, inside the state folder.
LOCKS = "locks"
# Editors and downloaders write these while a file is not finished yet.
_TEMP_PREFIXES = (".", "~", "#")


# The folders of an inbox that are not lists nor categories.
_OWN_FOLDERS = (PROCESSING, DONE, FAILED)
# Why `scan` passes over an entry, as `file_ignored` says it.
NOT_A_LIST = "not a regular list file (*.txt, *.csv, *.tsv, *.jsonl, optionally .gz or .zst)"
NOT_A_CATEGORY = "a folder that no category of the config names"
NAMED_AS_CATEGORY = "a top-level list may not be named after a category (its output folder)"
CATEGORY_SYMLINK = "a category's folder, but a symlink: not followed, its lists wait"
CATEGORY_NOT_A_FOLDER = "a category's name, but not a folder: its lists wait"


def is_list_name(name: str) -> bool:
    """A list is `*.txt`, `*.csv`, `*.tsv` or `*.jsonl` (optionally `.gz` or
    `.zst`), neither hidden nor an editor's or tool's temp name."""
    return list_suffix(name) is not None and not name.startswith(_TEMP_PREFIXES)


class Parts(NamedTuple):
    """Where a running job's report and its list of failures are written, in
    processing/ (hidden), until `Inbox.finish` publishes them."""

    report: str
    failed: str


@dataclass(slots=True)
class Claim:
    """A list this daemon holds: its processing file, open, under its stem's lock."""

    stem: str
    path: str
    fd: int
    original: str
    lock: HeldLock
    # The category whose subfolder it came from; "" at the top of the inbox.
    category: str = ""

    @property
    def job(self) -> str:
        """The job's name: its stem, under its category's (`art/cats`)."""
        return f"{self.category}/{self.stem}" if self.category else self.stem

    @property
    def suffix(self) -> str:
        """The list's suffix, in lower case, as its processing/ name has it."""
        return (list_suffix(self.original) or LIST_SUFFIX).lower()

    def release(self) -> None:
        """Close the list and let go of the stem (plain syscalls: safe when
        cancelled). Once is enough; again does nothing."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.lock.release()

    @property
    def published_name(self) -> str:
        """The list's name in done/ and failed/: the one it was dropped with,
        unless that is too long to take a number and a report beside it."""
        suffix = self.suffix
        stem_bytes = len(os.fsencode(self.original)) - len(suffix.encode())
        if stem_bytes + JOB_NAME_ROOM <= MAX_NAME_BYTES:
            return self.original
        return self.stem + suffix


class Inbox:
    """An inbox folder: its lists, its processing/, done/ and failed/, and its
    categories (each an `Inbox` of its own, over a subfolder)."""

    def __init__(
        self,
        root: str,
        *,
        categories: Iterable[str] = (),
        category: str = "",
        state: str | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        self.processing = os.path.join(self.root, PROCESSING)
        self.done = os.path.join(self.root, DONE)
        self.failed = os.path.join(self.root, FAILED)
        # The daemons' own files (status), hidden from users and from scans;
        # a category's are its inbox's, with its locks in a folder of their own.
        self.state = state or os.path.join(self.root, STATE)
        self.category = category
        self.locks = os.path.join(self.state, LOCKS, *([category] if category else []))
        self.categories: tuple[str, ...] = ()
        self.set_categories(categories)

    def set_categories(self, names: Iterable[str]) -> None:
        """The categories the config names now (at start, and after a reload).

        A job of a category dropped meanwhile still finishes in its folder:
        `_of` makes its inbox from the name alone."""
        self.categories = tuple(sorted(set(names)))

    def _of(self, category: str) -> Inbox:
        if not category:
            return self
        return Inbox(os.path.join(self.root, category), category=category, state=self.state)

    def category_folders(self) -> list[str]:
        return [os.path.join(self.root, name) for name in self.categories]

    def ensure_layout(self) -> None:
        """Make the inbox's folders, and its categories' where it can: a
        category's folder that cannot be one (a file, a symlink, planted by a
        user of the inbox) is the scan's to report, and stops nothing else."""
        for folder in (self.root, self.processing, self.done, self.failed, self.state, self.locks):
            os.makedirs(folder, exist_ok=True)
        for name in self.categories:
            self._of(name).usable()

    def usable(self) -> str | None:
        """A category's inbox: make its folders if need be; why it cannot be
        used (a symlink, not a folder), or None."""
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            return CATEGORY_SYMLINK
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return CATEGORY_NOT_A_FOLDER
        try:
            for folder in (self.root, self.processing, self.done, self.failed, self.locks):
                os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            return f"{CATEGORY_NOT_A_FOLDER}: {exc.strerror}"
        return None

    def scan(self) -> tuple[dict[str, Seen], list[tuple[str, str]]]:
        """Lists in the inbox and its categories with their stat (a category's
        as `art/cats.txt`), and entries that are ignored, with why (a
        category's folder that cannot be used among them)."""
        found: dict[str, Seen] = {}
        ignored: list[tuple[str, str]] = []
        self._scan_folder(found, ignored)
        for name in self.categories:
            category = self._of(name)
            problem = category.usable()
            if problem is not None:
                ignored.append((name, problem))
                continue
            try:
                category._scan_folder(found, ignored)
            except OSError:
                continue  # replaced while we looked: the next scan says how
        return found, ignored

    def _scan_folder(self, found: dict[str, Seen], ignored: list[tuple[str, str]]) -> None:
        for folder in (self.processing, self.done, self.failed):
            if not os.path.isdir(folder):
                raise FileNotFoundError(errno.ENOENT, "inbox folder is missing", folder)
        prefix = f"{self.category}/" if self.category else ""
        with os.scandir(self.root) as entries:
            for entry in entries:
                name = entry.name
                if name in _OWN_FOLDERS or (not prefix and name in self.categories):
                    continue
                if not is_list_name(name):
                    if not name.startswith(_TEMP_PREFIXES):
                        ignored.append((prefix + name, self._why_not(entry)))
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        ignored.append((prefix + name, NOT_A_LIST))
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not prefix and job_stem(name) in self.categories:
                    ignored.append((name, NAMED_AS_CATEGORY))
                    continue
                found[prefix + name] = Seen(st.st_size, st.st_mtime_ns)

    def _why_not(self, entry: os.DirEntry[str]) -> str:
        try:
            folder = entry.is_dir(follow_symlinks=False)
        except OSError:
            folder = False
        return NOT_A_CATEGORY if folder and not self.category else NOT_A_LIST

    def parts(self, stem: str) -> Parts:
        return Parts(
            report=os.path.join(self.processing, f".{stem}.report.part"),
            failed=os.path.join(self.processing, f".{stem}.failed.part"),
        )

    def claim(self, name: str) -> Claim | None:
        """Take `INBOX/name` into `processing/`. None when it is not ours to take now:
        gone (another daemon took it), or its stem is busy (running, or waiting
        in processing/ to be resumed, which comes first). A category's list is
        named as `scan` found it: `art/cats.txt`."""
        category, slash, rest = name.rpartition("/")
        if slash:
            inbox = self._of(category)
            return inbox.claim(rest) if inbox.usable() is None else None
        stem = job_stem(name)
        lock = try_lock(self.locks, stem + LOCK_SUFFIX)
        if lock is None:
            return None
        target = os.path.join(self.processing, stem + (list_suffix(name) or LIST_SUFFIX).lower())
        try:
            if self._waiting(stem):
                lock.release()
                return None
            os.rename(os.path.join(self.root, name), target)
        except FileNotFoundError:
            lock.release()  # taken already, or processing/ itself is gone (a scan recreates it)
            return None
        except BaseException:
            lock.release()
            raise
        return self._open_claimed(stem, target, name, lock)

    def _waiting(self, stem: str) -> bool:
        """Whether a list of `stem`, in any format, is in processing/ (call under its lock)."""
        return any(
            is_list_name(name) and job_stem(name) == stem for name in os.listdir(self.processing)
        )

    def leftovers(self) -> list[Claim]:
        """Jobs in `processing/` (the inbox's and its categories') that no live
        daemon holds: ours to resume."""
        claims = self._leftovers()
        for name in self.categories:
            category = self._of(name)
            if category.usable() is not None:
                continue  # the scan says why
            try:
                claims.extend(category._leftovers())
            except OSError:
                continue  # replaced while we looked: the next scan says how
        return claims

    def _leftovers(self) -> list[Claim]:
        claims = []
        for name in sorted(os.listdir(self.processing)):
            if not is_list_name(name):
                continue
            stem = job_stem(name)
            lock = try_lock(self.locks, stem + LOCK_SUFFIX)
            if lock is None:
                continue  # running here or in another daemon
            path = os.path.join(self.processing, name)
            # Its daemon may have published it between our listing and our lock.
            if not os.path.lexists(path):
                lock.release()
                continue
            claim = self._open_claimed(stem, path, name, lock)
            if claim is not None:
                claims.append(claim)
        return claims

    def _open_claimed(self, stem: str, path: str, original: str, lock: HeldLock) -> Claim | None:
        """Open a list we hold the stem of. Something that is not a regular file
        (a symlink or a folder renamed in after the scan looked) goes to
        failed/ as it is, unread."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                lock.release()
                raise
            fd = -1
        if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            return Claim(stem, path, fd, original, lock, self.category)
        if fd >= 0:
            os.close(fd)
        try:
            with holding(self.locks, PUBLISH_LOCK):
                _move_unique(path, self.failed, os.path.basename(path))
        finally:
            lock.release()
        return None

    def parts_of(self, claim: Claim) -> Parts:
        return self._of(claim.category).parts(claim.stem)

    def finish(self, claim: Claim, *, failed: int) -> str:
        """Publish a finished job: list to done/, report beside it, failures to
        failed/. The claim is still held: the caller releases it."""
        if claim.category != self.category:
            return self._of(claim.category).finish(claim, failed=failed)
        report = self.parts(claim.stem)
        with holding(self.locks, PUBLISH_LOCK):
            done_path = _move_unique(claim.path, self.done, claim.published_name)
            done_stem = os.path.basename(done_path)[: -len(claim.suffix)]
            _move_unique(report.report, self.done, f"{done_stem}.report.jsonl")
            if failed:
                _move_unique(report.failed, self.failed, claim.published_name)
            else:
                _unlink_quietly(report.failed)
        return done_path

    def fail(self, claim: Claim) -> str:
        """A list that could not run at all goes to failed/ as it is, to retry
        later. The claim is still held: the caller releases it."""
        if claim.category != self.category:
            return self._of(claim.category).fail(claim)
        report = self.parts(claim.stem)
        with holding(self.locks, PUBLISH_LOCK):
            path = _move_unique(claim.path, self.failed, claim.published_name)
        _unlink_quietly(report.report)
        _unlink_quietly(report.failed)
        return path


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _move_unique(source: str, folder: str, name: str) -> str:
    """Move `source` into `folder` as `name`, or `stem.N.ext` if that is taken.

    Call under the publish lock: every daemon picks free names under it, so
    the name found free is still free when the rename lands. (A rename, not a
    link and an unlink: the list may belong to another user, see `claim`.)
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
