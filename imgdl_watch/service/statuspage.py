"""The metrics server (`--metrics-port`): the status page, its JSON and `/metrics`.

    /               the status page (`statushtml`): live with JavaScript,
                    a page that refreshes without
    /status.json    the document `imgdl-watch status --json` prints
                    (`status.collect`; docs/status.md has its schema)
    /metrics        Prometheus' text format, from the daemon's registry
    /report/NAME    a finished job's report, read-only, from INBOX/done/
    /report/CATEGORY/NAME   a category's, from INBOX/CATEGORY/done/

One small threaded `http.server` in a thread of its own, bound to
127.0.0.1 unless `--metrics-bind` says otherwise. It reads what the daemon
writes (the status files, the reports) and never changes anything: it
answers GET and HEAD only.

**Reports.** NAME must be a plain `*.report.jsonl` name, nothing else: no
slash, no leading dot, no NUL, after percent-decoding; CATEGORY, a name a
category may have (`config.is_category_name`). Each folder on the way from
the inbox, and the file, is opened relative to the one before with
O_NOFOLLOW, so neither `..` nor a symlink planted in the inbox (a category's
folder, a done/) leads anywhere else, and only a regular file is served.

**DNS rebinding.** A page on another site could point its own name at
127.0.0.1 and read this server from the user's browser. So while the server
is bound to a loopback address, it answers only requests whose Host is a
loopback name or address (`localhost`, `127.x.x.x`, `[::1]`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from ..config import is_category_name
from ..inbox.folders import open_folder, open_regular
from ..inbox.layout import DONE
from ..inbox.lifecycle import Inbox
from .status import collect
from .statushtml import CSP, render_page

# Bytes of a report sent per write.
REPORT_CHUNK_BYTES = 256 * 1024
# What a report's name looks like: the inbox publishes `<stem>.report.jsonl`.
_REPORT_NAME = re.compile(r"[^/\\\x00]+\.report\.jsonl")
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def is_report_name(name: str) -> bool:
    return bool(_REPORT_NAME.fullmatch(name)) and not name.startswith(".")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The name in a Host header, without its port."""
    header = header.strip().lower()
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


# Seconds a connection to the page may stay silent (a kept-alive browser's
# between polls included) before it is closed.
IDLE_TIMEOUT_S = 30.0


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    protocol_version = "HTTP/1.1"
    server_version = "imgdl-watch"
    sys_version = ""
    # A connection that sends nothing for this long is closed: each holds a
    # thread and a descriptor, and a browser polls again anyway.
    timeout = IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per poll would flood the daemon's log

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        if self.server.loopback_only and not _is_loopback(_host_of(self.headers.get("Host", ""))):
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"not a loopback Host\n", "text/plain", head)
            return
        path = urlsplit(self.path).path
        try:
            if path in ("/", "/index.html"):
                page = render_page(self.server.document()).encode("utf-8")
                self._send(
                    HTTPStatus.OK,
                    page,
                    "text/html; charset=utf-8",
                    head,
                    {"Content-Security-Policy": CSP},
                )
            elif path == "/status.json":
                body = json.dumps(self.server.document(), ensure_ascii=False).encode("utf-8")
                self._send(HTTPStatus.OK, body, "application/json", head)
            elif path == "/metrics":
                body, ctype = self.server.metrics()
                self._send(HTTPStatus.OK, body, ctype, head)
            elif path.startswith("/report/"):
                self._report(unquote(path[len("/report/") :], errors="strict"), head)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except UnicodeDecodeError:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)

    def _report(self, name: str, head: bool) -> None:
        fd = self.server.open_report(name)
        if fd is None:
            self._send(HTTPStatus.NOT_FOUND, b"no such report\n", "text/plain", head)
            return
        with open(fd, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(HTTPStatus.OK)
            self._headers("text/plain; charset=utf-8", size, {"Content-Security-Policy": "sandbox"})
            if head:
                return
            while chunk := handle.read(REPORT_CHUNK_BYTES):
                self.wfile.write(chunk)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        ctype: str,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self._headers(ctype, len(body), extra)
        if not head:
            self.wfile.write(body)

    def _headers(self, ctype: str, length: int, extra: dict[str, str] | None) -> None:
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for key, value in {**_COMMON_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()


class StatusServer(ThreadingHTTPServer):
    """The status page, `/status.json`, `/metrics` and reports, from a thread."""

    daemon_threads = True

    def __init__(
        self,
        address: str,
        port: int,
        *,
        inbox: str,
        metrics: Callable[[], tuple[bytes, str]],
    ) -> None:
        # IPv6 addresses need their family set before binding.
        if ":" in address:
            self.address_family = socket.AF_INET6
        super().__init__((address, port), _Handler)
        self.inbox = Inbox(inbox)
        self.metrics = metrics
        self.loopback_only = _is_loopback(address)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def document(self) -> dict[str, Any]:
        return collect(self.inbox.root)

    def open_report(self, name: str) -> int | None:
        """A descriptor of done/NAME, or CATEGORY/done/NAME, if it is a report
        there (a regular file), else None."""
        category, slash, report = name.rpartition("/")
        if not is_report_name(report) or (slash and not is_category_name(category)):
            return None
        folders = [category, DONE] if category else [DONE]
        try:
            at = open_folder(self.inbox.root, folders)
        except OSError:  # absent, a symlink (ELOOP, ENOTDIR), unreadable
            return None
        try:
            # A regular file only: a FIFO planted in done/ would otherwise
            # block the open until a writer came.
            return open_regular(report, at)
        finally:
            os.close(at)

    def start(self) -> StatusServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name="imgdl-status-page", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve(port: int, address: str, *, inbox: str) -> StatusServer:
    """Turn metrics on and serve the page, its JSON and `/metrics` on `address:port`."""
    from .. import metrics  # noqa: PLC0415

    recorder = metrics.enable()
    return StatusServer(address, port, inbox=inbox, metrics=recorder.exposition).start()
