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
