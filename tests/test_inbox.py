from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from imgdl_watch.inbox.layout import FOLDER_NOT_A_LIST, SYMLINK_NOT_A_LIST
from imgdl_watch.inbox.lifecycle import (
    CATEGORY_NOT_A_FOLDER,
    CATEGORY_SYMLINK,
    FOLDER_PLANTED,
    NOT_A_CATEGORY,
    NOT_A_LIST,
    STRANDED,
    Claim,
    Inbox,
    PlantedFolder,
    is_list_name,
)
from imgdl_watch.inbox.settle import Seen, SettleTracker
from imgdl_watch.naming import STEM_XATTR


def test_list_names() -> None:
    assert is_list_name("cats.txt") and is_list_name("CATS.TXT")
    for name in ("cats.csv", "cats.tsv", "cats.jsonl", "cats.csv.gz", "c.JSONL.ZST", "c.txt.gz"):
        assert is_list_name(name), name
    for name in (
        ".cats.txt",
        "~cats.txt",
        "#cats.txt#",
        "cats.txt~",
        "cats.txt.swp",
        "cats.xlsx",
        "cats.gz",
        "cats.csv.bz2",
        ".csv",
        ".#cats.txt",
    ):
        assert not is_list_name(name), name


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
    (root / "c.xlsx").write_text("x")
    (root / "dir.txt").mkdir()
    (root / "photos").mkdir()  # a folder that no category names
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", root / "link.txt")
    (root / ".hidden.txt").write_text("x")
    found, ignored = inbox.scan()
    assert sorted(found) == ["a.txt", "b.csv"]
    assert sorted(ignored) == [
        ("c.xlsx", NOT_A_LIST),
        # A list's name, but said for what it is (it said "not a regular list
        # file (*.txt, ...)" of names that end in .txt).
        ("dir.txt", FOLDER_NOT_A_LIST),
        ("link.txt", SYMLINK_NOT_A_LIST),
        ("photos", NOT_A_CATEGORY),
    ]


def test_a_job_left_by_a_category_taken_out_of_the_config_is_said(
    tmp_path: Path,
) -> None:
    # Its job interrupted, the category's table taken out and the daemon
    # restarted: the list stayed in photo/processing/ for good, and the only
    # word was that photo/ is a folder no category names.
    box = Inbox(str(tmp_path / "inbox"), categories=["photo"])
    box.ensure_layout()
    (Path(box.root) / "photo" / "processing" / "ph2.txt").write_text("http://x/a.jpg\n")
    (Path(box.root) / "photo" / "processing" / ".ph2.report.part").write_text("")
    box.set_categories([])
    assert box.leftovers() == []  # its settings are gone: not resumed ...
    _, ignored = box.scan()
    # ... but said, each list.
    assert sorted(ignored) == [("photo", NOT_A_CATEGORY), ("photo/processing/ph2.txt", STRANDED)]
    from imgdl_watch.inbox.intake import Intake

    async def never(folder: str, stop: object) -> Any:
        yield None

    intake = Intake(
        box,
        source=never,
        settle_s=0,
        rescan_interval_s=1,
        job_slots=trio.CapacityLimiter(1),
        prepare_folders=box.ensure_layout,
    )
    with capture_logs() as logs:
        intake._report_ignored(ignored)
        intake._report_ignored(ignored)  # once
    said = [(e["event"], e["log_level"], e["file"]) for e in logs]
    assert said == [
        ("file_ignored", "info", "photo"),
        ("job_stranded", "warning", "photo/processing/ph2.txt"),
    ]


def test_claim_is_exclusive_and_finish_never_overwrites(inbox: Inbox) -> None:
    root = Path(inbox.root)
    (root / "cats.txt").write_text("one\n")
    claim = inbox.claim("cats.txt")
    assert claim is not None and not (root / "cats.txt").exists()
    assert inbox.claim("cats.txt") is None  # already gone
    (root / "cats.txt").write_text("two\n")
    assert inbox.claim("cats.txt") is None  # same stem is running
    assert inbox.leftovers() == []  # locked by us
    paths = inbox.parts(claim.stem)
    Path(paths.report).write_text("{}\n")
    Path(paths.failed).write_text("http://x/a.jpg\n")
    inbox.finish(claim, failed=1)
    assert inbox.claim("cats.txt") is None  # published, but the stem is still held
    claim.release()
    again = inbox.claim("cats.txt")
    assert again is not None
    paths = inbox.parts(again.stem)
    Path(paths.report).write_text("{}\n")
    Path(paths.failed).write_text("http://x/b.jpg\n")
    inbox.finish(again, failed=1)
    again.release()
    assert sorted(os.listdir(inbox.done)) == [
        "cats.1.report.jsonl",
        "cats.1.txt",
        "cats.report.jsonl",
        "cats.txt",
    ]
    assert (Path(inbox.done) / "cats.txt").read_text() == "one\n"
    assert sorted(os.listdir(inbox.failed)) == ["cats.1.txt", "cats.txt"]
    assert os.listdir(inbox.processing) == []


def test_lists_of_one_stem_in_several_formats_each_have_the_report_named_after_them(
    inbox: Inbox,
) -> None:
    # pair.txt, then pair.csv: the csv kept its name and its report became
    # pair.report.1.jsonl, which nothing named (the status and the hooks
    # said pair.report.jsonl, the txt's).
    done = []
    for name in ("pair.txt", "pair.csv", "pair.csv.gz", "pair.txt"):
        (Path(inbox.root) / name).write_bytes(b"http://x/a.jpg\n")
        claim = inbox.claim(name)
        assert claim is not None
        done.append(os.path.basename(_publish(inbox, claim)))
    assert done == ["pair.txt", "pair.1.csv", "pair.2.csv.gz", "pair.3.txt"]
    stems = ["pair", "pair.1", "pair.2", "pair.3"]
    assert sorted(os.listdir(inbox.done)) == sorted(
        done + [f"{stem}.report.jsonl" for stem in stems]
    )


def test_a_numbered_failed_list_dropped_again_runs_as_the_job_it_failed_in(
    inbox: Inbox,
) -> None:
    # failed/cats.txt was there, so the next failures went to failed/cats.1.txt;
    # dropped again, that ran as job cats.1, into another folder.
    for _ in range(2):
        (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
        claim = inbox.claim("cats.txt")
        assert claim is not None
        _publish(inbox, claim, failed=1)
    assert sorted(os.listdir(inbox.failed)) == ["cats.1.txt", "cats.txt"]
    os.rename(os.path.join(inbox.failed, "cats.1.txt"), os.path.join(inbox.root, "cats.1.txt"))
    again = inbox.claim("cats.1.txt")
    assert again is not None and (again.stem, again.job) == ("cats", "cats")
    assert os.path.basename(_publish(inbox, again)) == "cats.1.1.txt"  # the name it came with
    # A user's own numbered list (no attribute) is the job its name says ...
    assert _claimed_stem(inbox, "dogs.1.txt", None) == "dogs.1"
    # ... and an attribute can only take a number off, never rename a job.
    assert _claimed_stem(inbox, "emus.1.txt", b"cats") == "emus.1"


def _claimed_stem(box: Inbox, name: str, tag: bytes | None) -> str:
    """The stem a claim of a new list `name`, with the stem attribute `tag`, takes."""
    (Path(box.root) / name).write_text("http://x/a.jpg\n")
    if tag is not None:
        os.setxattr(Path(box.root) / name, STEM_XATTR, tag)
    claim = box.claim(name)
    assert claim is not None
    claim.release()
    return claim.stem


def test_a_stem_tag_never_makes_a_list_a_categorys_namesake(tmp_path: Path) -> None:
    # The scan refuses a top-level art.txt when art is a category; a tag on
    # art.1.txt made it job art, writing into the category's output.
    box = Inbox(str(tmp_path / "inbox"), categories=["art"])
    box.ensure_layout()
    assert _claimed_stem(box, "art.1.txt", b"art") == "art.1"


def test_leftovers_of_a_dead_owner_are_resumable(inbox: Inbox) -> None:
    (Path(inbox.processing) / "left.txt").write_text("x\n")
    first = inbox.leftovers()
    assert [c.stem for c in first] == ["left"]
    assert inbox.leftovers() == []  # held
    first[0].release()
    assert [c.stem for c in inbox.leftovers()] == ["left"]


def _publish(inbox: Inbox, claim: Claim, *, failed: int = 0) -> str:
    paths = inbox.parts(claim.stem)
    Path(paths.report).write_text("{}\n")
    Path(paths.failed).write_text("http://x/a.jpg\n" if failed else "")
    try:
        return inbox.finish(claim, failed=failed)
    finally:
        claim.release()


def test_a_redropped_list_waits_and_is_never_removed(inbox: Inbox) -> None:
    root = Path(inbox.root)
    (root / "cats.txt").write_text("one\n")
    first = inbox.claim("cats.txt")
    assert first is not None
    (root / "cats.txt").write_text("two\n")  # dropped again while the first runs
    assert inbox.claim("cats.txt") is None
    assert (root / "cats.txt").read_text() == "two\n"  # left alone, not unlinked
    _publish(inbox, first)
    second = inbox.claim("cats.txt")
    assert second is not None
    assert os.read(second.fd, 100) == b"two\n"
    _publish(inbox, second)
    done = Path(inbox.done)
    assert (done / "cats.txt").read_text() == "one\n"
    assert (done / "cats.1.txt").read_text() == "two\n"


def test_a_claim_cut_short_by_a_crash(inbox: Inbox) -> None:
    root = Path(inbox.root)
    # Killed holding the lock, before its rename: a lock file with no holder.
    (Path(inbox.locks) / "cats.lock").write_text("")
    (root / "cats.txt").write_text("x\n")
    claim = inbox.claim("cats.txt")
    assert claim is not None
    claim.release()  # killed after the rename: the job waits in processing/
    (root / "cats.txt").write_text("y\n")
    assert inbox.claim("cats.txt") is None  # the leftover of its stem comes first
    (left,) = inbox.leftovers()
    assert os.read(left.fd, 100) == b"x\n"
    _publish(inbox, left)
    again = inbox.claim("cats.txt")
    assert again is not None and os.read(again.fd, 100) == b"y\n"
    _publish(inbox, again)
    assert os.listdir(inbox.processing) == []
    assert os.listdir(inbox.locks) == [".publish.lock"]  # stem locks go with their holders


def test_a_symlink_renamed_in_after_the_scan_is_not_followed(inbox: Inbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("http://x/secret.jpg\n")
    os.symlink(secret, Path(inbox.root) / "evil.txt")
    with capture_logs() as logs:
        assert inbox.claim("evil.txt") is None
    assert os.path.islink(Path(inbox.failed) / "evil.txt")  # kept as it is, unread
    # ... and said so: it once went there without a word.
    (said,) = [e for e in logs if e["event"] == "file_ignored"]
    assert said["file"] == "evil.txt" and said["failed_as"] == "evil.txt"
    assert "not a regular file" in said["reason"]
    assert secret.read_text() == "http://x/secret.jpg\n"
    assert os.listdir(inbox.processing) == []


def test_claims_race_with_redrops_and_lose_nothing(tmp_path: Path) -> None:
    """Two claimers (as two daemons would, each with its own Inbox) race for
    `same.txt`, which is dropped again the moment the previous one is taken.
    Every drop must be published exactly once, with its own content, and two
    jobs of the stem must never overlap."""
    Inbox(str(tmp_path / "inbox")).ensure_layout()
    root = tmp_path / "inbox"
    rounds = 150
    running = 0
    overlaps = 0
    guard = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def claimer() -> None:
        nonlocal running, overlaps
        box = Inbox(str(root))
        try:
            while not stop.is_set():
                for claim in [*box.leftovers(), box.claim("same.txt")]:
                    if claim is None:
                        continue
                    with guard:
                        running += 1
                        overlaps += running > 1
                    time.sleep(0.0005)  # the job
                    with guard:
                        running -= 1
                    _publish(box, claim)
        except BaseException as exc:  # the test thread reports it
            errors.append(exc)

    threads = [threading.Thread(target=claimer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for n in range(rounds):
            aside = root / f".drop-{n}"
            aside.write_text(f"drop {n}\n")
            os.rename(aside, root / "same.txt")
            deadline = time.monotonic() + 10
            while (root / "same.txt").exists() and time.monotonic() < deadline:
                time.sleep(0.0001)  # taken: drop the next at once
        deadline = time.monotonic() + 10
        while len(os.listdir(Path(root) / "done")) < 2 * rounds and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    assert overlaps == 0
    lists = [p for p in (root / "done").iterdir() if not p.name.endswith(".report.jsonl")]
    assert sorted(p.read_text() for p in lists) == sorted(f"drop {n}\n" for n in range(rounds))
    assert os.listdir(root / "processing") == []


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
        paths = inbox.parts(claim.stem)
        Path(paths.report).write_text("{}\n")
        Path(paths.failed).write_text("http://x/a.jpg\n")
        inbox.finish(claim, failed=1)
        claim.release()
    (stem,) = stems
    kept = name if len(name.encode()) <= 240 else stem + ".txt"
    kept_stem = kept[:-4]
    assert sorted(os.listdir(inbox.done)) == sorted(
        [kept, f"{kept_stem}.report.jsonl", f"{kept_stem}.1.txt", f"{kept_stem}.1.report.jsonl"]
    )
    assert (Path(inbox.done) / kept).read_text() == "one\n"
    assert sorted(os.listdir(inbox.failed)) == sorted([kept, f"{kept_stem}.1.txt"])
    assert os.listdir(inbox.processing) == []


def test_a_category_is_an_inbox_of_its_own(tmp_path: Path) -> None:
    inbox = Inbox(str(tmp_path / "inbox"), categories=["art"])
    inbox.ensure_layout()
    root = Path(inbox.root)
    (root / "cats.txt").write_text("top\n")
    (root / "art" / "cats.txt").write_text("art\n")
    (root / "art" / "dogs.csv.gz").write_text("x")
    (root / "art" / "sub").mkdir()
    found, ignored = inbox.scan()
    assert sorted(found) == ["art/cats.txt", "art/dogs.csv.gz", "cats.txt"]
    assert ignored == [("art/sub", NOT_A_LIST)]
    # `art/cats` and `cats` are distinct stems: both may run at once.
    top = inbox.claim("cats.txt")
    art = inbox.claim("art/cats.txt")
    assert top is not None and art is not None
    assert (top.job, art.job, art.stem, art.category) == ("cats", "art/cats", "cats", "art")
    assert top.lock.path != art.lock.path
    assert art.path == str(root / "art" / "processing" / "cats.txt")
    # Another format of a stem that runs waits, in a category as at the top.
    (root / "art" / "cats.csv").write_text("url\n")
    assert inbox.claim("art/cats.csv") is None
    for claim in (top, art):
        parts = inbox.parts_of(claim)
        Path(parts.report).write_text("{}\n")
        Path(parts.failed).write_text("x\n")
        inbox.finish(claim, failed=1)
        claim.release()
    assert (root / "done" / "cats.txt").read_text() == "top\n"
    assert (root / "art" / "done" / "cats.txt").read_text() == "art\n"
    assert sorted(os.listdir(root / "art" / "failed")) == ["cats.txt"]
    # A list left in a category's processing/ by a dead daemon is resumed, and
    # a list of its stem in another format waits for it.
    (root / "art" / "processing" / "left.jsonl").write_text("{}\n")
    (root / "art" / "left.csv").write_text("url\n")
    assert inbox.claim("art/left.csv") is None
    (left,) = inbox.leftovers()
    assert (left.job, left.suffix) == ("art/left", ".jsonl")
    left.release()


def test_a_numbered_list_keeps_its_whole_suffix(inbox: Inbox) -> None:
    root = Path(inbox.root)
    for text in ("one\n", "two\n"):
        (root / "cats.csv.gz").write_text(text)
        claim = inbox.claim("cats.csv.gz")
        assert claim is not None
        parts = inbox.parts(claim.stem)
        Path(parts.report).write_text("{}\n")
        Path(parts.failed).write_text("x\n")
        inbox.finish(claim, failed=1)
        claim.release()
    assert sorted(os.listdir(inbox.done)) == [
        "cats.1.csv.gz",
        "cats.1.report.jsonl",
        "cats.csv.gz",
        "cats.report.jsonl",
    ]
    assert sorted(os.listdir(inbox.failed)) == ["cats.1.csv.gz", "cats.csv.gz"]


def test_a_broken_category_folder_stops_nothing_else(tmp_path: Path) -> None:
    # A user of the inbox may put a file, or a symlink to elsewhere, where a
    # category's folder should be: that category's lists wait, with a reason;
    # the top of the inbox and the other categories go on.
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "art").write_text("not a folder")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "processing").mkdir(parents=True)
    (elsewhere / "taken.txt").write_text("x")
    (root / "pics").symlink_to(elsewhere)
    inbox = Inbox(str(root), categories=["art", "pics", "ok"])
    inbox.ensure_layout()  # no error: the scan reports
    (root / "top.txt").write_text("x")
    (root / "ok" / "fine.csv").write_text("url\n")
    found, ignored = inbox.scan()
    assert sorted(found) == ["ok/fine.csv", "top.txt"]
    assert sorted(ignored) == [("art", CATEGORY_NOT_A_FOLDER), ("pics", CATEGORY_SYMLINK)]
    assert inbox.leftovers() == []
    assert inbox.claim("pics/taken.txt") is None  # never through the symlink
    assert (elsewhere / "taken.txt").exists()
    assert inbox.claim("ok/fine.csv") is not None


def _plant(folder: Path, target: Path) -> None:
    """What a member of the inbox's group can do: rename an own folder away
    and put a symlink to `target` in its place."""
    folder.rename(folder.with_name(folder.name + ".away"))
    folder.symlink_to(target)


def test_a_symlink_in_place_of_processing_is_never_followed(inbox: Inbox, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("other user's file\n")
    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    _plant(Path(inbox.processing), victim)
    # Its "leftovers" are not ours to take, and nothing goes into it.
    assert inbox.leftovers() == []
    assert inbox.claim("cats.txt") is None
    with pytest.raises(PlantedFolder) as raised:
        inbox.scan()
    assert raised.value.filename == inbox.processing and raised.value.strerror == FOLDER_PLANTED
    inbox.ensure_layout()  # makes nothing through it, and raises nothing
    assert sorted(os.listdir(victim)) == ["notes.txt"]
    assert (Path(inbox.root) / "cats.txt").exists()


def test_a_symlink_in_place_of_done_or_failed_is_never_followed(
    inbox: Inbox, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    claim = inbox.claim("cats.txt")
    assert claim is not None
    for own in (inbox.done, inbox.failed):
        _plant(Path(own), elsewhere)
        with pytest.raises(OSError):
            _publish(inbox, claim, failed=1)
        assert os.listdir(elsewhere) == []
        # The job waits whole in processing/ for the folder to be a folder again.
        assert sorted(os.listdir(inbox.processing)) == [
            ".cats.failed.part",
            ".cats.report.part",
            "cats.txt",
        ]
        os.unlink(own)
        os.rename(own + ".away", own)
        claim = inbox.leftovers()[0]
    assert _publish(inbox, claim, failed=1) == os.path.join(inbox.done, "cats.txt")


def test_a_claim_publishes_from_the_processing_folder_it_took(inbox: Inbox, tmp_path: Path) -> None:
    # processing/ swapped for a symlink while the job runs: the list and its
    # report are published from the folder the claim holds, not through it.
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "cats.txt").write_text("decoy\n")
    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    claim = inbox.claim("cats.txt")
    assert claim is not None
    paths = inbox.parts(claim.stem)
    Path(paths.report).write_text("{}\n")
    Path(paths.failed).write_text("")
    _plant(Path(inbox.processing), decoy)
    inbox.finish(claim, failed=0)
    claim.release()
    assert (decoy / "cats.txt").read_text() == "decoy\n"
    assert (Path(inbox.done) / "cats.txt").read_text() == "http://x/a.jpg\n"
    assert sorted(os.listdir(inbox.processing + ".away")) == []


def test_a_file_in_place_of_a_categorys_done_stops_that_category_only(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    inbox = Inbox(str(root), categories=["art"])
    inbox.ensure_layout()
    done = root / "art" / "done"
    _plant(done, tmp_path)
    (root / "art" / "x.txt").write_text("http://x/a.jpg\n")
    found, ignored = inbox.scan()
    assert found == {} and ignored == [("art", FOLDER_PLANTED)]
    assert inbox.claim("art/x.txt") is None
    os.unlink(done)
    done.write_text("a file now")
    assert inbox.scan()[1] == [("art", FOLDER_PLANTED)]


def test_a_symlink_in_place_of_the_state_folder_is_never_written_through(
    inbox: Inbox, tmp_path: Path
) -> None:
    from imgdl_watch.service.status import StatusFile, adopt_history, collect

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "locks").mkdir(parents=True)
    (elsewhere / "status-old-1.json").write_text('{"state": "stopped"}')
    (Path(inbox.processing) / "left.txt").write_text("http://x/a.jpg\n")
    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    _plant(Path(inbox.state), elsewhere)
    with pytest.raises(PlantedFolder) as raised:
        inbox.scan()
    assert raised.value.filename == inbox.state
    # No lock is taken through it (each would be a file made there).
    assert inbox.leftovers() == [] and inbox.claim("cats.txt") is None
    status = StatusFile(inbox, str(tmp_path / "out"))
    with pytest.raises(OSError):
        status.write(state="running", jobs=[], in_flight=0, queued=0)
    assert adopt_history(status) == 0  # removes nothing there
    assert collect(inbox.root)["daemons"] == []
    assert sorted(os.listdir(elsewhere)) == ["locks", "status-old-1.json"]


def test_a_symlink_under_a_locks_name_is_no_lock_and_no_crash(inbox: Inbox, tmp_path: Path) -> None:
    # A group member's own state folder (a real one, in place of ours), with a
    # symlink under a stem's lock name: opening it raised ELOOP out of the
    # claim, which stopped the daemon.
    os.rename(inbox.state, inbox.state + ".away")
    os.makedirs(inbox.locks)
    os.symlink(tmp_path / "victim", os.path.join(inbox.locks, "cats.lock"))
    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    with capture_logs() as logs:
        assert inbox.claim("cats.txt") is None
        assert inbox.claim("cats.txt") is None  # tried again at each rescan ...
    assert (Path(inbox.root) / "cats.txt").exists() and not (tmp_path / "victim").exists()
    # ... and said once: it once waited without a word.
    (said,) = [e for e in logs if e["event"] == "inbox_unusable"]
    assert said["folder"] == inbox.locks and "a lock cannot be taken" in said["reason"]
    # Gone, a lock taken there, and back: said again.
    os.unlink(os.path.join(inbox.locks, "cats.lock"))
    claim = inbox.claim("cats.txt")
    assert claim is not None
    claim.release()
    os.symlink(tmp_path / "victim", os.path.join(inbox.locks, "dogs.lock"))
    (Path(inbox.root) / "dogs.txt").write_text("http://x/a.jpg\n")
    with capture_logs() as logs:
        assert inbox.claim("dogs.txt") is None
    assert [e["event"] for e in logs] == ["inbox_unusable"]


@pytest.mark.parametrize("swapped", ["state", "locks"])
def test_a_state_folder_swapped_after_its_check_takes_no_lock_through_it(
    inbox: Inbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: str
) -> None:
    # Each claim and publish checks the state folder, then took its locks by
    # path: a symlink put in its place between the two (or in place of its
    # locks/) led the lock's open(O_CREAT) and its release's unlink to
    # wherever it pointed, and an operator's `cats.lock` there was taken as a
    # lock, then deleted.
    victim = tmp_path / "victim"
    victim.mkdir()
    for stem in ("cats", "dogs", "left"):
        (victim / f"{stem}.lock").write_text("the operator's")
    (Path(inbox.root) / "dogs.txt").write_text("http://x/a.jpg\n")
    held = inbox.claim("dogs.txt")  # before the swap: its lock is a real one
    assert held is not None
    (Path(inbox.processing) / "left.txt").write_text("http://x/a.jpg\n")
    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    _plant(Path(inbox.state if swapped == "state" else inbox.locks), victim)
    if swapped == "state":
        (victim / "locks").symlink_to(victim)
    # The check, passed just before the swap.
    monkeypatch.setattr(Inbox, "_refuse_planted_locks", lambda self: None)
    with capture_logs():
        assert inbox.claim("cats.txt") is None
        # Neither the leftover nor the job we hold (whose lock this is not).
        assert inbox.leftovers() == []
        with pytest.raises(OSError):
            _publish(inbox, held)
    for stem in ("cats", "dogs", "left"):
        assert (victim / f"{stem}.lock").read_text() == "the operator's"
    names = ["cats.lock", "dogs.lock", "left.lock", *(["locks"] if swapped == "state" else [])]
    assert sorted(p.name for p in victim.iterdir()) == names
    assert (Path(inbox.root) / "cats.txt").exists()
    waiting = sorted(n for n in os.listdir(inbox.processing) if not n.startswith("."))
    assert waiting == ["dogs.txt", "left.txt"]  # whole, with the held job's report parts


def test_a_move_that_fails_names_both_paths_in_full(inbox: Inbox) -> None:
    # Its renames are relative to the folders' descriptors, so the error
    # named the entry alone: "No such file or directory in cats.txt".
    from imgdl_watch.errors import inbox_error_detail

    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    claim = inbox.claim("cats.txt")
    assert claim is not None
    os.unlink(os.path.join(inbox.processing, "cats.txt"))  # someone's `rm`
    with pytest.raises(FileNotFoundError) as raised:
        _publish(inbox, claim)
    source, target = (os.path.join(f, "cats.txt") for f in (inbox.processing, inbox.done))
    assert (raised.value.filename, raised.value.filename2) == (source, target)
    detail = inbox_error_detail(raised.value)
    assert detail == f"No such file or directory moving {source} to {target}"


@pytest.mark.parametrize("planted", ["state", "locks"])
def test_no_folder_is_made_through_a_planted_state_folder_or_locks(
    tmp_path: Path, planted: str
) -> None:
    # Making the inbox's folders (at start, and at each scan for a category)
    # ran `os.makedirs(STATE/locks/art)`, which follows a symlink on the way:
    # the folders were made wherever it led.
    box = Inbox(str(tmp_path / "inbox"), categories=["art"])
    box.ensure_layout()
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.rmtree(box.state if planted == "state" else os.path.dirname(box._of("art").locks))
    os.symlink(victim, box.state if planted == "state" else os.path.dirname(box._of("art").locks))
    box.ensure_layout()
    with capture_logs():
        with pytest.raises(PlantedFolder):
            box.scan()
        (Path(box.root) / "art" / "cats.txt").write_text("http://x/a.jpg\n")
        assert box.claim("art/cats.txt") is None
        assert box.leftovers() == []
    assert list(victim.iterdir()) == []


def test_a_job_is_not_published_through_a_planted_state_folder(
    inbox: Inbox, tmp_path: Path
) -> None:
    # Its end took the publish lock by path: a locks/ and a .publish.lock
    # were made wherever a symlink in place of the state folder led.
    (Path(inbox.root) / "cats.txt").write_text("http://x/a.jpg\n")
    claim = inbox.claim("cats.txt")
    assert claim is not None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _plant(Path(inbox.state), elsewhere)
    with pytest.raises(PlantedFolder):
        _publish(inbox, claim)
    assert list(elsewhere.rglob("*")) == []
    assert "cats.txt" in os.listdir(inbox.processing)  # tried again later
