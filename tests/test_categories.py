"""Categories: inbox subfolders that the operator's config defines, each a job
spec of its own. The config's checks, a real daemon running them, and the
failed/ round trip of a csv list with its captions."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from imgdl_watch import config
from imgdl_watch.config import ConfigError, category_settings, download_rules, resolve
from imgdl_watch.download.fetcher import Fetcher
from imgdl_watch.download.rules import DownloadRules
from imgdl_watch.inbox.lifecycle import NAMED_AS_CATEGORY, NOT_A_CATEGORY
from imgdl_watch.job.job import Job
from imgdl_watch.job.listformat import ListFormat, read_entries
from imgdl_watch.job.listparse import ListedUrl
from tests.daemonproc import DaemonProcess, drop
from tests.helpers import fetch_options, job_options
from tests.imageserver import ImageServer

Image = pytest.importorskip("PIL.Image", reason="Pillow (the dev extra) makes the test images")


def _settings(tmp_path: Path, text: str, **flags: object) -> config.Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return resolve("run", flags, env={}, config_path=str(path))


# -- the config ---------------------------------------------------------------


def test_a_category_sets_per_job_options(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        'header = ["X-Global: 1"]\n'
        "[category.art]\n"
        "per_host = 2\n"
        'header = ["Referer: https://gallery.example/"]\n'
        "min_width = 256\n"
        "max_pixels = 50000000\n"
        'url-column = "image"\n'
        "[category.plain]\n",
    )
    assert [c.name for c in settings.categories] == ["art", "plain"]
    art = category_settings(settings, "art")
    assert (art.per_host, art.min_width, art.url_column) == (2, 256, "image")
    # Its headers come after the global ones.
    assert art.header == (("X-Global", "1"), ("Referer", "https://gallery.example/"))
    rules = download_rules(art)
    assert rules.per_host == 2 and rules.filters.min_width == 256
    assert rules.filters.skip_md5  # the shipped placeholders, by default
    # The global settings are untouched, and so is a category that sets nothing.
    assert settings.per_host == 8 and settings.header == (("X-Global", "1"),)
    assert category_settings(settings, "plain") == settings
    assert category_settings(settings, "nope") == settings


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("block_private", "false"),
        ("output", '"/etc"'),
        ("inbox", '"/tmp"'),
        ("log_file", '"/tmp/x.log"'),
        ("log-level", '"debug"'),
        ("metrics_port", "9999"),
        ("metrics_bind", '"0.0.0.0"'),
        ("max_jobs", "1"),
        ("settle", "0"),
        ("min_free", "0"),
    ],
)
def test_a_category_may_not_set_what_is_not_per_job(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, f"[category.art]\n{key} = {value}\n")
    message = str(caught.value)
    assert "\n" not in message
    assert f"[category.art]: a category may not set {key}" in message
    assert "per_host" in message  # it says what a category may set


@pytest.mark.parametrize(
    ("text", "flags", "wanted"),
    [
        ("per_host = 16", {}, "per_host = 16 is above the global per_host (8)"),
        ("concurrency = 64", {}, "concurrency = 64 is above the global concurrency (32)"),
        ('max_bytes = "64M"', {}, "max_bytes = 64M is above the global max_bytes"),
        ("max_redirects = 11", {}, "max_redirects = 11 is above the global max_redirects (10)"),
        # The global value in force counts, from a flag too.
        ("per_host = 4", {"per_host": "2"}, "per_host = 4 is above the global per_host (2)"),
        # 0 is no bound at all: above any global bound.
        ("max_pixels = 0", {"max_pixels": "1000"}, "max_pixels = 0 is above the global"),
        ("max_pixels = 2000", {"max_pixels": "1000"}, "max_pixels = 2000 is above the global"),
    ],
)
def test_a_category_may_lower_a_limit_but_never_raise_it(
    tmp_path: Path, text: str, flags: dict[str, object], wanted: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, f"[category.art]\n{text}\n", **flags)
    assert wanted in str(caught.value)
    assert "a category may lower a limit, never raise it" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_limits_at_or_below_the_global_ones_are_fine(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        "[category.art]\nper_host = 8\nconcurrency = 4\nmax_bytes = 1024\nmax_pixels = 99\n",
    )
    art = category_settings(settings, "art")
    assert (art.per_host, art.concurrency, art.max_bytes, art.max_pixels) == (8, 4, 1024, 99)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ('[category."../up"]\n', "a category's name is its inbox folder's"),
        ("[category.done]\n", "none of processing, done, failed"),
        # Its locks' folder would take the name of stem cats's lock file.
        ('[category."cats.lock"]\n', "not ending in '.lock'"),
        ('[category."CATS.LOCK"]\n', "not ending in '.lock'"),
        ('[category.".hidden"]\n', "not starting with '.'"),
        ("[category.art]\nper_hots = 2\n", "[category.art]: unknown key 'per_hots'"),
        ("[category.art]\nper_host = 0\n", "[category.art]: per-host must be 1 to 1000"),
        ('[category.art]\nheader = ["Host: x"]\n', "must not set Host"),
        ("category = 3\n", "category must be a table of [category.NAME] tables"),
    ],
)
def test_bad_categories_are_one_line(tmp_path: Path, text: str, wanted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, text)
    assert wanted in str(caught.value) and "\n" not in str(caught.value)


def test_the_readme_says_which_keys_a_category_may_set() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for option in config.OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{flag}"))
        cell = row.split("|")[-2].strip()
        wanted = "≤ global" if option.limit else "yes" if option.per_job else ""
        assert cell == wanted, (option.name, cell)
        assert not option.limit or option.per_job


def test_every_per_job_option_reaches_the_job() -> None:
    """A per-job option takes effect through a field of the same name in
    DownloadRules (which `download_rules` fills by name), the filters or the
    job's options; marking one per_job without such a field would let a
    category set what nothing reads."""
    rules = {f.name for f in dataclasses.fields(DownloadRules) if f.init} - {"filters"}
    elsewhere = {"min_width", "min_height", "max_pixels", "skip_sha256", "url_column"}
    per_job = {o.name for o in config.OPTIONS if o.per_job}
    assert rules <= per_job, "a DownloadRules field with no per-job option"
    assert per_job <= rules | elsewhere, "mark per_job only what a job's downloads read"


def test_a_forbidden_key_stops_the_daemon_at_start_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[category.art]\nblock_private = false\n")
    done = subprocess.run(
        [sys.executable, "-m", "imgdl_watch", "run", "--config", str(path),
         "--inbox", str(tmp_path / "in"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "a category may not set block_private" in lines[0]
    assert "Traceback" not in done.stderr


# -- a per-job per-host limit, in a real job --------------------------------


@pytest.mark.parametrize("limit", ["per_host = 2", "concurrency = 2"])
async def test_a_categorys_lower_limit_holds_below_the_global_one(
    server: ImageServer, tmp_path: Path, limit: str
) -> None:
    settings = _settings(tmp_path, f"[category.slow]\n{limit}\n", per_host="8")
    urls = "".join(f"{server.base}/slow/300/{n}.jpg\n" for n in range(8))
    peaks = {}
    for category in ("", "slow"):
        # The connections of the job before (or of an earlier test) would count.
        await trio.to_thread.run_sync(server.wait_for_no_connections)
        server.peak_connections = 0
        job_settings = category_settings(settings, category)
        listing = tmp_path / f"list{category}.txt"
        listing.write_text(urls)
        fd = os.open(listing, os.O_RDONLY)
        try:
            async with Fetcher(fetch_options(per_host=8, concurrency=8)) as fetcher:
                job = Job(
                    name=f"j{category}",
                    list_fd=fd,
                    output=str(tmp_path / "out"),
                    fetcher=fetcher,
                    options=job_options(),
                    rules=download_rules(job_settings),
                )
                summary = await job.run()
        finally:
            os.close(fd)
        assert summary.ok == 8
        peaks[category] = server.peak_connections
    assert peaks["slow"] <= 2 < peaks[""]


# -- a real daemon --------------------------------------------------------------


def _image(size: tuple[int, int], seed: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 30 + seed).convert("RGB").save(out, "JPEG", quality=70)
    return out.getvalue()


def _report(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_category_is_a_job_spec_with_its_own_folders(server: ImageServer, tmp_path: Path) -> None:
    b = server.base
    for n in range(3):
        server.files[f"big{n}.jpg"] = (_image((300 + n, 260), n), "image/jpeg")
    server.files["small.jpg"] = (_image((100, 80), 9), "image/jpeg")
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        "[category.art]\n"
        'header = ["Referer: https://gallery.example/"]\n'
        "min_width = 256\n"
        "per_host = 2\n"
    )
    rows = [
        ("1", f"{b}/file/big0.jpg", "first, with a comma"),
        ("2", f"{b}/file/big1.jpg", 'second "quoted"'),
        ("3", f"{b}/status/404/gone.jpg", "gone one"),
        ("4", f"{b}/file/small.jpg", "too small"),
        ("5", f"{b}/file/big2.jpg", "third\non two lines"),
    ]
    csv_text = "id,url,caption\r\n" + "".join(
        f'{i},{u},"{c.replace(chr(34), chr(34) * 2)}"\r\n' for i, u, c in rows
    )
    daemon = DaemonProcess(tmp_path, "--config", str(cfg))
    try:
        daemon.wait_event("daemon_started")
        inbox = daemon.inbox
        assert (inbox / "art" / "processing").is_dir()  # made at start
        (inbox / "photos").mkdir()  # a folder no category names
        drop(inbox / "art", "cats.csv", csv_text)
        drop(inbox, "cats.txt", f"{b}/img/top.jpg\n")  # the same stem, at the top
        drop(inbox, "art.txt", f"{b}/img/never.jpg\n")  # named after a category
        daemon.wait_event("job_finished", count=2)
        time.sleep(2.5)  # two more rescans: each ignored name is still reported once
    finally:
        daemon.stop_cleanly()
    finished = {e["job"]: e for e in daemon.events("job_finished")}
    assert set(finished) == {"art/cats", "cats"}
    art = finished["art/cats"]
    assert (art["ok"], art["failed"], art["filtered"], art["invalid"]) == (3, 1, 1, 0)
    ignored = [(e["file"], e["reason"]) for e in daemon.events("file_ignored")]
    assert sorted(ignored) == sorted([("photos", NOT_A_CATEGORY), ("art.txt", NAMED_AS_CATEGORY)])
    assert server.counts["/img/never.jpg"] == 0
    # Its own output folder, and the top-level list of the same stem in its own.
    output = tmp_path / "downloads"
    assert sorted(os.listdir(output / "art" / "cats")) == ["big0.jpg", "big1.jpg", "big2.jpg"]
    assert os.listdir(output / "cats") == ["top.jpg"]
    # The category's headers went with its requests only.
    referers = [h.get("Referer") for h in server.headers_seen]
    assert referers.count("https://gallery.example/") == 5
    # Its own done/ and failed/, with the report beside the list.
    art_inbox = inbox / "art"
    assert sorted(os.listdir(art_inbox / "done")) == ["cats.csv", "cats.report.jsonl"]
    assert sorted(os.listdir(inbox / "done")) == ["cats.report.jsonl", "cats.txt"]
    records = {r["url"]: r for r in _report(art_inbox / "done" / "cats.report.jsonl")}
    big0 = records[f"{b}/file/big0.jpg"]
    assert big0["outcome"] == "ok" and big0["columns"] == {
        "id": "1",
        "caption": "first, with a comma",
    }
    assert (big0["width"], big0["height"], big0["content_type"]) == (300, 260, "image/jpeg")
    assert records[f"{b}/file/big2.jpg"]["columns"] == {"id": "5", "caption": "third\non two lines"}
    small = records[f"{b}/file/small.jpg"]
    assert (small["outcome"], small["reason"], small["width"]) == ("filtered", "too_small", 100)
    # failed/ is a csv with its header and the failed row, caption and all.
    failed = (art_inbox / "failed" / "cats.csv").read_bytes().decode()
    assert failed == f"id,url,caption\r\n3,{b}/status/404/gone.jpg,gone one\r\n"


def test_the_failed_csv_retries_exactly_its_rows(server: ImageServer, tmp_path: Path) -> None:
    b = server.base
    lines = [f"{b}/img/a{n}.jpg,caption {n}" for n in range(4)]
    lines += [f'{b}/flaky/1/404/once.jpg,"flaky, then fine"']
    daemon = DaemonProcess(tmp_path, "--retries", "0")
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "set.csv", "url,caption\n" + "\n".join(lines) + "\n")
        daemon.wait_event("job_finished")
        failed = daemon.inbox / "failed" / "set.csv"
        # Its rows end as the list's did, in LF (they came back in CRLF).
        assert failed.read_bytes().decode() == (
            f'url,caption\n{b}/flaky/1/404/once.jpg,"flaky, then fine"\n'
        )
        os.rename(failed, daemon.inbox / "set.csv")  # mv inbox/failed/set.csv inbox/
        daemon.wait_event("job_finished", count=2)
    finally:
        daemon.stop_cleanly()
    second = daemon.events("job_finished")[1]
    assert (second["ok"], second["failed"], second["skipped"]) == (1, 0, 0)
    assert server.counts["/flaky/1/404/once.jpg"] == 2
    assert all(server.counts[f"/img/a{n}.jpg"] == 1 for n in range(4))
    again = _report(daemon.inbox / "done" / "set.1.report.jsonl")
    assert [(r["outcome"], r["columns"]) for r in again] == [
        ("ok", {"caption": "flaky, then fine"})
    ]
    assert not (daemon.inbox / "failed" / "set.csv").exists()


@pytest.mark.parametrize("name", ["set.tsv.gz", "set.jsonl.zst"])
def test_a_compressed_failed_list_keeps_its_format(
    server: ImageServer, tmp_path: Path, name: str
) -> None:
    pytest.importorskip("zstandard", reason="the zstd extra is not installed")
    b = server.base
    fmt = ListFormat.of(name)
    good = {"url": f"{b}/img/ok.jpg", "caption": "fine", "n": 1}
    bad = {"url": f"{b}/flaky/1/404/once.jpg", "caption": "tab\there", "n": 2}
    if fmt.kind == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in (good, bad))
    else:
        rows = [
            ["url", "caption", "n"],
            *[[str(r[k]) for k in ("url", "caption", "n")] for r in (good, bad)],
        ]
        out = io.StringIO()
        csv.writer(out, "excel-tab").writerows(rows)
        text = out.getvalue()
    data = text.encode()
    packed = gzip.compress(data) if fmt.compression == "gz" else zstd_compress(data)
    daemon = DaemonProcess(tmp_path, "--retries", "0")
    try:
        daemon.wait_event("daemon_started")
        inbox = daemon.inbox
        (inbox / f".{name}").write_bytes(packed)
        os.rename(inbox / f".{name}", inbox / name)
        daemon.wait_event("job_finished")
        failed = inbox / "failed" / name
        fd = os.open(failed, os.O_RDONLY)
        try:
            again = [e for e in read_entries(fd, fmt) if isinstance(e, ListedUrl)]
        finally:
            os.close(fd)
        assert [(e.url, e.row.columns() if e.row else None) for e in again] == [
            (bad["url"], {"caption": "tab\there", "n": 2 if fmt.kind == "jsonl" else "2"})
        ]
        os.rename(failed, inbox / name)
        daemon.wait_event("job_finished", count=2)
    finally:
        daemon.stop_cleanly()
    second = daemon.events("job_finished")[1]
    assert (second["ok"], second["failed"]) == (1, 0)
    assert server.counts["/img/ok.jpg"] == 1


def zstd_compress(data: bytes) -> bytes:
    import zstandard

    return bytes(zstandard.ZstdCompressor().compress(data))


def test_a_reload_checks_categories_and_brings_new_ones(
    server: ImageServer, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("per_host = 4\n[category.art]\nper_host = 2\n")
    daemon = DaemonProcess(tmp_path, "--config", str(cfg))
    try:
        daemon.wait_event("daemon_started")
        cfg.write_text("per_host = 4\n[category.art]\nper_host = 5\n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("config_reload_failed")
        assert re.search(r"\[category\.art\]: per_host = 5 is above the global per_host \(4\)",
                         failed[0]["detail"])  # fmt: skip
        cfg.write_text("per_host = 4\n[category.art]\nlog_file = '/tmp/x'\n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("config_reload_failed", count=2)
        assert "a category may not set log_file" in failed[1]["detail"]
        # max_bytes is not reloaded: a category may not go above the running one.
        cfg.write_text("per_host = 4\nmax_bytes = '64M'\n[category.art]\nmax_bytes = '40M'\n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("config_reload_failed", count=3)
        assert (
            "max_bytes = 41943040 is above the running max_bytes (33554432)"
            in (failed[2]["detail"])
        )
        cfg.write_text("per_host = 4\n[category.art]\n[category.new]\nmin_width = 1\n")
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_event("config_reloaded")
        assert reloaded[0]["categories"] == ["art", "new"]
        deadline = time.monotonic() + 10
        while not (daemon.inbox / "new" / "processing").is_dir():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        drop(daemon.inbox / "new", "dogs.txt", f"{server.base}/img/dog.jpg\n")
        finished = daemon.wait_event("job_finished")
        assert daemon.proc.poll() is None
    finally:
        daemon.stop_cleanly()
    assert finished[0]["job"] == "new/dogs" and finished[0]["ok"] == 1
    assert (tmp_path / "downloads" / "new" / "dogs" / "dog.jpg").is_file()
