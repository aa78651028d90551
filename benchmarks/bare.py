"""The stack's own floor: the least a trio + httpx (httpcore) downloader can do.

`make bench` times this beside imgdl-watch, in the same interleaved rounds,
as the row `trio (bare)`: what trio, httpcore and h11 cost on this machine
at this minute, with nothing of ours on top. It keeps only the design
lessons that are free (one connection per worker, no pool; the body in
memory; one write per file) and drops everything else a real downloader
owes its user: no fsync and no rename (a crash leaves partial files), file
I/O on the event loop, no timeouts, retries, redirects, checks or logs.

    python bare.py LIST OUTPUT CONCURRENCY

Run it with the product's Python, which has trio, httpx and httpcore.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import httpcore
import httpx
import trio


async def worker(items: Iterator[tuple[int, str]], out: str) -> None:
    connection: httpcore.AsyncHTTPConnection | None = None
    for number, text in items:
        url = httpx.URL(text)
        if connection is None:
            default_port = 443 if url.scheme == "https" else 80
            origin = httpcore.Origin(url.raw_scheme, url.raw_host, url.port or default_port)
            connection = httpcore.AsyncHTTPConnection(origin)
        target = httpcore.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        )
        request = httpcore.Request(
            b"GET", target, headers=[(b"Host", url.netloc), (b"Accept-Encoding", b"identity")]
        )
        response = await connection.handle_async_request(request)
        chunks = [chunk async for chunk in response.stream]  # type: ignore[union-attr]
        await response.aclose()
        fd = os.open(f"{out}/{number}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.write(fd, b"".join(chunks))
        os.close(fd)


async def main(list_path: str, out: str, concurrency: int) -> None:
    with open(list_path) as handle:
        items = iter(list(enumerate(handle.read().split())))
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker, items, out)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
