"""The status page in a real headless Chromium, against a real daemon.

The test saves a screenshot of the page taken while a job runs, for a
person to look at: test-artifacts/status-page.png at the top of the
repository (SCREENSHOT below).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, chromium
from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer
from tests.test_operator import free_port

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"
)

SCREENSHOT = Path(__file__).parent.parent / "test-artifacts" / "status-page.png"
HOSTILE = "<img src=x onerror=window.pwned=1>"
QUEUED = "<svg onload=window.pwned=2>"
BAR = "document.querySelector('#running progress.bar')"


def test_the_page_follows_a_running_job_and_shows_hostile_names_as_text(
    server: ImageServer, tmp_path: Path
) -> None:
    port = free_port()
    daemon = DaemonProcess(
        tmp_path, "--metrics-port", str(port), "--concurrency", "2", "--max-jobs", "1"
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        daemon.wait_event("daemon_started")
        # 60 images of 150 ms, two at a time: about 4.5 s of job to watch.
        lines = "".join(f"{server.base}/slow/150/{i}.jpg\n" for i in range(60))
        drop(daemon.inbox, f"{HOSTILE}.txt", lines)
        daemon.wait_event("download_ok", count=2)
        drop(daemon.inbox, f"{QUEUED}.txt", f"{server.base}/img/q.jpg\n")  # waits: max-jobs 1
        with chromium() as page:
            page.goto(url)
            page.evaluate("window.sameDocument = true")
            first = page.wait_for(f"{BAR} && {BAR}.value > 0 && {BAR}.value < 60 && {BAR}.value")
            # The bar moves by itself: the page polls /status.json, no reload.
            later = page.wait_for(f"{BAR} && {BAR}.value > {first} && {BAR}.value")
            assert later > first
            assert page.evaluate("window.sameDocument") is True
            assert page.evaluate("document.getElementById('updated').textContent").endswith(
                "(live)"
            )
            # Hostile names are text: no element came of them, no handler ran.
            running = page.evaluate(
                "[...document.querySelectorAll('#running td.name')].map(e => e.textContent)"
            )
            assert running == [HOSTILE]
            page.wait_for("document.querySelectorAll('#queue li.name').length === 1")
            queued = page.evaluate("document.querySelector('#queue li.name').textContent")
            assert queued == f"{QUEUED}.txt"
            assert page.evaluate("document.querySelectorAll('img, svg').length") == 0
            assert page.evaluate("window.pwned") is None
            assert page.evaluate("document.querySelector('#health .ok').textContent") == (
                "daemon running"
            )
            page.screenshot(SCREENSHOT)

            # The finished job, with its counts and a link to its report.
            page.wait_for("document.querySelectorAll('#recent a').length === 2", timeout=60)
            rows = page.evaluate(
                "[...document.querySelectorAll('#recent tr')].slice(1)"
                ".map(r => [...r.children].map(c => c.textContent))"
            )
            by_job = {row[0]: row for row in rows}
            assert by_job[HOSTILE][2].startswith("60 ok, 0 reused, 0 skipped, 0 failed")
            href = page.evaluate(
                "[...document.querySelectorAll('#recent tr')].find("
                f"r => r.children[0].textContent === {json.dumps(HOSTILE)}).querySelector('a').href"
            )
            with urllib.request.urlopen(href, timeout=10) as answer:
                records = [json.loads(line) for line in answer.read().splitlines()]
            assert len(records) == 60 and {r["outcome"] for r in records} == {"ok"}
            assert page.evaluate("window.pwned") is None

            # With JavaScript off: the server's own page, which refreshes itself.
            page.goto(url, scripts=False)
            names = page.evaluate(
                "[...document.querySelectorAll('#recent td.name')].map(e => e.textContent)"
            )
            assert sorted(names) == sorted([HOSTILE, QUEUED])
            assert page.evaluate("document.querySelectorAll('img, svg').length") == 0
            assert "as of" in page.evaluate("document.getElementById('updated').textContent")
            assert page.console == [], page.console
    finally:
        daemon.stop_cleanly()


def test_per_host_data_and_odd_documents_render_in_the_browser(tmp_path: Path) -> None:
    # Per-host data comes from another part of the daemon (issue #16): the
    # page shows whatever fields each host has, escaped, and a job that
    # lacks a field does not stop the page.
    from typing import Any

    from imgdl_watch.service.statuspage import StatusServer

    hostile_host = "<img src=x onerror=window.pwned=3>.example"
    documents: list[dict[str, Any]] = [
        {
            "inbox": "/srv/inbox",
            "daemon_alive": True,
            "daemons": [],
            "running": [{"job": "odd", "done": 3, "failed": 0, "total": 10}],
            "queued": [],
            "recent": [],
            "hosts": {hostile_host: {"concurrency": 2, "ceiling": 8, "paused_s": 1.5}},
        }
    ]

    class Server(StatusServer):
        def document(self) -> dict[str, Any]:
            return documents[-1]

    server = Server("127.0.0.1", 0, inbox=str(tmp_path), metrics=lambda: (b"", "text/plain"))
    server.start()
    try:
        with chromium() as page:
            page.goto(f"http://127.0.0.1:{server.port}/")
            head = "[...document.querySelectorAll('#hosts th')].map(e => e.textContent)"
            assert page.evaluate(head) == ["host", "concurrency", "ceiling", "paused in all (s)"]
            first_cell = "document.querySelector('#hosts td.name').textContent"
            assert page.evaluate(first_cell) == hostile_host
            # A poll's hosts, drawn by the script: a label, and null as "-".
            documents.append({**documents[0], "hosts": {"h.example": {"rate": None, "req_s": 2}}})
            page.wait_for("document.querySelector('#hosts td.name').textContent === 'h.example'")
            assert page.evaluate(head) == ["host", "rate limit (req/s)", "req/s now"]
            cells = "[...document.querySelectorAll('#hosts td')].map(e => e.textContent)"
            assert page.evaluate(cells) == ["h.example", "-", "2"]
            # The next poll: the hosts section gone, the job further on.
            documents.append({**documents[0], "running": [{"job": "odd", "done": 7, "total": 10}]})
            del documents[-1]["hosts"]
            page.wait_for(f"{BAR} && {BAR}.value === 7")
            page.wait_for("document.querySelector('#hosts').textContent.includes('no per-host')")
            assert page.evaluate("window.pwned") is None
            assert page.evaluate("document.querySelectorAll('img').length") == 0
            assert page.evaluate("document.getElementById('updated').textContent").endswith(
                "(live)"
            )
    finally:
        server.stop()
