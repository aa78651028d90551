from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgdl_watch.inbox import Inbox, Seen, SettleTracker, is_list_name


def test_list_names() -> None:
    assert is_list_name("cats.txt") and is_list_name("CATS.TXT")
    for name in (
        ".cats.txt",
        "~cats.txt",
        "#cats.txt#",
        "cats.txt~",
        "cats.txt.swp",
        "cats.csv",
        ".#cats.txt",
    ):
        assert not is_list_name(name)


def test_settle_waits_for_quiet_and_takes_old_files_at_once() -> None:
    tracker = SettleTracker(settle_s=1.0)
    tracker.observe("old.txt", Seen(10, 1), now=100.0, mtime_age_s=60)
    tracker.observe("new.txt", Seen(10, 2), now=100.0, mtime_age_s=0)
    assert tracker.ready(100.0) == ["old.txt"]
    tracker.observe("new.txt", Seen(20, 3), now=100.9, mtime_age_s=0)  # still growing
    assert tracker.ready(101.5) == ["old.txt"]
    assert tracker.next_deadline(101.5) == 101.9
    tracker.forget("old.txt")
    tracker.observe("new.txt", Seen(20, 3), now=101.8, mtime_age_s=0.9)  # unchanged
    assert tracker.ready(101.9) == ["new.txt"]
    tracker.forget_missing(set())
    assert tracker.ready(1000) == []


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    box = Inbox(str(tmp_path / "inbox"))
    box.ensure_layout()
    return box


def test_scan_ignores_symlinks_dirs_and_others(inbox: Inbox, tmp_path: Path) -> None:
    root = Path(inbox.root)
    (root / "a.txt").write_text("x")
    (root / "b.csv").write_text("x")
    (root / "dir.txt").mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", root / "link.txt")
    (root / ".hidden.txt").write_text("x")
    found, ignored = inbox.scan()
    assert list(found) == ["a.txt"]
    assert sorted(ignored) == ["b.csv", "dir.txt", "link.txt"]


def test_claim_is_exclusive_and_finish_never_overwrites(inbox: Inbox) -> None:
    root = Path(inbox.root)
    (root / "cats.txt").write_text("one\n")
    claim = inbox.claim("cats.txt")
    assert claim is not None and not (root / "cats.txt").exists()
    assert inbox.claim("cats.txt") is None  # already gone
    (root / "cats.txt").write_text("two\n")
    assert inbox.claim("cats.txt") is None  # same stem is running
    assert inbox.leftovers() == []  # locked by us
    paths = inbox.report_paths(claim.stem)
    Path(paths.report).write_text("{}\n")
    Path(paths.failed).write_text("http://x/a.jpg\n")
    inbox.finish(claim, paths, failed=1)
    again = inbox.claim("cats.txt")
    assert again is not None
    paths = inbox.report_paths(again.stem)
    Path(paths.report).write_text("{}\n")
    Path(paths.failed).write_text("http://x/b.jpg\n")
    inbox.finish(again, paths, failed=1)
    assert sorted(os.listdir(inbox.done)) == [
        "cats.1.report.jsonl",
        "cats.1.txt",
        "cats.report.jsonl",
        "cats.txt",
    ]
    assert (Path(inbox.done) / "cats.txt").read_text() == "one\n"
    assert sorted(os.listdir(inbox.failed)) == ["cats.1.txt", "cats.txt"]
    assert os.listdir(inbox.processing) == []


def test_leftovers_of_a_dead_owner_are_resumable(inbox: Inbox) -> None:
    (Path(inbox.processing) / "left.txt").write_text("x\n")
    first = inbox.leftovers()
    assert [c.stem for c in first] == ["left"]
    assert inbox.leftovers() == []  # held
    first[0].release()
    assert [c.stem for c in inbox.leftovers()] == ["left"]


def test_interrupted_claim_is_completed(inbox: Inbox) -> None:
    root = Path(inbox.root)
    (root / "cats.txt").write_text("x\n")
    os.link(
        root / "cats.txt", Path(inbox.processing) / "cats.txt"
    )  # killed between link and unlink
    assert inbox.claim("cats.txt") is None
    assert not (root / "cats.txt").exists()


@pytest.mark.parametrize(
    "name",
    ["c" * 251 + ".txt", "é" * 125 + ".TXT", "k" * 236 + ".txt"],
    ids=["ascii-255-bytes", "utf8-254-bytes", "longest-kept-as-is"],
)
def test_a_list_with_the_longest_name_finishes_twice(inbox: Inbox, name: str) -> None:
    # Its report (".report.jsonl") and a number in done/ once took the name
    # past 255 bytes: the job failed, stayed in processing/, and was tried
    # again at every rescan, for ever.
    root = Path(inbox.root)
    stems = set()
    for attempt in ("one\n", "two\n"):
        (root / name).write_text(attempt)
        claim = inbox.claim(name)
        assert claim is not None
        stems.add(claim.stem)
        paths = inbox.report_paths(claim.stem)
        Path(paths.report).write_text("{}\n")
        Path(paths.failed).write_text("http://x/a.jpg\n")
        inbox.finish(claim, paths, failed=1)
    (stem,) = stems
    kept = name if len(name.encode()) <= 240 else stem + ".txt"
    kept_stem = kept[:-4]
    assert sorted(os.listdir(inbox.done)) == sorted(
        [kept, f"{kept_stem}.report.jsonl", f"{kept_stem}.1.txt", f"{kept_stem}.1.report.jsonl"]
    )
    assert (Path(inbox.done) / kept).read_text() == "one\n"
    assert sorted(os.listdir(inbox.failed)) == sorted([kept, f"{kept_stem}.1.txt"])
    assert os.listdir(inbox.processing) == []
