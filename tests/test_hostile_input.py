"""Issue #3's promise, through the real daemon: a list of everything that goes
wrong on the web ends with every good image saved once, every failure
explained, and nothing written outside the job folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer, image_bytes


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mixed_hostile_list(server: ImageServer, tmp_path: Path) -> None:
    b = server.base
    lines = [
        f"{b}/img/good/1.jpg",
        f"{b}/img/good/2.png",
        f"{b}/redirect/2/moved.jpg",
        f"{b}/status/404/gone.jpg",
        f"{b}/status/500/broken.jpg",
        f"{b}/flaky/1/503/busy.jpg",
        f"{b}/flaky/1/429/later.jpg?ra=0",
        f"{b}/loop/a.jpg",
        f"{b}/html/page.jpg",
        f"{b}/big/52428800/huge.jpg",
        f"http://127.0.0.1:{refused_port()}/refused.jpg",
        "javascript:alert(1)",
        "\x00\x01 binary junk",
        "x" * 100_000,
        f"{b}/img/good/1.jpg",  # duplicate
        f"{b}/img/other/1.jpg",  # look-alike name
        f"{b}/img/..%2F..%2Fescape.jpg",
        f"{b}/img/%2e%2e",
        # Hosts that DNS cannot carry: the resolver would raise UnicodeError
        # (a label over 63 characters, an empty label), which once ended the
        # whole job; in the list, and behind a redirect.
        f"http://{'a' * 3000}.example/long-label.jpg",
        "http://a..b/empty-label.jpg",
        f"{b}/to/x.jpg?url=http://{'c' * 64}.example/far.jpg",
        # A host httpx cannot spell (not valid punycode): reading it raised
        # IDNAError, which also ended the whole job; in the list, and behind
        # a redirect.
        "http://xn--zz.example/punycode.jpg",
        f"{b}/to/y.jpg?url=http://xn--zz.example/spelled.jpg",
    ]
    daemon = DaemonProcess(tmp_path, "--retries", "2", "--max-bytes", "10M")
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "mixed.txt", "\n".join(lines) + "\n")
        summary = daemon.wait_event("job_finished", timeout=90)[0]
        assert daemon.proc.poll() is None  # still running
    finally:
        daemon.stop_cleanly()
    assert (summary["ok"], summary["failed"], summary["invalid"], summary["duplicates"]) == (
        8,
        8,
        6,
        1,
    )

    reasons = {e["url"].rsplit("/", 1)[-1]: e["reason"] for e in daemon.events("download_failed")}
    assert reasons == {
        "gone.jpg": "http_error",
        "broken.jpg": "http_error",
        "a.jpg": "redirect_loop",
        "page.jpg": "not_an_image",
        "huge.jpg": "too_large",
        "refused.jpg": "connect_error",
        "far.jpg": "bad_redirect",
        "spelled.jpg": "bad_redirect",
    }
    invalid = sorted((e["line"], e["reason"]) for e in daemon.events("url_invalid"))
    assert invalid == [
        (12, "not_a_url"),
        (13, "bad_characters"),
        (14, "line_too_long"),
        (19, "bad_host"),
        (20, "bad_host"),
        (22, "bad_host"),
    ]
    assert not daemon.events("job_crashed")
    assert all(len(str(e.get("excerpt", ""))) <= 61 for e in daemon.events())
    assert server.counts["/status/404/gone.jpg"] == 1
    assert server.counts["/status/500/broken.jpg"] == 3
    assert server.counts["/big/52428800/huge.jpg"] == 1

    folder = daemon.output / "mixed"
    saved = sorted(os.listdir(folder))
    assert len(saved) == 8
    # hostile names were made safe, inside the folder
    assert "_.._escape.jpg" in saved and "image.jpg" in saved
    assert "1.jpg" in saved and len([n for n in saved if n.startswith("1-")]) == 1
    assert (folder / "1.jpg").read_bytes() == image_bytes("/img/good/1.jpg")
    # nothing anywhere but the job folder, the inbox and our logs
    everything = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert everything <= {"downloads", "inbox", "daemon.log", "daemon.stderr"}
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["mixed"]
    failed = (daemon.inbox / "failed" / "mixed.txt").read_text().splitlines()
    assert len(failed) == 8


def test_a_file_name_that_is_not_utf8_stops_neither_the_watcher_nor_the_log(
    server: ImageServer, tmp_path: Path
) -> None:
    # The Rust watcher cannot decode such a name: it once ended awatch, and
    # with it the daemon ("internal error"). Rescans are 60 s apart here, so
    # only a working watcher picks up the second list in time.
    daemon = DaemonProcess(tmp_path, "--rescan-interval", "60")
    latin1 = os.path.join(os.fsencode(daemon.inbox), b"caf\xe9.txt")
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "first.txt", f"{server.base}/img/first.jpg\n")
        daemon.wait_event("job_finished")
        (daemon.inbox / ".cafe.part").write_text(f"{server.base}/img/cafe.jpg\n")
        os.rename(daemon.inbox / ".cafe.part", latin1)
        daemon.wait_event("job_finished", count=2, timeout=10)
        assert daemon.events("watch_failed")[0]["fallback"] == "restart"
        # Watched again. (The name may break the new watcher once more, as its
        # claim renames it away; a restart scans the inbox, so a list dropped
        # meanwhile is found all the same, long before the 60 s rescan.)
        daemon.wait_event("watch_restarted", timeout=10)
        drop(daemon.inbox, "after.txt", f"{server.base}/img/after.jpg\n")
        daemon.wait_event("job_finished", count=3, timeout=10)
        assert daemon.proc.poll() is None
    finally:
        daemon.stop_cleanly()
    # Every line of the log is UTF-8 JSON; the name is there as an escape.
    raw = daemon.log_path.read_bytes().decode("utf-8")
    assert [json.loads(line)["event"] for line in raw.splitlines()][-1] == "daemon_stopped"
    claimed = {e["file"] for e in daemon.events("list_claimed")}
    assert claimed == {"first.txt", "caf\udce9.txt", "after.txt"}
    assert os.path.exists(os.path.join(os.fsencode(daemon.inbox), b"done", b"caf\xe9.txt"))
    assert sorted(p.name for p in daemon.output.iterdir()) == ["after", "caf_", "first"]
