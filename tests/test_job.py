"""A whole job against a real local server."""

from __future__ import annotations

import errno
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.filesink import TEMP_PREFIX
from imgdl_watch.download.options import FetchOptions
from imgdl_watch.download.retrypolicy import Backoff
from imgdl_watch.errors import JobError
from imgdl_watch.job import feed as feed_module
from imgdl_watch.job import listformat, namestore
from imgdl_watch.job.dedupe import Dedupe
from imgdl_watch.job.job import Job
from imgdl_watch.job.listformat import ListFormat
from imgdl_watch.job.report import JobReport, ReportPaths
from imgdl_watch.naming import wide_name
from tests.helpers import events, fetch_options, job_options, open_list, write_list
from tests.imageserver import ImageServer, image_bytes

FAST = fetch_options(retries=2, backoff=Backoff(base_s=0.001, cap_s=0.002, retry_after_cap_s=0.01))


async def run(  # type: ignore[no-untyped-def]
    list_path: Path,
    output: Path,
    report: ReportPaths | None = None,
    workers: int = 8,
    options: FetchOptions = FAST,
):
    fd = open_list(list_path)
    try:
        async with Fetcher(options) as fetcher:
            job = Job(
                name="cats",
                list_fd=fd,
                output=str(output),
                fetcher=fetcher,
                options=job_options(),
                workers=workers,
                report=report,
            )
            return await job.run()
    finally:
        os.close(fd)


async def test_mixed_list_end_to_end(server: ImageServer, tmp_path: Path) -> None:
    b = server.base
    lines = [
        f"{b}/img/a.jpg",
        f"{b}/img/a.jpg",  # duplicate
        f"{b}/img/x/a.jpg?size=2",  # look-alike name
        f"{b}/redirect/2/r.jpg",
        f"{b}/status/404/missing.jpg",
        f"{b}/status/500/broken.jpg",
        f"{b}/flaky/1/503/busy.jpg",
        f"{b}/flaky/1/429/slow.jpg?ra=1",
        f"{b}/loop/a.jpg",
        f"{b}/html/page.jpg",
        "ftp://example.invalid/x.jpg",
        "# comment",
        "",
        "junk \x01 line",
    ]
    list_path = write_list(tmp_path / "cats.txt", lines)
    paths = ReportPaths(str(tmp_path / "report.part"), str(tmp_path / "failed.part"))
    with capture_logs() as logs:
        summary = await run(list_path, tmp_path / "out", paths)
    assert (summary.ok, summary.failed, summary.invalid, summary.duplicates) == (5, 4, 2, 1)
    assert summary.complete
    folder = tmp_path / "out" / "cats"
    names = sorted(os.listdir(folder))
    assert len(names) == 5 and "a.jpg" in names
    assert not [n for n in names if n.startswith(TEMP_PREFIX)]
    assert (folder / "a.jpg").read_bytes() == image_bytes("/img/a.jpg")
    assert server.counts["/status/404/missing.jpg"] == 1
    assert server.counts["/status/500/broken.jpg"] == 3
    failed = Path(paths.failed).read_text().splitlines()
    assert sorted(failed) == sorted([lines[4], lines[5], lines[8], lines[9]])
    invalid = events(logs, "url_invalid")
    assert [(e["line"], e["reason"]) for e in invalid] == [
        (11, "unsupported_scheme"),
        (14, "bad_characters"),
    ]
    reasons = {e["url"].rsplit("/", 1)[-1]: e["reason"] for e in events(logs, "download_failed")}
    assert reasons == {
        "missing.jpg": "http_error",
        "broken.jpg": "http_error",
        "a.jpg": "redirect_loop",
        "page.jpg": "not_an_image",
    }
    report_lines = [json.loads(line) for line in Path(paths.report).read_text().splitlines()]
    outcomes = sorted(r["outcome"] for r in report_lines)
    assert outcomes == ["duplicate"] + ["failed"] * 4 + ["invalid"] * 2 + ["ok"] * 5
    for record in report_lines:
        if record["outcome"] == "ok":
            assert record["file"] and record["bytes"] > 0 and record["attempts"] >= 1
        if record["outcome"] == "failed":
            assert record["reason"] and record["attempts"] >= 1
    # What the log says of a failure, the report says too (it had no detail).
    logged = {e["url"]: e["detail"] for e in events(logs, "download_failed")}
    recorded = {r["url"]: r["detail"] for r in report_lines if r["outcome"] == "failed"}
    assert recorded == logged and all(recorded.values())


async def test_second_run_fetches_nothing(server: ImageServer, tmp_path: Path) -> None:
    urls = [f"{server.base}/img/{i}.jpg" for i in range(20)] + [
        f"{server.base}/noext/n{i}" for i in range(3)
    ]
    list_path = write_list(tmp_path / "cats.txt", urls)
    first = await run(list_path, tmp_path / "out")
    assert first.ok == 23
    requests = sum(server.counts.values())
    with capture_logs() as logs:
        second = await run(list_path, tmp_path / "out")
    assert (second.ok, second.skipped) == (0, 23)
    assert sum(server.counts.values()) == requests
    assert len(events(logs, "download_skipped")) == 23


async def test_stale_temp_files_are_swept(server: ImageServer, tmp_path: Path) -> None:
    folder = tmp_path / "out" / "cats"
    folder.mkdir(parents=True)
    (folder / f"{TEMP_PREFIX}dead.part").write_bytes(b"half")
    summary = await run(
        write_list(tmp_path / "cats.txt", [f"{server.base}/img/1.jpg"]), tmp_path / "out"
    )
    assert summary.ok == 1
    assert os.listdir(folder) == ["1.jpg"]


async def test_empty_and_junk_lists_end_cleanly(server: ImageServer, tmp_path: Path) -> None:
    empty = tmp_path / "cats.txt"
    empty.write_bytes(b"")
    summary = await run(empty, tmp_path / "out")
    assert (summary.ok, summary.complete) == (0, True)
    empty.write_bytes(os.urandom(20000))
    summary = await run(empty, tmp_path / "out")
    assert summary.complete and summary.ok == 0 and summary.invalid > 0


async def _job_in(
    tmp_path: Path, fetcher: Fetcher, lines: list[str], *, workers: int | None
) -> Job:
    fd = open_list(write_list(tmp_path / "list.txt", lines))
    return Job(
        name="j",
        list_fd=fd,
        output=str(tmp_path / "out"),
        fetcher=fetcher,
        options=job_options(),
        workers=workers,
    )


async def test_workers_are_hired_only_as_the_list_needs_them(
    server: ImageServer, tmp_path: Path
) -> None:
    async with Fetcher(FAST) as fetcher:
        short = await _job_in(
            tmp_path, fetcher, [f"{server.base}/img/{i}.jpg" for i in range(3)], workers=32
        )
        assert (await short.run()).ok == 3
        # Three URLs, three workers at most: not two per slot (64).
        assert 1 <= short.workers <= 3
        (tmp_path / "list.txt").unlink()
        wide = await _job_in(
            tmp_path, fetcher, [f"{server.base}/slow/100/w{i}.jpg" for i in range(40)], workers=4
        )
        assert (await wide.run()).ok == 40
        # Busy workers: more are hired, up to two per slot.
        assert wide.workers == 8


async def test_a_stop_ends_a_job_whose_workers_all_wait_to_retry(
    server: ImageServer, tmp_path: Path
) -> None:
    # One slot, so two workers; both wait out a backoff when the stop comes,
    # and the producer waits to hand over a third item. Both workers end at
    # their next attempt without taking it: the job must end, not wait for a taker.
    options = fetch_options(retries=5, backoff=Backoff(base_s=0.2, cap_s=0.2))
    async with Fetcher(options) as fetcher:
        urls = [f"{server.base}/status/500/{i}.jpg" for i in range(10)]
        job = await _job_in(tmp_path, fetcher, urls, workers=1)
        async with trio.open_nursery() as nursery:

            async def stop_once_both_failed() -> None:
                await trio.to_thread.run_sync(server.wait_for_requests, 2)
                fetcher.stopping.set()

            nursery.start_soon(stop_once_both_failed)
            with trio.fail_after(5):
                summary = await job.run()
    assert not summary.complete
    assert sum(server.counts.values()) <= 4


async def test_a_reload_that_raises_concurrency_reaches_a_running_job(
    server: ImageServer, tmp_path: Path
) -> None:
    options = fetch_options(concurrency=2, per_host=50)
    async with Fetcher(options) as fetcher:
        urls = [f"{server.base}/slow/100/r{i}.jpg" for i in range(60)]
        job = await _job_in(tmp_path, fetcher, urls, workers=None)
        peak = 0
        async with trio.open_nursery() as nursery:

            async def reload_once_full() -> None:
                nonlocal peak
                # Full: two workers per slot hired. (A state, not an event:
                # no log line tells of a hire.)
                with trio.fail_after(10):
                    while job.workers < 4:
                        await trio.sleep(0.01)
                fetcher.set_limits(concurrency=5, per_host=50)
                while True:
                    peak = max(peak, fetcher.in_flight)
                    await trio.sleep(0.01)

            nursery.start_soon(reload_once_full)
            with trio.fail_after(10):
                summary = await job.run()
            nursery.cancel_scope.cancel()
    assert summary.ok == 60
    assert job.workers == 10 and peak == 5


async def test_downloads_reuse_the_url_the_reader_parsed(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passed: list[object] = []
    download = Fetcher.download

    async def spy(self: Fetcher, url: str, **options: Any) -> Any:
        passed.append(options.get("parsed"))
        return await download(self, url, **options)

    monkeypatch.setattr(Fetcher, "download", spy)
    async with Fetcher(FAST) as fetcher:
        urls = [f"{server.base}/img/p{i}.jpg" for i in range(3)]
        assert (await (await _job_in(tmp_path, fetcher, urls, workers=2)).run()).ok == 3
    assert len(passed) == 3 and all(isinstance(p, httpx.URL) for p in passed)


@pytest.mark.parametrize("processes", [0, 1], ids=["one process", "a worker"])
async def test_a_name_a_look_alike_took_meanwhile_sends_the_other_to_its_wide_hash(
    server: ImageServer, tmp_path: Path, processes: int
) -> None:
    # A new job's folder is empty, so no name is looked for in it before its
    # download (see `feed`): `a`, served as a PNG, is named a.png, the name
    # the list's literal a.png has, found only as the second is published;
    # so is thumb.php, whose page extension takes the image's. Either of a
    # pair may finish first (each pair is here in both orders): it keeps the
    # name, and the other takes its URL's wide hash. Nothing is replaced,
    # nothing is lost, and the job run again finds each under its own name.
    b = server.base
    pairs = []  # (the bare name's URL, the full name's URL, the bare name, the full)
    for bare, full in [("a", "a.png"), ("b", "b.png"), ("thumb.php", "thumb.php.png")]:
        pairs.append((f"{b}/noext/{bare}?id=1", f"{b}/img/{full}", bare, full))
    pairs.append((f"{b}/noext/view.php?id=2", f"{b}/img/view.php.png", "view.php", "view.php.png"))
    urls = []
    for at, (bare_url, full_url, _bare, _full) in enumerate(pairs):
        urls += [bare_url, full_url] if at % 2 == 0 else [full_url, bare_url]
    options = FAST.replace(workers=processes)
    folder = tmp_path / "out" / "cats"
    with capture_logs() as logs:
        summary = await run(
            write_list(tmp_path / "cats.txt", urls), tmp_path / "out", workers=1, options=options
        )
    assert (summary.ok, summary.skipped, summary.failed) == (8, 0, 0)
    saved = {ok["url"]: ok["file"] for ok in events(logs, "download_ok")}
    assert sorted(os.listdir(folder)) == sorted(saved.values())
    for bare_url, full_url, bare, full in pairs:
        assert (saved[bare_url], saved[full_url]) in (
            (full, wide_name(full, full_url)),
            (wide_name(bare, bare_url) + full[len(bare) :], full),
        )
    with httpx.Client() as client:
        for url, file in saved.items():
            assert (folder / file).read_bytes() == client.get(url).content
    with capture_logs() as logs:
        again = await run(tmp_path / "cats.txt", tmp_path / "out", workers=1, options=options)
    assert (again.ok, again.skipped) == (0, 8)
    assert {s["url"]: s["file"] for s in events(logs, "download_skipped")} == saved


@pytest.mark.parametrize("processes", [0, 1], ids=["one process", "a worker"])
async def test_the_wide_hash_a_look_alike_left_is_where_the_job_finds_it_again(
    server: ImageServer, tmp_path: Path, processes: int
) -> None:
    # One after the other, so that the literal names are taken first: each
    # bare name's download, completed by its response, finds its name taken
    # and takes the wide hash of the name it was given (`naming.alias_name`),
    # which is where the job, run on that folder, looks for it.
    b = server.base
    pairs = [("view.php", "view.php.jpg"), ("a", "a.jpg")]
    folder = tmp_path / "out" / "cats"
    folder.mkdir(parents=True)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    saved: dict[str, str] = {}
    try:
        async with Fetcher(FAST.replace(workers=processes)) as fetcher:
            for bare, full in pairs:
                for url, name in ((f"{b}/img/{full}", full), (f"{b}/img/x/{bare}", bare)):
                    saved[url] = (await fetcher.download(url, dir_fd=dir_fd, name=name)).file
            # And the other way round: the literal name takes the wide hash.
            for url, name in ((f"{b}/img/y/b", "b"), (f"{b}/img/b.jpg", "b.jpg")):
                saved[url] = (await fetcher.download(url, dir_fd=dir_fd, name=name)).file
    finally:
        os.close(dir_fd)
    for bare, full in pairs:
        bare_url = f"{b}/img/x/{bare}"
        assert (saved[f"{b}/img/{full}"], saved[bare_url]) == (
            full,
            wide_name(bare, bare_url) + full[len(bare) :],
        )
    assert saved[f"{b}/img/y/b"] == "b.jpg"
    assert saved[f"{b}/img/b.jpg"] == wide_name("b.jpg", f"{b}/img/b.jpg")
    with capture_logs() as logs:
        again = await run(write_list(tmp_path / "cats.txt", list(saved)), tmp_path / "out")
    assert (again.ok, again.skipped) == (0, 6)
    assert {s["url"]: s["file"] for s in events(logs, "download_skipped")} == saved


async def test_look_alikes_without_user_attributes_are_both_saved(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a filesystem without user attributes (tmpfs before Linux 6.6, some
    # network filesystems) no file says whose it is: the second of a pair
    # published still takes its wide hash, and neither image is lost.
    def no_attributes(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", no_attributes)
    b = server.base
    urls = [f"{b}/noext/a", f"{b}/img/a.png", f"{b}/noext/thumb.php?id=1", f"{b}/img/thumb.php.png"]
    with capture_logs() as logs:
        summary = await run(write_list(tmp_path / "cats.txt", urls), tmp_path / "out", workers=1)
    assert (summary.ok, summary.skipped, summary.failed) == (4, 0, 0)
    saved = {ok["url"]: ok["file"] for ok in events(logs, "download_ok")}
    folder = tmp_path / "out" / "cats"
    assert sorted(os.listdir(folder)) == sorted(saved.values())
    assert sorted(f for f in saved.values() if "-" not in f) == ["a.png", "thumb.php.png"]
    with httpx.Client() as client:
        for url, file in saved.items():
            assert (folder / file).read_bytes() == client.get(url).content


async def test_a_job_run_again_finds_a_bare_names_file_behind_another_candidate(
    server: ImageServer, tmp_path: Path
) -> None:
    # pic (a PNG) is pic.png, and the list's literal pic.jpg is pic.jpg: no
    # clash. Run again, pic finds its own pic.png among its candidates, past
    # the other URL's pic.jpg that comes first, and is not fetched again.
    b = server.base
    urls = [f"{b}/noext/pic", f"{b}/img/pic.jpg"]
    listed = write_list(tmp_path / "cats.txt", urls)
    assert (await run(listed, tmp_path / "out", workers=1)).ok == 2
    with capture_logs() as logs:
        again = await run(listed, tmp_path / "out", workers=1)
    assert (again.ok, again.skipped) == (0, 2)
    skipped = {s["url"]: s["file"] for s in events(logs, "download_skipped")}
    assert skipped == {urls[0]: "pic.png", urls[1]: "pic.jpg"}
    assert sorted(os.listdir(tmp_path / "out" / "cats")) == ["pic.jpg", "pic.png"]


def test_a_failed_list_that_cannot_open_fails_its_job_as_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report part is taken back when the failed list cannot be opened (a
    # .zst list without zstandard); if taking it back fails too (gone
    # already), the job still fails with the failed list's reason.
    def gone(path: str, **_kw: object) -> None:  # (as os.unlink is called: dir_fd=)
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "unlink", gone)
    paths = ReportPaths(
        str(tmp_path / "report.part"), str(tmp_path / "failed.part"), ListFormat("txt", "zst")
    )
    monkeypatch.setattr(listformat, "_zstandard", lambda: None)
    with pytest.raises(JobError) as caught:
        JobReport(paths)
    assert caught.value.reason == "list_unreadable"


async def test_a_scratch_file_that_cannot_be_written_fails_the_job_saying_so(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past its bound (none here) a list's names go to a scratch file in the
    # job folder; a full disk there fails the job with one clear line, not
    # as an unreadable list.
    small = partial(namestore.NameStore, partitions=1, chunk_names=2)  # it writes at once
    monkeypatch.setattr(feed_module, "Dedupe", partial(Dedupe, memory_urls=0, store=small))

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)  # only the scratch file uses it
    urls = [f"{server.base}/img/{i}.jpg" for i in range(400)]
    with capture_logs() as logs:
        summary = await run(write_list(tmp_path / "cats.txt", urls), tmp_path / "out")
    assert summary.failure == "folder_error"
    (failed,) = [e for e in logs if e["event"] == "job_failed"]
    assert failed["reason"] == "folder_error"
    assert failed["detail"] == f"{feed_module.SCRATCH_FAILED}: No space left on device"
    assert not [n for n in os.listdir(tmp_path / "out" / "cats") if n.startswith(TEMP_PREFIX)]


async def test_a_bug_met_on_one_url_fails_that_url_alone(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ValueError from deep in one download (once: a Retry-After of "²")
    # ended the whole job, and the list failed whole with no report.
    real_download = Fetcher.download

    async def download(self: Fetcher, url: str, **kw: Any) -> Any:
        if "bug" in url:
            raise ValueError("a bug met on this URL")
        return await real_download(self, url, **kw)

    monkeypatch.setattr(Fetcher, "download", download)
    urls = [f"{server.base}/img/a.jpg", f"{server.base}/img/bug.jpg", f"{server.base}/img/b.jpg"]
    list_path = write_list(tmp_path / "cats.txt", urls)
    with capture_logs() as logs:
        summary = await run(list_path, tmp_path / "out")
    assert (summary.ok, summary.failed) == (2, 1)
    (crashed,) = events(logs, "download_crashed")
    assert crashed["url"] == urls[1] and crashed["error"] == "ValueError: a bug met on this URL"
    assert "Traceback" in crashed["traceback"]
    (failed,) = events(logs, "download_failed")
    assert failed["reason"] == "internal_error"
    assert sorted(os.listdir(tmp_path / "out" / "cats")) == ["a.jpg", "b.jpg"]


async def test_a_bug_met_after_a_retry_is_reported_with_the_tries_it_took(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crew, which logs the bug, could not see the fetcher's count: an
    # internal_error always said `attempts: 0`.
    from imgdl_watch.download import fetcher as fetcher_module

    real_alias = fetcher_module.alias_name  # type: ignore[attr-defined]

    def alias_name(name: str, file: str, url: str) -> str:
        if "bug" in url:
            raise ValueError("a bug met once the body was whole")
        return real_alias(name, file, url)

    monkeypatch.setattr(fetcher_module, "alias_name", alias_name)
    urls = [f"{server.base}/flaky/1/503/bug.jpg", f"{server.base}/img/a.jpg"]
    with capture_logs() as logs:
        summary = await run(write_list(tmp_path / "cats.txt", urls), tmp_path / "out")
    assert (summary.ok, summary.failed) == (1, 1)
    (crashed,) = events(logs, "download_crashed")
    assert crashed["error"] == "ValueError: a bug met once the body was whole"
    assert "in alias_name" in crashed["traceback"]  # where the bug was, not the wrapper
    (failed,) = events(logs, "download_failed")
    assert (failed["reason"], failed["attempts"]) == ("internal_error", 2)


async def test_a_bug_met_in_a_download_worker_is_logged_with_the_workers_traceback(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's reply carried only "Type: message": the traceback ended
    # in the daemon's process, at the reply, not where the bug was.
    from imgdl_watch.download import errands
    from imgdl_watch.download.workers import raise_reply

    reply = errands.Crashed(7, "RuntimeError: a bug in the worker", "Traceback: in body.py")

    async def download(self: Fetcher, url: str, **kw: Any) -> Any:
        raise_reply(reply)

    monkeypatch.setattr(Fetcher, "download", download)
    list_path = write_list(tmp_path / "cats.txt", [f"{server.base}/img/a.jpg"])
    with capture_logs() as logs:
        summary = await run(list_path, tmp_path / "out")
    assert summary.failed == 1
    (crashed,) = events(logs, "download_crashed")
    assert crashed["error"] == "WorkerCrashed: RuntimeError: a bug in the worker"
    assert crashed["traceback"].endswith("In the download worker:\nTraceback: in body.py")


@pytest.mark.parametrize("change", ["grown", "rewritten"])
async def test_a_list_written_to_after_it_was_read_says_so(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # Its writer paused for longer than --settle, then went on writing into
    # the file the daemon had taken: the job read it to its end before that.
    first = f"{server.base}/img/grew/0.jpg\n"
    listed = tmp_path / "cats.txt"
    listed.write_text(first)
    late = f"{server.base}/img/grew/1.jpg\n"
    read_with = feed_module.Feed._read_with

    async def then_written_to(self: feed_module.Feed, *args: Any) -> None:
        await read_with(self, *args)
        if change == "grown":
            with listed.open("a") as handle:
                handle.write(late)
        else:  # as long as it was, another URL: only its mtime tells
            with listed.open("r+") as handle:
                handle.write(first.replace("/0.jpg", "/9.jpg"))
            os.utime(listed, ns=(0, os.stat(listed).st_mtime_ns + 1_000_000))

    monkeypatch.setattr(feed_module.Feed, "_read_with", then_written_to)
    with capture_logs() as logs:
        summary = await run(listed, tmp_path / "out")
    assert (summary.ok, summary.failed) == (1, 0)
    [changed] = events(logs, "list_changed")
    assert (changed["job"], changed["unread_bytes"]) == (
        "cats",
        len(late) if change == "grown" else 0,
    )
    assert "give what is missing as a list of its own" in changed["detail"]
    # Read again, the whole list: nothing to say.
    monkeypatch.setattr(feed_module.Feed, "_read_with", read_with)
    with capture_logs() as logs:
        await run(listed, tmp_path / "out")
    assert not events(logs, "list_changed")


async def test_a_list_written_to_while_its_last_batch_waits_says_so(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader meets the list's end inside its last batch, which may then
    # wait for the workers for as long as a thousand downloads take; a line
    # written meanwhile is never read, and must be told too.
    listed = write_list(tmp_path / "cats.txt", [f"{server.base}/img/late/0.jpg"])
    late = f"{server.base}/img/late/1.jpg\n"
    take = feed_module._take

    def then_written_to(entries: Any, count: int, *args: Any, **kwargs: Any) -> Any:
        batch, named = take(entries, count, *args, **kwargs)
        if 0 < len(batch) < count:  # the end met in this batch
            with listed.open("a") as handle:
                handle.write(late)
        return batch, named

    monkeypatch.setattr(feed_module, "_take", then_written_to)
    with capture_logs() as logs:
        summary = await run(listed, tmp_path / "out")
    assert (summary.ok, summary.failed) == (1, 0)  # the late line was not read
    [changed] = events(logs, "list_changed")
    assert changed["unread_bytes"] == len(late)


class _FullInbox:
    """A job's end whose inbox is full: the list stays, to be tried again."""

    async def publish(self, summary: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "done")

    async def give_up(self, error: Any) -> None:  # pragma: no cover - not reached here
        raise AssertionError(error)

    def retry_in(self) -> float:
        return 0.4


async def test_a_list_kept_for_another_try_says_nothing_of_a_change(
    server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried again, it is read whole again: what was written to it then is
    # downloaded, so there is nothing to say now.
    listed = write_list(tmp_path / "cats.txt", [f"{server.base}/img/kept/0.jpg"])
    read_with = feed_module.Feed._read_with

    async def then_written_to(self: feed_module.Feed, *args: Any) -> None:
        await read_with(self, *args)
        with listed.open("a") as handle:
            handle.write(f"{server.base}/img/kept/1.jpg\n")

    monkeypatch.setattr(feed_module.Feed, "_read_with", then_written_to)
    fd = open_list(listed)
    try:
        async with Fetcher(FAST) as fetcher:
            job = Job(
                name="cats", list_fd=fd, output=str(tmp_path / "out"), fetcher=fetcher,
                options=job_options(),
            )  # fmt: skip
            with capture_logs() as logs:
                summary = await job.run(_FullInbox())
    finally:
        os.close(fd)
    assert (summary.failure, summary.retry_s) == ("inbox_error", 0.4)
    assert not events(logs, "list_changed")
