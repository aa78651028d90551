"""A real HTTP server on 127.0.0.1 for the tests, misbehaving on purpose.

It runs in a thread (or as `python tests/imageserver.py` for trying the
daemon by hand) and counts every request by path, so that tests can prove
what was fetched and how often. Routes, by the first path segment:

    /img/...                 200, image/jpeg, bytes derived from the path
    /noext/...               200, image/png, PNG-looking bytes, no extension in the URL
    /status/CODE/...         that status, every time
    /flaky/N/CODE/...        CODE the first N times (with Retry-After if ?ra=…), then the image
    /redirect/N/...          N redirects, then /img/...
    /auth/USER/PASS/...      the image with Basic credentials USER:PASS, else 401
    /to/...?url=URL          a redirect to URL, anywhere
    /loop/...                a redirect loop
    /badredirect/...         a redirect to ftp:
    /html/...                200 text/html, an error page in disguise
    /liar/...                200 image/jpeg, but the body is an HTML page
    /svg/...                 200 image/svg+xml, a real (tiny) SVG
    /big/BYTES/...           a Content-Length of BYTES (nothing else is sent)
    /endless/...             no Content-Length, image bytes until the client stops
    /short/...               Content-Length says 4000, 1000 bytes come, then close
    /stall/...               headers and half the body, then silence
    /reset/...               the connection is reset before any answer
    /oneshot/...             the image, then the connection is closed without a word
                             (no Connection: close), as a server whose keep-alive ran out
    /gzip/...                a gzip bomb: Content-Encoding gzip, 10 MB of zeros inside
    /coded/...?coding=C      an image with Content-Encoding C, its bytes uncompressed
    /svgz/...                an SVG, gzipped, image/svg+xml with Content-Encoding gzip
    /slow/MS/...             the image, after MS milliseconds
    /typeless/...            200 with no Content-Type, JPEG magic bytes
    /noai/...                X-Robots-Tag: noai and a 64 MB Content-Length, then the body
                             streamed until the client hangs up (`noai_body_bytes`)
    /file/NAME               200, the bytes and Content-Type a test put in `files[NAME]`
                             (404 when there are none)
    any other *.jpg, *.png…  200, as /img/ (so the seed list works with its host pointed here)
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

GZIP_BOMB = gzip.compress(b"\0" * 10_000_000, compresslevel=9)


def image_bytes(path: str, *, kind: str = "jpeg") -> bytes:
    """Deterministic bytes for a path: magic bytes, then 2-80 KB of hash."""
    seed = hashlib.sha256(path.encode()).digest()
    size = 2000 + int.from_bytes(seed[:4], "big") % 78000
    body = (seed * (size // len(seed) + 1))[:size]
    magic = b"\x89PNG\r\n\x1a\n" if kind == "png" else b"\xff\xd8\xff\xe0"
    return magic + body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ImageServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.server.opened_connections += 1
            self.server.peak_connections = max(
                self.server.peak_connections, self.server.connections
            )

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections -= 1
            self.server._requested.notify_all()
        super().finish()

    def _send(
        self, status: int, body: bytes, ctype: str | None = "image/jpeg", **headers: str
    ) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        with self.server.lock:
            self.server.counts[self.path] += 1
            count = self.server.counts[self.path]
            self.server._requested.notify_all()
        self.server.headers_seen.append(dict(self.headers))
        self.server.header_items.append(list(self.headers.items()))
        seg = path.strip("/").split("/")
        route = seg[0]
        try:
            self._route(route, seg, path, query, count)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(
        self, route: str, seg: list[str], path: str, query: dict[str, list[str]], count: int
    ) -> None:
        if route == "img":
            self._send(200, image_bytes(path))
        elif route == "noext":
            self._send(200, image_bytes(path, kind="png"), "image/png")
        elif route == "typeless":
            self._send(200, image_bytes(path), None)
        elif route == "noai":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("X-Robots-Tag", "noai")
            self.send_header("Content-Length", str(64 * 1024**2))
            self.end_headers()
            self.close_connection = True
            chunk = b"\xff\xd8\xff\xe0" + b"\4" * 65532
            for _ in range(1024):
                self.wfile.write(chunk)
                with self.server.lock:
                    self.server.noai_body_bytes += len(chunk)
        elif route == "status":
            self._send(int(seg[1]), b"<html>nope</html>", "text/html")
        elif route == "flaky":
            times, code = int(seg[1]), int(seg[2])
            if count <= times:
                headers = {}
                if "ra" in query:
                    headers["Retry-After"] = query["ra"][0]
                self._send(code, b"busy", "text/plain", **headers)
            else:
                self._send(200, image_bytes(path))
        elif route == "redirect":
            left = int(seg[1])
            rest = "/".join(seg[2:])
            target = f"/redirect/{left - 1}/{rest}" if left > 1 else f"/img/{rest}"
            self._send(302, b"", "text/plain", Location=target)
        elif route == "auth":
            # Basic credentials USER:PASS required; a 401 otherwise.
            secret = base64.b64encode(f"{seg[1]}:{seg[2]}".encode()).decode()
            if self.headers.get("Authorization") == f"Basic {secret}":
                self._send(200, image_bytes(path))
            else:
                self._send(401, b"who are you?", "text/plain", WWW_Authenticate='Basic realm="t"')
        elif route == "to":
            self._send(302, b"", "text/plain", Location=query["url"][0])
        elif route == "loop":
            other = "b.jpg" if seg[-1] == "a.jpg" else "a.jpg"
            self._send(301, b"", "text/plain", Location=f"/loop/{other}")
        elif route == "badredirect":
            self._send(302, b"", "text/plain", Location="ftp://example.invalid/x.jpg")
        elif route == "liar":
            # A "missing image" page that claims to be a JPEG.
            self._send(200, b"\n<!DOCTYPE html><html><body>gone</body></html>", "image/jpeg")
        elif route == "svg":
            self._send(
                200,
                b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
                "image/svg+xml",
            )
        elif route == "html":
            self._send(
                200,
                b"<!doctype html><html><body>Not found</body></html>",
                "text/html; charset=utf-8",
            )
        elif route == "big":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", seg[1])
            self.end_headers()
            self.wfile.write(b"\xff\xd8\xff\xe0" + b"\0" * 1000)
            self.close_connection = True
        elif route == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b"\xff\xd8\xff\xe0" + b"\1" * 65532
            for _ in range(10_000):  # 640 MB at most: bounded, and far past any cap in the tests
                self.wfile.write(chunk)
        elif route == "short":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "4000")
            self.end_headers()
            self.wfile.write(b"\xff\xd8\xff\xe0" + b"\2" * 996)
            self.wfile.flush()
            self.close_connection = True
        elif route == "stall":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "4000")
            self.end_headers()
            self.wfile.write(b"\xff\xd8\xff\xe0" + b"\3" * 1996)
            self.wfile.flush()
            self.server.release.wait(timeout=30)
            self.close_connection = True
        elif route == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif route == "oneshot":
            self._send(200, image_bytes(path))
            self.close_connection = True
        elif route == "gzip":
            self._send(200, GZIP_BOMB, "image/jpeg", Content_Encoding="gzip")
        elif route == "coded":
            # An image whose Content-Encoding is ?coding=...: the image's own
            # bytes whatever it says ("none", "identity, identity", ...).
            self._send(200, image_bytes(path), "image/jpeg", Content_Encoding=query["coding"][0])
        elif route == "svgz":
            # A compressed SVG as Apache serves .svgz files.
            svg = b"<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"
            self._send(200, gzip.compress(svg), "image/svg+xml", Content_Encoding="gzip")
        elif route == "file":
            found = self.server.files.get("/".join(seg[1:]))
            if found is None:
                self._send(404, b"not here", "text/plain")
            else:
                self._send(200, found[0], found[1])
        elif route == "slow":
            time.sleep(int(seg[1]) / 1000)
            self._send(200, image_bytes(path))
        elif path.lower().endswith((".jpg", ".jpeg", ".png", ".gif", ".webp")):
            # Any other image path (the seed list's, with its host pointed here).
            self._send(200, image_bytes(path))
        else:
            self._send(404, b"not here", "text/plain")


class ImageServer(ThreadingHTTPServer):
    daemon_threads = True
    # A flood of connections from many downloads at once must not be refused.
    request_queue_size = 1024

    def __init__(self, port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        # With `tls`, the same routes over https (the handshake runs in the
        # handler's thread, so a client that refuses the certificate stalls nothing).
        self.scheme = "http"
        if tls is not None:
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self.counts: Counter[str] = Counter()
        # What /file/NAME serves: (bytes, Content-Type), set by a test.
        self.files: dict[str, tuple[bytes, str]] = {}
        self.headers_seen: list[dict[str, str]] = []
        # Each request's headers as sent: every one, in order, as spelled.
        self.header_items: list[list[tuple[str, str]]] = []
        self.lock = threading.Lock()
        # Notified at every request and every closed connection, for the waits below.
        self._requested = threading.Condition(self.lock)
        # Client connections open now, and the most ever open at once.
        self.connections = 0
        self.peak_connections = 0
        # Client connections ever opened.
        self.opened_connections = 0
        # Body bytes of /noai/ answers that clients' sockets took.
        self.noai_body_bytes = 0
        # Set to let stalled responses end (so that the server can shut down).
        self.release = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def wait_for_requests(self, count: int, timeout: float = 10) -> None:
        """Block until `count` requests in all have come (AssertionError if not in time).

        From trio: `await trio.to_thread.run_sync(server.wait_for_requests, n)`.
        """
        with self._requested:
            if not self._requested.wait_for(lambda: self.counts.total() >= count, timeout):
                raise AssertionError(f"{self.counts.total()} requests of {count} came in time")

    def wait_for_no_connections(self, timeout: float = 10) -> None:
        """Block until every client connection is closed, as the server sees it
        (a client that closed its connections is seen closing them a little later)."""
        with self._requested:
            if not self._requested.wait_for(lambda: self.connections == 0, timeout):
                raise AssertionError(f"{self.connections} connections still open")

    def start(self) -> ImageServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve test images on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8000)
    port = parser.parse_args().port
    with ImageServer(port) as server:
        print(f"serving {server.base}/img/<any path> (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
