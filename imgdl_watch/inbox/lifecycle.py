"""The inbox lifecycle: which files are lists, when they are complete, and
where they go.

    INBOX/cats.txt          dropped by a user; taken once it has settled
    INBOX/processing/       claimed lists, each locked by the daemon running it
    INBOX/done/             finished lists, with <name>.report.jsonl beside each
    INBOX/failed/           the URLs that failed, one per line, ready to re-drop

Each step in a module of its own:

    layout     the folders, and which names are lists (`is_list_name`)
    settle     complete: a file is taken once it has settled
    folders    the inbox's own folders, opened so that a symlink planted in
               place of one (or of a category's) is refused, never followed
    claims     claim: the list renamed into processing/ under its stem's lock,
               held until the job is published; leftovers resumed after a crash
    publish    finish: the list to done/ with its report, failures to failed/,
               under numbered names (`cats.1.txt`) when taken; nothing is
               overwritten, and nothing in the inbox is removed by name

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

import contextlib
import os
import stat
from collections.abc import Iterable

from ..naming import job_stem
from .claims import Claim, claim_here, leftovers_here
from .folders import (
    PlantedFolder,
    make_own_folders,
    open_folder,
    open_own_folder,
    opened,
    planted,
)
from .layout import (
    CATEGORY_NOT_A_FOLDER,
    CATEGORY_SYMLINK,
    DONE,
    FAILED,
    FOLDER_NOT_A_LIST,
    FOLDER_PLANTED,
    LOCKS,
    NAMED_AS_CATEGORY,
    NOT_A_CATEGORY,
    NOT_A_LIST,
    OWN_FOLDERS,
    PROCESSING,
    STATE,
    STRANDED,
    SYMLINK_NOT_A_LIST,
    TEMP_PREFIXES,
    Parts,
    is_list_name,
    parts_in,
)
from .publish import fail_here, finish_here
from .settle import Seen

__all__ = [
    "CATEGORY_NOT_A_FOLDER",
    "CATEGORY_SYMLINK",
    "FOLDER_PLANTED",
    "NAMED_AS_CATEGORY",
    "NOT_A_CATEGORY",
    "NOT_A_LIST",
    "STRANDED",
    "Claim",
    "Inbox",
    "Parts",
    "PlantedFolder",
    "is_list_name",
]


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
        top: str | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        # The operator's inbox, and the way down from it to this one's folder:
        # every folder below `top` is opened without following a symlink.
        self.top = top or self.root
        self._under: tuple[str, ...] = (category,) if category else ()
        self.processing = os.path.join(self.root, PROCESSING)
        self.done = os.path.join(self.root, DONE)
        self.failed = os.path.join(self.root, FAILED)
        # The daemons' own files (status), hidden from users and from scans;
        # a category's are its inbox's, with its locks in a folder of their own.
        self.state = state or os.path.join(self.root, STATE)
        self.category = category
        # The locks' folder, as the way to it from `top` (never followed)
        # and as a path (to say, and to make).
        self.locks_way = (STATE, LOCKS, *([category] if category else []))
        self.locks = os.path.join(self.top, *self.locks_way)
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
        return Inbox(
            os.path.join(self.root, category), category=category, state=self.state, top=self.root
        )

    def _own(self, claim: Claim) -> Inbox:
        """The inbox (this one, or a category's) whose folders `claim` is of."""
        return self if claim.category == self.category else self._of(claim.category)

    def folder(self, *names: str) -> contextlib.AbstractContextManager[int]:
        """This inbox's folder, or one of its own (`processing`, ...), open
        (`folders.opened`): never through a symlink."""
        return opened(self.top, (*self._under, *names))

    def open_folder(self, *names: str) -> int:
        """`folder`'s descriptor, for the caller to close."""
        return open_folder(self.top, (*self._under, *names))

    def state_folder(self) -> contextlib.AbstractContextManager[int]:
        """The daemons' own folder (status files, locks), open: never through
        a symlink."""
        return opened(self.top, (STATE,))

    def _own_ways(self) -> list[tuple[str, ...]]:
        """The ways from `top` to this inbox's own folders, made by
        `ensure_layout`: processing/, done/ and failed/, and its locks'."""
        return [(*self._under, name) for name in OWN_FOLDERS] + [self.locks_way]

    def _check_own_folders(self) -> None:
        """Raise FileNotFoundError when one of processing/, done/ and failed/
        (and at the top, the state folder and its locks) is missing,
        `PlantedFolder` when one is a symlink or not a folder."""
        ways: list[tuple[str, ...]] = [(*self._under, name) for name in OWN_FOLDERS]
        if not self.category:
            ways += [(STATE,), (STATE, LOCKS)]
        for way in ways:
            self._check_way(way)

    def _check_way(self, way: tuple[str, ...]) -> None:
        """Open and close `top/way...`: raise `PlantedFolder` when a folder on
        the way is a symlink or not a folder, its OSError when it is missing."""
        os.close(open_own_folder(self.top, way))

    def category_folders(self) -> list[str]:
        return [os.path.join(self.root, name) for name in self.categories]

    def ensure_layout(self) -> None:
        """Make the inbox's folders, and its categories' where it can: a
        category's folder that cannot be one (a file, a symlink, planted by a
        user of the inbox) is the scan's to report, and stops nothing else;
        so is one of the inbox's own folders that is a symlink or a file."""
        os.makedirs(self.root, exist_ok=True)
        for way in self._own_ways():
            try:
                make_own_folders(self.top, way)
            except PlantedFolder:
                pass  # a file or a symlink where an own folder goes: `scan` says so
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
            for way in self._own_ways():
                make_own_folders(self.top, way)
        except PlantedFolder:
            pass  # a file where an own folder goes: said below
        except OSError as exc:
            return f"{CATEGORY_NOT_A_FOLDER}: {exc.strerror}"
        try:
            self._check_own_folders()
        except PlantedFolder:
            return FOLDER_PLANTED
        except OSError as exc:
            return f"{CATEGORY_NOT_A_FOLDER}: {exc.strerror}"
        return None

    def scan(self) -> tuple[dict[str, Seen], list[tuple[str, str]]]:
        """Lists in the inbox and its categories with their stat (a category's
        as `art/cats.txt`), and entries that are ignored, with why (a
        category's folder that cannot be used among them). Raises
        FileNotFoundError when one of the inbox's own folders is missing,
        `PlantedFolder` when one is a symlink or a file."""
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
        self._check_own_folders()
        prefix = f"{self.category}/" if self.category else ""
        with self.folder() as fd, os.scandir(fd) as entries:
            for entry in entries:
                name = entry.name
                if name in OWN_FOLDERS or (not prefix and name in self.categories):
                    continue
                if not is_list_name(name):
                    if not name.startswith(TEMP_PREFIXES):
                        why = self._why_not(entry)
                        ignored.append((prefix + name, why))
                        if why == NOT_A_CATEGORY:
                            ignored += [(job, STRANDED) for job in _stranded(fd, name)]
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        ignored.append((prefix + name, _not_a_file(entry)))
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
        return parts_in(self.processing, stem)

    def claim(self, name: str) -> Claim | None:
        """Take `INBOX/name` into `processing/`. None when it is not ours to take now:
        gone (another daemon took it), or its stem is busy (running, or waiting
        in processing/ to be resumed, which comes first). A category's list is
        named as `scan` found it: `art/cats.txt`."""
        if self._locks_planted():
            return None  # the scan says so
        category, slash, rest = name.rpartition("/")
        if slash:
            inbox = self._of(category)
            return claim_here(inbox, rest) if inbox.usable() is None else None
        return claim_here(self, name)

    def _refuse_planted_locks(self) -> None:
        """Raise `PlantedFolder` when the state folder or its locks/ is a
        symlink or a file: a lock taken through it would be a file made
        wherever it leads. (Missing is no refusal: taking a lock makes it.)"""
        with contextlib.suppress(FileNotFoundError):
            self._check_way((STATE, LOCKS))

    def _locks_planted(self) -> bool:
        try:
            self._refuse_planted_locks()
        except PlantedFolder:
            return True
        return False

    def leftovers(self) -> list[Claim]:
        """Jobs in `processing/` (the inbox's and its categories') that no live
        daemon holds: ours to resume."""
        if self._locks_planted():
            return []  # the scan says so
        try:
            claims = leftovers_here(self)
        except OSError as exc:
            if not planted(exc):
                raise
            claims = []  # processing/ is planted: the scan says so
        for name in self.categories:
            category = self._of(name)
            if category.usable() is not None:
                continue  # the scan says why
            try:
                claims.extend(leftovers_here(category))
            except OSError:
                continue  # replaced while we looked: the next scan says how
        return claims

    def parts_of(self, claim: Claim) -> Parts:
        return self._of(claim.category).parts(claim.stem)

    def finish(self, claim: Claim, *, failed: int) -> str:
        """Publish a finished job: list to done/, report beside it, failures to
        failed/. The claim is still held: the caller releases it. Raises
        `PlantedFolder` (the job is tried again later) rather than take the
        publish lock through a planted state folder."""
        self._refuse_planted_locks()
        return finish_here(self._own(claim), claim, failed=failed)

    def fail(self, claim: Claim) -> str:
        """A list that could not run at all goes to failed/ as it is, to retry
        later. The claim is still held: the caller releases it."""
        self._refuse_planted_locks()
        return fail_here(self._own(claim), claim)


def _not_a_file(entry: os.DirEntry[str]) -> str:
    """Why an entry with a list's name is not taken: a symlink, a folder, or else."""
    try:
        if entry.is_symlink():
            return SYMLINK_NOT_A_LIST
        if entry.is_dir(follow_symlinks=False):
            return FOLDER_NOT_A_LIST
    except OSError:
        pass
    return NOT_A_LIST


def _stranded(inbox_fd: int, folder: str) -> list[str]:
    """The lists in `folder/processing/` (a folder of the inbox that no
    category names): jobs of a category taken out of the config, which
    nobody resumes. Never through a symlink; [] when there is none."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        outer = os.open(folder, flags, dir_fd=inbox_fd)
        try:
            listed = os.open(PROCESSING, flags, dir_fd=outer)
        finally:
            os.close(outer)
        try:
            names = os.listdir(listed)
        finally:
            os.close(listed)
    except OSError:
        return []
    return [f"{folder}/{PROCESSING}/{name}" for name in sorted(names) if is_list_name(name)]
