"""--archive: memory across lists, in SQLite. The archive's parts on real
files, then the real daemon: reuse across two lists, a file gone, a file
whose bytes changed, two daemons at once, and a kill -9 in the middle."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image

from imgdl_watch.download.body import BodyRules, Filters
from imgdl_watch.download.filesink import SOURCE_XATTR
from imgdl_watch.job import archive as archive_module
from imgdl_watch.job.archive import Archive, ArchivedFile, Reused, reuse_file
from imgdl_watch.naming import fingerprint, source_tag
from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer, image_bytes

# A job's body rules at their defaults: images only, up to 32 MiB.
RULES = BodyRules(max_bytes=32 * 1024**2, any_type=False)


def why_not(got: Reused | tuple[str, str]) -> str | None:
    """The reason a file was not reused, or None if it was."""
    return got[0] if isinstance(got, tuple) else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archived(folder: Path, name: str, data: bytes, url: str | None = None) -> ArchivedFile:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return ArchivedFile(url or f"http://h/{name}", sha256(data), str(folder / name), len(data))


def test_rows_round_trip_and_a_shared_fingerprint_is_no_match(tmp_path: Path) -> None:
    archive = Archive(str(tmp_path / "a.db"))
    a = ArchivedFile("http://h/a.jpg", "aa" * 32, "/x/a.jpg", 10)
    b = ArchivedFile("http://h/b.jpg", "bb" * 32, "/x/b.jpg", 20)
    archive.record([a, b])
    assert archive.look_up(["http://h/a.jpg", "http://h/b.jpg", "http://h/c.jpg"]) == {
        a.url: a,
        b.url: b,
    }
    archive.record([ArchivedFile(a.url, "cc" * 32, "/y/a.jpg", 11)])  # the newest wins
    assert archive.look_up([a.url])[a.url].path == "/y/a.jpg"
    # A row whose fingerprint is another URL's (a collision) is not that URL's file.
    db = sqlite3.connect(tmp_path / "a.db")
    db.execute("UPDATE files SET fingerprint = ? WHERE url = ?", (fingerprint("http://h/z"), b.url))
    db.commit()
    assert archive.look_up(["http://h/z"]) == {}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # More URLs at once than one query takes.
    many = [ArchivedFile(f"http://h/{i}", "dd" * 32, f"/x/{i}", i) for i in range(2500)]
    archive.record(many)
    assert len(archive.look_up(f.url for f in many)) == 2500
    archive.close()


def test_reuse_links_a_file_that_is_still_the_same(tmp_path: Path, out_fd: int) -> None:
    data = image_bytes("/img/a.jpg")
    row = archived(tmp_path / "old", "a.jpg", data)
    got = reuse_file(row, out_fd, "a.jpg", RULES)
    assert not isinstance(got, tuple)
    assert (got.file, got.bytes, got.sha256, got.how) == ("a.jpg", len(data), sha256(data), "link")
    assert os.stat("a.jpg", dir_fd=out_fd).st_ino == os.stat(row.path).st_ino
    # A name without an extension takes the archived file's.
    assert not isinstance(got := reuse_file(row, out_fd, "noext", RULES), tuple)
    assert got.file == "noext.jpg"
    # So does a page's name; a page's extension is not taken from an archived file.
    assert not isinstance(got := reuse_file(row, out_fd, "thumb.php", RULES), tuple)
    assert got.file == "thumb.php.jpg"
    page = archived(tmp_path / "older", "view.php", data)
    assert not isinstance(got := reuse_file(page, out_fd, "show.php", RULES), tuple)
    assert got.file == "show.php"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_reuse_refuses_a_file_that_this_jobs_rules_would_not_save(
    tmp_path: Path, out_fd: int
) -> None:
    # A category's rules may be stricter than those of the job that saved it.
    data = png(307, 200)
    row = archived(tmp_path / "old", "a.png", data)

    def rules(**changes: object) -> BodyRules:
        return dataclasses.replace(RULES, **changes)  # type: ignore[arg-type]

    refusals = {
        "size cap": rules(max_bytes=len(data) - 1),
        "too narrow": rules(filters=Filters(min_width=310)),
        "too low": rules(filters=Filters(min_height=201)),
        "too many pixels": rules(filters=Filters(max_pixels=307 * 200 - 1)),
        "a placeholder": rules(filters=Filters(skip_sha256=frozenset({sha256(data)}))),
        "by md5": rules(filters=Filters(skip_md5=frozenset({hashlib.md5(data).hexdigest()}))),
    }
    for what, strict in refusals.items():
        got = reuse_file(row, out_fd, "a.png", strict)
        assert isinstance(got, tuple) and got[0] == "rules", what
    assert os.listdir(out_fd) == []
    text = archived(tmp_path / "old", "t.jpg", b"plain text, saved under --any-type")
    got = reuse_file(text, out_fd, "t.jpg", RULES)
    assert isinstance(got, tuple) and got[0] == "rules"
    assert not isinstance(reuse_file(text, out_fd, "t.jpg", rules(any_type=True)), tuple)
    # Rules it meets: reused.
    fits = rules(filters=Filters(min_width=307, min_height=200), max_bytes=len(data))
    assert not isinstance(reuse_file(row, out_fd, "a.png", fits), tuple)


def test_reuse_refuses_a_missing_or_changed_file(tmp_path: Path, out_fd: int) -> None:
    data = image_bytes("/img/a.jpg")
    row = archived(tmp_path / "old", "a.jpg", data)
    Path(row.path).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit off
    assert why_not(reuse_file(row, out_fd, "a.jpg", RULES)) == "changed"
    Path(row.path).write_bytes(data + b"x")
    assert why_not(reuse_file(row, out_fd, "a.jpg", RULES)) == "changed"
    Path(row.path).unlink()
    assert why_not(reuse_file(row, out_fd, "a.jpg", RULES)) == "missing"
    Path(row.path).symlink_to(tmp_path / "elsewhere")
    assert why_not(reuse_file(row, out_fd, "a.jpg", RULES)) == "missing"  # never followed
    assert os.listdir(out_fd) == []


def test_a_copy_never_replaces_a_file_published_while_it_was_made(
    tmp_path: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `pic` of the list, archived by an earlier job on another filesystem
    # (so copied), is reused as pic.png while the list's literal pic.png is
    # published: that file is left as it is, and the URL is downloaded.
    data = image_bytes("/img/c.jpg")
    row = archived(tmp_path / "old", "pic.png", data, url="http://h/noext/pic")
    real = archive_module._sha256_of

    def meanwhile(source: int, copy_to: int | None = None) -> str:
        (tiny_disk / "pic.png").write_bytes(b"the other URL's image")
        return real(source, copy_to=copy_to)

    monkeypatch.setattr(archive_module, "_sha256_of", meanwhile)
    fd = os.open(tiny_disk, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = reuse_file(row, fd, "pic", RULES)
    finally:
        os.close(fd)
    assert got == ("exists", "pic.png is taken")
    assert [p.name for p in tiny_disk.iterdir()] == ["pic.png"]
    assert (tiny_disk / "pic.png").read_bytes() == b"the other URL's image"


def test_reuse_copies_across_filesystems(tmp_path: Path, tiny_disk: Path) -> None:
    data = image_bytes("/img/c.jpg")
    row = archived(tmp_path / "old", "c.jpg", data)
    os.setxattr(row.path, SOURCE_XATTR, source_tag("http://h/c.jpg"))
    fd = os.open(tiny_disk, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = reuse_file(row, fd, "c.jpg", RULES)
    finally:
        os.close(fd)
    assert not isinstance(got, tuple) and got.how == "copy"
    assert (tiny_disk / "c.jpg").read_bytes() == data
    assert [p.name for p in tiny_disk.iterdir()] == ["c.jpg"]  # no temporary file left
    # The copy says which URL it is for, as the archived file did (a link
    # shares its inode's): else a look-alike would take it for its own.
    # (tmpfs has user attributes since Linux 6.6.)
    probe = tiny_disk / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, SOURCE_XATTR, b"x")
    except OSError:
        pytest.skip("this tmpfs has no user extended attributes")
    probe.unlink()
    assert os.getxattr(tiny_disk / "c.jpg", SOURCE_XATTR) == source_tag("http://h/c.jpg")


def urls(server: ImageServer, numbers: range) -> str:
    return "".join(f"{server.base}/img/arch/{i}.jpg\n" for i in numbers)


def report(daemon: DaemonProcess, name: str) -> list[dict[str, object]]:
    text = (daemon.inbox / "done" / f"{name}.report.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def rows(db: Path) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT url, sha256, path, size FROM files").fetchall()


def test_a_second_list_fetches_only_what_the_first_did_not(
    server: ImageServer, tmp_path: Path
) -> None:
    db = tmp_path / "archive.db"
    daemon = DaemonProcess(tmp_path, "--archive", str(db))
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "first.txt", urls(server, range(600)))
        daemon.wait_event("job_finished")
        fetched = server.counts.total()
        assert fetched == 600
        # 500 URLs shared with the first list, 100 new.
        drop(daemon.inbox, "second.txt", urls(server, range(100, 700)))
        second = daemon.wait_event("job_finished", count=2)[1]
    finally:
        daemon.stop_cleanly()
    assert (second["ok"], second["reused"], second["failed"]) == (100, 500, 0)
    assert server.counts.total() == fetched + 100
    assert all(server.counts[f"/img/arch/{i}.jpg"] == 1 for i in range(700))
    records = report(daemon, "second")
    reused = [r for r in records if r["outcome"] == "reused"]
    assert len(reused) == 500
    first_folder, second_folder = daemon.output / "first", daemon.output / "second"
    for record in reused:
        path = f"/img/arch/{str(record['url']).rsplit('/', 1)[1]}"
        assert record["sha256"] == sha256(image_bytes(path))
        assert record["source"] == str(first_folder / str(record["file"]))
        assert (second_folder / str(record["file"])).read_bytes() == image_bytes(path)
    assert len(os.listdir(second_folder)) == 600
    # Each download's sha256 is the saved file's, as sha256sum would say.
    recorded = rows(db)
    assert len(recorded) == 700
    for _url, digest, path, size in recorded:
        data = Path(path).read_bytes()
        assert (sha256(data), len(data)) == (digest, size)


def test_a_categorys_rules_hold_for_an_archived_file(server: ImageServer, tmp_path: Path) -> None:
    # The category caps a body below these images' sizes: its list must not
    # get them from the archive where a download would be refused.
    smallest = min(len(image_bytes(f"/img/arch/{i}.jpg")) for i in range(3))
    config = tmp_path / "config.toml"
    config.write_text(f"[category.small]\nmax_bytes = {smallest - 1}\n")
    daemon = DaemonProcess(tmp_path, "--archive", str(tmp_path / "a.db"), "--config", str(config))
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "first.txt", urls(server, range(3)))
        daemon.wait_event("job_finished")
        drop(daemon.inbox / "small", "again.txt", urls(server, range(3)))
        again = daemon.wait_event("job_finished", count=2)[1]
        stale = daemon.events("archive_stale")
    finally:
        daemon.stop_cleanly()
    assert (again["ok"], again["reused"], again["failed"]) == (0, 0, 3)
    assert [e["reason"] for e in stale] == ["rules"] * 3
    text = (daemon.inbox / "small" / "done" / "again.report.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["outcome"], r["reason"]) for r in records] == [("failed", "too_large")] * 3
    assert os.listdir(daemon.output / "small" / "again") == []


def test_a_file_gone_or_changed_is_fetched_again(server: ImageServer, tmp_path: Path) -> None:
    db = tmp_path / "archive.db"
    daemon = DaemonProcess(tmp_path, "--archive", str(db))
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "first.txt", urls(server, range(10)))
        daemon.wait_event("job_finished")
        first = daemon.output / "first"
        (first / "0.jpg").unlink()
        changed = first / "1.jpg"
        data = changed.read_bytes()
        changed.write_bytes(data[:100] + b"\0" * 10 + data[110:])  # same size, other bytes
        drop(daemon.inbox, "second.txt", urls(server, range(10)))
        second = daemon.wait_event("job_finished", count=2)[1]
        stale = {e["file"]: e["reason"] for e in daemon.events("archive_stale")}
    finally:
        daemon.stop_cleanly()
    assert (second["ok"], second["reused"]) == (2, 8)
    assert stale == {str(first / "0.jpg"): "missing", str(first / "1.jpg"): "changed"}
    assert server.counts["/img/arch/0.jpg"] == 2 and server.counts["/img/arch/1.jpg"] == 2
    assert (daemon.output / "second" / "1.jpg").read_bytes() == image_bytes("/img/arch/1.jpg")
    # The archive now points at the new, whole copies.
    paths = {url.rsplit("/", 1)[1]: path for url, _s, path, _n in rows(db)}
    assert paths["0.jpg"] == str(daemon.output / "second" / "0.jpg")
    assert paths["1.jpg"] == str(daemon.output / "second" / "1.jpg")


def test_two_daemons_share_one_archive(server: ImageServer, tmp_path: Path) -> None:
    db = tmp_path / "archive.db"
    a = DaemonProcess(tmp_path, "--archive", str(db), "--max-jobs", "2", name="a")
    b = DaemonProcess(tmp_path, "--archive", str(db), "--max-jobs", "2", name="b")
    try:
        a.wait_event("daemon_started")
        b.wait_event("daemon_started")
        # Sixteen lists of 100 URLs at once, which overlap by half: both
        # daemons write the archive at the same time.
        for n in range(16):
            drop(a.inbox, f"list{n}.txt", urls(server, range(n * 50, n * 50 + 100)))
        a.wait_for(lambda _e: len(a.events("job_finished")) + len(b.events("job_finished")) == 16)
        assert a.events("job_finished") and b.events("job_finished"), "both daemons ran jobs"
        recorded = rows(db)
        # A last list of every URL: all of them in the archive, none fetched again.
        before = server.counts.total()
        drop(a.inbox, "all.txt", urls(server, range(850)))
        a.wait_for(lambda _e: len(a.events("job_finished")) + len(b.events("job_finished")) == 17)
        last = next(
            e for e in a.events("job_finished") + b.events("job_finished") if e["job"] == "all"
        )
    finally:
        a.stop_cleanly()
        b.stop_cleanly()
    assert a.events("archive_failed") == [] and b.events("archive_failed") == []
    assert len({url for url, *_ in recorded}) == len(recorded) == 850
    for _url, digest, path, _size in recorded:
        assert sha256(Path(path).read_bytes()) == digest
    assert (last["reused"], last["ok"]) == (850, 0)
    assert server.counts.total() == before
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_archive_survives_kill_9_in_the_middle_of_a_job(
    server: ImageServer, tmp_path: Path
) -> None:
    db = tmp_path / "archive.db"
    daemon = DaemonProcess(tmp_path, "--archive", str(db), "--concurrency", "4")
    try:
        daemon.wait_event("daemon_started")
        lines = "".join(f"{server.base}/slow/20/k/{i}.jpg\n" for i in range(300))
        drop(daemon.inbox, "long.txt", lines)
        daemon.wait_event("download_ok", count=120)
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
    finally:
        daemon.kill()
    assert not daemon.events("job_finished")
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    recorded = rows(db)
    # Rows are written every second: the first ones are in; each points at a whole file.
    assert recorded
    for _url, digest, path, size in recorded:
        data = Path(path).read_bytes()
        assert (sha256(data), len(data)) == (digest, size)
    # The next daemon resumes the job, and a list of the same URLs reuses every
    # file that the archive knows.
    again = DaemonProcess(tmp_path, "--archive", str(db), name="again")
    try:
        again.wait_event("job_finished")
        drop(again.inbox, "copy.txt", lines)
        copy = again.wait_event("job_finished", count=2)[1]
    finally:
        again.stop_cleanly()
    assert copy["reused"] >= len(recorded) and copy["reused"] + copy["ok"] == 300
    assert copy["failed"] == 0


@pytest.mark.parametrize("content", [b"this is not a database" * 100])
def test_an_archive_that_is_not_one_stops_the_start(tmp_path: Path, content: bytes) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "imgdl_watch", "run", "--inbox", str(tmp_path / "in"),
         "--output", str(tmp_path / "out"), "--archive", str(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"imgdl-watch: error: cannot use archive {bad}: file is not a database"
    )


WRITER = """
import os, sys, time
from imgdl_watch.job.archive import Archive, ArchivedFile
archive = Archive(sys.argv[1])
me = sys.argv[2]
open(sys.argv[1] + "." + me + ".ready", "w").close()
while not os.path.exists(sys.argv[1] + ".go"):  # both start writing together
    time.sleep(0.001)
for n in range(1000):
    archive.record([ArchivedFile(f"http://h/{me}/{n}/{i}", "ab" * 32, "/x", 1) for i in range(10)])
    archive.look_up([f"http://h/{me}/{n}/0"])
"""


def test_two_processes_writing_at_once_wait_for_each_other(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "archive.db"
    Archive(str(db)).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), name], stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 30
    while not all(Path(f"{db}.{name}.ready").exists() for name in ("a", "b")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    Path(f"{db}.go").touch()
    errors = [w.communicate(timeout=60)[1].decode() for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert len(rows(db)) == 2 * 1000 * 10


def test_fetch_uses_the_archive_too(server: ImageServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "archive.db"
    for name, numbers in (("a", range(0, 20)), ("b", range(10, 30))):
        (tmp_path / f"{name}.txt").write_text(urls(server, numbers))
        done = subprocess.run(
            [sys.executable, "-m", "imgdl_watch", "fetch", f"{name}.txt", "--archive", str(db),
             "--log-format", "json", "--output", "out"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finished = [json.loads(line) for line in done.stdout.splitlines()][-1]
    assert (finished["event"], finished["ok"], finished["reused"]) == ("job_finished", 10, 10)
    assert server.counts.total() == 30


def test_daemons_that_open_a_new_archive_at_once_all_start(tmp_path: Path) -> None:
    # Two connections switching a new file to WAL at the same moment: SQLite
    # answers one of them "database is locked" at once, with no busy wait
    # (two daemons started together failed to start, one time in a few).
    import threading

    failures: list[BaseException] = []

    def open_it(path: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            Archive(path).close()
        except BaseException as exc:  # every failure is the test's
            failures.append(exc)

    for round_ in range(40):
        path, barrier = str(tmp_path / f"archive-{round_}.db"), threading.Barrier(4)
        threads = [threading.Thread(target=open_it, args=(path, barrier)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_an_archive_that_cannot_be_read_now_finds_nothing_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    archive = Archive(str(tmp_path / "archive.db"))
    archive.record([ArchivedFile("http://h/a.jpg", "ab" * 32, "/x/a.jpg", 1)])
    assert list(archive.look_up_or_nothing(["http://h/a.jpg"])) == ["http://h/a.jpg"]

    def unreadable(urls: object) -> dict[str, ArchivedFile]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(archive, "look_up", unreadable)
    with capture_logs() as logs:
        assert archive.look_up_or_nothing(["http://h/a.jpg"]) == {}  # downloaded again, then
    assert [(e["event"], e["action"], e["detail"]) for e in logs] == [
        ("archive_failed", "look_up", "disk I/O error")
    ]
    archive.close()
