"""The local server for the benchmark: nginx when installed, Python otherwise.

Two ports serve the corpus: one answers at once (the static set), one waits
`latency` seconds before each response (the latency set), via the echo
module's `echo_sleep`. With nginx, the same server also plays the mix set's
24 hosts (`mix.py`), one server block per loopback address. nginx with two
workers is never the bottleneck here; the Python fallback may be, says so,
and has no mix.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks import mix as mixes

ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

NGINX_CONF = """
{load_module}
worker_processes 2;
daemon off;
pid {work}/nginx.pid;
# The mix's stalling host holds requests for half a minute: a stop must not wait for them.
worker_shutdown_timeout 1s;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format timed '$msec $request_uri $status $server_addr $connection $request_time';
    access_log {work}/access.log timed buffer=64k flush=50ms;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    types {{ image/jpeg jpg jpeg; }}
    server {{
        listen 127.0.0.1:{static_port} backlog=4096;
        root {root};
    }}
    server {{
        listen 127.0.0.1:{latency_port} backlog=4096;
        root {root};
        location / {{
            echo_sleep {latency};
            echo_exec @file;
        }}
        location @file {{ }}
    }}
    {mix_servers}
}}
"""


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Servers:
    static: str
    latency: str
    kind: str
    access_log: Path | None
    stop: Callable[[], None]
    mix: mixes.Mix | None = None


def _wait_listening(port: int, address: str = "127.0.0.1") -> None:
    for _ in range(200):
        try:
            socket.create_connection((address, port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"server on port {port} did not start")


def start(root: Path, *, latency: float = 0.1, mix_paths: list[str] | None = None) -> Servers:
    """The servers; with `mix_paths` (the corpus's paths) and nginx, the mix's hosts too."""
    static_port, latency_port = free_port(), free_port()
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if nginx and os.path.exists(ECHO_MODULE):
        work = Path(tempfile.mkdtemp(prefix="imgdl-bench-nginx-"))
        (work / "tmp").mkdir()
        mix = None
        if mix_paths is not None:
            mix = mixes.build(mix_paths, free_port(f"127.0.0.{mixes.FIRST_ADDRESS}"))
        conf = work / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                load_module=f"load_module {ECHO_MODULE};",
                work=work,
                root=root.resolve(),
                static_port=static_port,
                latency_port=latency_port,
                latency=latency,
                mix_servers=mix.nginx_servers(root.resolve()) if mix else "",
            )
        )
        proc = subprocess.Popen([nginx, "-c", str(conf), "-e", str(work / "error.log")])
        _wait_listening(static_port)
        _wait_listening(latency_port)
        if mix is not None:
            for host in mix.hosts:
                _wait_listening(mix.port, host.address)

        def stop() -> None:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(10)
            shutil.rmtree(work, ignore_errors=True)

        return Servers(
            f"http://127.0.0.1:{static_port}",
            f"http://127.0.0.1:{latency_port}",
            "nginx",
            work / "access.log",
            stop,
            mix,
        )
    print("warning: nginx with the echo module is not installed; the Python server "
          "may be the bottleneck (apt-get install nginx-light libnginx-mod-http-echo)",
          file=sys.stderr)  # fmt: skip
    servers = []
    for port, delay in ((static_port, 0.0), (latency_port, latency)):

        class Handler(SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def __init__(self, *args: object, delay: float = delay, **kw: object) -> None:
                self._delay = delay
                super().__init__(*args, directory=str(root), **kw)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                if self._delay:
                    time.sleep(self._delay)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

    def stop_python() -> None:
        for server in servers:
            server.shutdown()

    return Servers(
        f"http://127.0.0.1:{static_port}",
        f"http://127.0.0.1:{latency_port}",
        "python",
        None,
        stop_python,
    )
