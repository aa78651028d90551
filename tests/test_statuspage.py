"""The status page's server and its HTML, without a browser (see
test_statuspage_browser.py for the page in a real one)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from imgdl_watch.inbox.lifecycle import Inbox
from imgdl_watch.service.status import collect, render
from imgdl_watch.service.statushtml import host_rows, render_page
from imgdl_watch.service.statuspage import StatusServer, is_report_name

HOSTILE = "<img src=x onerror=alert(1)>"


class Tags(HTMLParser):
    """Every start tag of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def hostile_document() -> dict[str, Any]:
    return {
        "inbox": f"/srv/{HOSTILE}",
        "daemon_alive": True,
        "daemons": [
            {"pid": 1, "host": f'"{HOSTILE}', "state": "running", "alive": True,
             "started_at": "t0", "updated_at": "t1", "in_flight": 2, "output_free_bytes": 10**9}
        ],
        "running": [
            {"job": HOSTILE, "done": 5, "failed": 1, "total": 10, "bytes": 1000,
             "rate_img_s": 1.5, "rate_bytes_s": 1000, "eta_s": 3.0, "elapsed_s": 4.0}
        ],
        "queued": [f"{HOSTILE}.txt"],
        "recent": [
            {"job": HOSTILE, "finished_at": "t2", "ok": 7, "failed": 1, "skipped": 0,
             "invalid": 0, "duplicates": 0, "filtered": 2, "bytes": 5, "elapsed_s": 1.0,
             "report": f"{HOSTILE}.report.jsonl"}
        ],
        "hosts": {HOSTILE: {"concurrency": 2, "paused_s": 1.5}},
    }  # fmt: skip


def test_every_field_of_the_page_is_escaped() -> None:
    page = render_page(hostile_document())
    tags = parse(page)
    assert "img" not in tags.tags and "svg" not in tags.tags
    text = "".join(tags.text)
    assert text.count(HOSTILE) >= 5  # job, queue, finished job, inbox, host: each as text
    assert f'"{HOSTILE}' in text
    # The report link is percent-encoded inside its attribute.
    assert 'href="report/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.report.jsonl"' in page
    # A count that a later version adds is shown with the others.
    assert "7 ok, 0 skipped, 1 failed, 0 invalid, 0 duplicates, 2 filtered" in text


def test_a_running_job_has_a_bar_and_the_page_refreshes_without_script() -> None:
    page = render_page(hostile_document())
    assert '<progress class="bar" max="10" value="6"></progress>' in page
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page
    # Self-contained: nothing is loaded from anywhere.
    tags = parse(page)
    assert not {"link", "img", "iframe", "object", "embed"} & set(tags.tags)
    assert not [name for name, _value in tags.attrs if name in ("src", "srcset")]
    assert [v for name, v in tags.attrs if name == "href"] == [
        "report/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.report.jsonl"
    ]


def test_hosts_section_renders_whatever_is_there() -> None:
    assert host_rows({}) is None
    assert "reports no per-host data" in render_page({})
    listed = {"hosts": [{"host": "a.example", "rate": 2.0}, {"host": "b.example", "paused": True}]}
    assert host_rows(listed) == listed["hosts"]
    by_daemon = {"daemons": [{"hosts": {"c.example": {"limit": 3}}}]}
    assert host_rows(by_daemon) == [{"host": "c.example", "limit": 3}]
    page = render_page(listed)
    assert "<th>host</th><th>rate limit (req/s)</th><th>paused</th>" in page
    # A field's name is its heading, underscores as spaces; null is "-".
    odd = render_page({"hosts": [{"host": "a.example", "rate": None, "new_field_s": 1}]})
    assert "<th>new field s</th>" in odd and '<td class="">-</td><td class="">1</td>' in odd
    assert "No host is being throttled" in render_page({"hosts": []})


def write_status(inbox: Inbox, document: dict[str, Any]) -> None:
    inbox.ensure_layout()
    path = Path(inbox.state) / f"status-{document['host']}-{document['pid']}.json"
    path.write_text(json.dumps(document))


def test_the_queue_is_what_the_daemon_would_take(tmp_path: Path) -> None:
    inbox = Inbox(str(tmp_path / "inbox"), categories=["art"])
    inbox.ensure_layout()
    root = Path(inbox.root)
    for folder in ("processing", "done", "failed"):
        (root / "art" / folder).mkdir(parents=True, exist_ok=True)
    (root / "stray").mkdir()  # a folder no category names
    for name in ("cats.txt", "art.txt", "art/dogs.csv", "art/.part.txt", "stray/x.txt"):
        (root / name).write_text("http://a.example/1.jpg\n")
    # art.txt is named after a category: the daemon ignores it (file_ignored).
    wanted = ["art/dogs.csv", "cats.txt"]
    assert collect(inbox.root, ["art"])["queued"] == wanted
    # Told no category, as a status without the daemon's config would be: a
    # live daemon's status file says which there are.
    write_status(
        inbox,
        {"state": "running", "pid": os.getpid(), "host": os.uname().nodename,
         "categories": ["art", "../outside", 7], "running": [], "recent": []},
    )  # fmt: skip
    # Beside the inbox, a folder laid out as a category's, with a list in it:
    # a status file that names it is not followed there.
    for folder in ("processing", "done", "failed"):
        (tmp_path / "outside" / folder).mkdir(parents=True)
    (tmp_path / "outside" / "secret.txt").write_text("http://a.example/1.jpg\n")
    assert collect(inbox.root)["queued"] == wanted
    # status reads only: a category with no folder gets none made.
    assert collect(inbox.root, ["birds"])["queued"] == wanted
    assert not (root / "birds").exists()
    report = collect(inbox.root)
    assert "  art/dogs.csv\n  cats.txt\n" in render(report)
    counts = {"ok": 0, "reused": 2, "failed": 0, "skipped": 0, "invalid": 0, "filtered": 1}
    report["recent"] = [{"job": "art/narrow", "finished_at": "t", "elapsed_s": 1.0, **counts}]
    assert ": 0 ok, 2 reused, 0 failed, 0 skipped, 0 invalid, 1 filtered (1.0 s)" in render(report)


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[StatusServer]:
    inbox = Inbox(str(tmp_path / "inbox"))
    write_status(
        inbox,
        {"state": "running", "pid": os.getpid(), "host": os.uname().nodename,
         "inbox": inbox.root, "output": str(tmp_path / "out"), "started_at": "t0",
         "updated_at": "t1", "in_flight": 0, "queued": 0, "running": [],
         "recent": [{"job": "cats", "finished_at": "2026-01-01T00:00:00Z", "ok": 2,
                     "report": "cats.report.jsonl"}]},
    )  # fmt: skip
    (Path(inbox.done) / "cats.report.jsonl").write_text('{"outcome":"ok"}\n' * 2)
    server = StatusServer("127.0.0.1", 0, inbox=inbox.root, metrics=lambda: (b"m 1\n", "text/x"))
    server.start()
    yield server
    server.stop()


def get(
    server: StatusServer, path: str, *, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def test_status_json_is_the_status_document(page_server: StatusServer) -> None:
    status, headers, body = get(page_server, "/status.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document == collect(page_server.inbox.root)
    assert document["daemon_alive"] is True and document["recent"][0]["job"] == "cats"


def test_page_and_metrics_from_one_server(page_server: StatusServer) -> None:
    status, headers, body = get(page_server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert "cats" in page and 'href="report/cats.report.jsonl"' in page
    # The policy lets exactly the page's own script and style run.
    policy = headers["Content-Security-Policy"]
    for tag in ("script", "style"):
        inline = re.search(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        assert inline is not None
        digest = base64.b64encode(hashlib.sha256(inline.group(1).encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and headers["X-Content-Type-Options"] == "nosniff"
    assert get(page_server, "/metrics")[2] == b"m 1\n"
    assert get(page_server, "/nothing")[0] == 404


def test_reports_are_served_from_done_and_nowhere_else(
    page_server: StatusServer, tmp_path: Path
) -> None:
    done = Path(page_server.inbox.done)
    status, headers, body = get(page_server, "/report/cats.report.jsonl")
    assert status == 200 and body == b'{"outcome":"ok"}\n' * 2
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Content-Security-Policy"] == "sandbox"
    secret = tmp_path / "secret.report.jsonl"
    secret.write_text("secret\n")
    (done / "link.report.jsonl").symlink_to(secret)
    (done / "folder.report.jsonl").mkdir()
    # A FIFO: opening it to read once waited for a writer, forever, with a
    # thread and a descriptor held for each request.
    os.mkfifo(done / "fifo.report.jsonl")
    (done / ".hidden.report.jsonl").write_text("hidden\n")
    (done / "cats.txt").write_text("http://x/\n")
    for path in (
        "/report/link.report.jsonl",  # a symlink in done/
        "/report/folder.report.jsonl",  # not a file
        "/report/fifo.report.jsonl",  # nor is this
        "/report/.hidden.report.jsonl",  # hidden
        "/report/cats.txt",  # a list, not a report
        "/report/..%2Fsecret.report.jsonl",
        "/report/../secret.report.jsonl",
        "/report/%2E%2E%2F%2E%2E%2Fsecret.report.jsonl",
        "/report/sub%2Fcats.report.jsonl",
        "/report/cats.report.jsonl%00",
        "/report/%ff.report.jsonl",
        "/report/",
    ):
        status, _headers, body = get(page_server, path)
        assert status == 404, path
        assert b"secret" not in body and b"hidden" not in body
    assert is_report_name("cats.report.jsonl")
    assert not is_report_name("a/b.report.jsonl") and not is_report_name("..report.jsonl")


def test_read_only_and_loopback_names_only(page_server: StatusServer) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert get(page_server, "/", method=method)[0] == 501
    assert get(page_server, "/", method="HEAD")[0] == 200
    # DNS rebinding: another site's name pointed at 127.0.0.1 gets nothing.
    status, _headers, body = get(page_server, "/status.json", host="evil.example:80")
    assert status == 421 and b"cats" not in body
    for host in ("localhost", f"127.0.0.1:{page_server.port}", "[::1]:9", "localhost:1"):
        assert get(page_server, "/status.json", host=host)[0] == 200, host


def test_the_status_text_escapes_what_a_terminal_would_act_on() -> None:
    # A list named with ESC's sequences (a colour, a window title, a bell)
    # reached the operator's terminal raw through `imgdl-watch status`.
    name = "\x1b[31mRED\x1b]0;TITLE\x07\x1b[0m\u202e"
    document = hostile_document() | {"hosts": [], "queued": [f"{name}.txt"]}
    document["running"][0]["job"] = document["recent"][0]["job"] = name
    text = render(document)
    assert all(line.isprintable() for line in text.splitlines())
    assert text.count("\\x1b[31mRED\\x1b]0;TITLE\\x07\\x1b[0m\\u202e") == 3


def test_a_categorys_reports_are_served_from_its_done_and_nowhere_else(
    page_server: StatusServer, tmp_path: Path
) -> None:
    # A category's job had no report link at all: its report is in its own done/.
    root = Path(page_server.inbox.root)
    (root / "art" / "done").mkdir(parents=True)
    (root / "art" / "done" / "c1.report.jsonl").write_text('{"outcome":"ok"}\n')
    status, _headers, body = get(page_server, "/report/art%2Fc1.report.jsonl")
    assert status == 200 and body == b'{"outcome":"ok"}\n'
    secret = tmp_path / "elsewhere"
    (secret / "done").mkdir(parents=True)
    (secret / "done" / "s.report.jsonl").write_text("secret\n")
    (root / "linked").symlink_to(secret)  # a category's folder, a symlink
    (root / "art2").mkdir()
    (root / "art2" / "done").symlink_to(secret / "done")  # its done/, a symlink
    for path in (
        "/report/linked%2Fs.report.jsonl",
        "/report/art2%2Fs.report.jsonl",
        "/report/..%2Fart%2Fdone%2Fc1.report.jsonl",
        "/report/art%2Fdone%2Fc1.report.jsonl",  # two folders
        "/report/processing%2Fc1.report.jsonl",  # the inbox's own folder
        "/report/art%2F",
        "/report/%2Fc1.report.jsonl",
    ):
        status, _headers, body = get(page_server, path)
        assert status == 404, path
        assert b"secret" not in body
