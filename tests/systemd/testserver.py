"""The image server of `make test-systemd`, run inside the container (stdlib only).

    python3 testserver.py ROOT PORT

serves the files of ROOT on every address of the container's own network:
    GET /NAME            the file, at once
    GET /delay/S/NAME    the file after S seconds (S <= 60)
    GET /hold/NAME       the file once ROOT/.release exists (polled; 300 s at most)
and appends the path of each request to ROOT/.requests, so that a check knows
when a download is really in flight.
"""

from __future__ import annotations

import functools
import http.server
import os
import sys
import time

MAX_DELAY_S = 60.0
MAX_HOLD_S = 300.0


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        root = self.directory
        with open(os.path.join(root, ".requests"), "a", encoding="utf-8") as log:
            log.write(self.path + "\n")
        parts = self.path.split("/")
        if len(parts) == 4 and parts[1] == "delay":
            time.sleep(min(float(parts[2]), MAX_DELAY_S))
            self.path = "/" + parts[3]
        elif len(parts) == 3 and parts[1] == "hold":
            end = time.monotonic() + MAX_HOLD_S
            while not os.path.exists(os.path.join(root, ".release")) and time.monotonic() < end:
                time.sleep(0.1)
            self.path = "/" + parts[2]
        super().do_GET()


def main() -> None:
    root, port = sys.argv[1], int(sys.argv[2])
    handler = functools.partial(Handler, directory=root)
    http.server.ThreadingHTTPServer(("0.0.0.0", port), handler).serve_forever()


if __name__ == "__main__":
    main()
