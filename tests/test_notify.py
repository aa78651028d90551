"""--notify through the real Apprise, against local JSON webhook servers:
one that takes it, one that fails first, one that stalls, and a port that
refuses connections."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from imgdl_watch.service.events import Event
from imgdl_watch.service.notify import Notifications, NotifyError, targets
from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer
from tests.test_operator import free_port


class Webhook(ThreadingHTTPServer):
    """Records each JSON body POSTed to it. `fail_first` answers 500 that many
    times first; `stall_s` waits before answering."""

    daemon_threads = True

    def __init__(self, *, fail_first: int = 0, stall_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail_first = fail_first
        self.stall_s = stall_s
        self.lock = threading.Lock()
        self.received = threading.Event()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server_address[1]}/hook"


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Webhook

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.server.stall_s)
        with self.server.lock:
            self.server.paths.append(self.path)
            failing = self.server.fail_first > 0
            if failing:
                self.server.fail_first -= 1
            else:
                self.server.bodies.append(body)
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if not failing:
            self.server.received.set()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def serve(server: Webhook) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


def event() -> Event:
    counts = {"ok": 3, "failed": 1, "skipped": 0, "invalid": 0, "duplicates": 0, "bytes": 9}
    return Event.job_finished("cats", counts, folder="/out/cats", report="/in/done/cats.r")


EVENT = event()


def deliver(urls: list[str], *, delays: tuple[float, ...] = (0.05, 0.05, 0.05)) -> list[Any]:
    notifications = Notifications(targets(urls), delays=delays)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifications.run)
            notifications.fire(EVENT)
            # Done when each target has said its last word on the event.
            while True:
                await trio.sleep(0.02)
                ends = [e for e in logs if e["event"] == "notify_sent"] + [
                    e for e in logs if e["event"] == "notify_failed" and e["retry_s"] is None
                ]
                if len(ends) == len(urls):
                    nursery.cancel_scope.cancel()

    with capture_logs() as logs:
        trio.run(main)
    return [e for e in logs if e["event"].startswith("notify_")]


def test_a_notification_reaches_a_json_webhook(webhook: Webhook) -> None:
    logs = deliver([webhook.url])
    assert [(e["event"], e["attempt"]) for e in logs] == [("notify_sent", 1)]
    assert logs[0]["target"].startswith("json://127.0.0.1:")
    [body] = webhook.bodies
    assert webhook.paths == ["/hook"]
    assert body["title"] == "imgdl-watch: cats finished" and body["type"] == "success"
    head, document = body["message"].split("\n", 1)
    assert head == "3 ok, 1 failed, 0 skipped, 0 invalid"
    assert json.loads(document) == EVENT.document()


def test_a_refused_connection_is_retried_then_dropped() -> None:
    closed = f"json://127.0.0.1:{free_port()}/hook"
    logs = deliver([closed])
    assert [(e["event"], e["attempt"], e["retry_s"]) for e in logs] == [
        ("notify_failed", 1, 0.05),
        ("notify_failed", 2, 0.05),
        ("notify_failed", 3, 0.05),
        ("notify_failed", 4, None),
    ]
    assert all(e["detail"] for e in logs)


def test_a_failing_webhook_gets_it_on_a_retry_and_others_are_not_sent_twice(
    webhook: Webhook,
) -> None:
    flaky = Webhook(fail_first=2)
    serve(flaky)
    try:
        logs = deliver([flaky.url, webhook.url])
    finally:
        flaky.shutdown()
        flaky.server_close()
    sent = {
        e["target"].rsplit("/", 1)[0]: e["attempt"] for e in logs if e["event"] == "notify_sent"
    }
    assert sorted(sent.values()) == [1, 3]
    assert len(flaky.bodies) == 1 and len(webhook.bodies) == 1


def test_an_unknown_url_or_no_apprise_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotifyError, match=r"^--notify URL number 2 \(nosuch://\.\.\.\) is not"):
        targets(["json://127.0.0.1/x", "nosuch://secret@example"])
    monkeypatch.setitem(sys.modules, "apprise", None)
    with pytest.raises(NotifyError, match=r"pip install 'imgdl-watch\[notify\]'"):
        targets(["json://127.0.0.1/x"])


def test_the_daemon_refuses_a_url_apprise_does_not_know(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "imgdl_watch", "run", "--inbox", str(tmp_path / "in"),
         "--output", str(tmp_path / "out"), "--notify", "nosuch://token@host"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "token" not in done.stderr


def test_a_stalled_webhook_never_holds_up_the_downloads(
    server: ImageServer, tmp_path: Path
) -> None:
    stalled = Webhook(stall_s=3.0)
    serve(stalled)
    daemon = DaemonProcess(
        tmp_path, "--notify", stalled.url, "--notify", f"json://127.0.0.1:{free_port()}/x"
    )
    try:
        daemon.wait_event("daemon_started")
        for i in range(3):
            drop(daemon.inbox, f"list{i}.txt", f"{server.base}/img/{i}.jpg\n")
        started = time.monotonic()
        finished = daemon.wait_event("job_finished", count=3, timeout=30)
        # Three notifications to a webhook that takes 3 s each are at least
        # 9 s of sending: the jobs did not wait for them.
        assert time.monotonic() - started < 6
        assert len(finished) == 3
        daemon.wait_event("notify_sent", timeout=30)
        assert stalled.received.wait(10)
        # The refusing one is tried after the stalled one's send: wait for its
        # line rather than race the stop against it.
        daemon.wait_event("notify_failed", timeout=30)
    finally:
        daemon.stop_cleanly()
        stalled.shutdown()
        stalled.server_close()
    assert daemon.events("notify_failed")  # the refusing one, logged


def test_a_failure_that_is_tried_again_says_when() -> None:
    again = Event.job_failed(
        "cats", "inbox_error", {"ok": 3}, folder="/o/cats", detail="No space left", retry_s=0.4
    )
    assert again.title() == "imgdl-watch: cats failed (inbox_error), tried again in 0.4 s"
    assert again.env()["IMGDL_RETRY_S"] == "0.4" and again.document()["retry_s"] == 0.4
    final = Event.job_failed("cats", "bad_header", {}, folder="/o/cats")
    assert final.title() == "imgdl-watch: cats failed (bad_header)"
    assert "IMGDL_RETRY_S" not in final.env() and "retry_s" not in final.document()
