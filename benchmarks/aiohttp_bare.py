"""The yardstick of issue #6's CPU target: a bare asyncio + aiohttp downloader.

The seed's fastest version was an asyncio + aiohttp rewrite (1.4 ms CPU per
image in the issue's measurement), and the target (<= 1.2 ms) is meant to
beat it on its own ground. Its code is not in the seed, so this is the same
kind of program, as bare as `bare.py`: one shared session with `concurrency`
connections, the body read whole, one write per file, and nothing else (no
fsync, checks, retries or logs). `make bench` times it in the same rounds as
the row `aiohttp (bare)`, with the bench environment's Python.

    python aiohttp_bare.py LIST OUTPUT CONCURRENCY
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator

import aiohttp


async def worker(
    items: Iterator[tuple[int, str]], out: str, session: aiohttp.ClientSession
) -> None:
    for number, url in items:
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as response:
            body = await response.read()
        fd = os.open(f"{out}/{number}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.write(fd, body)
        os.close(fd)


async def main(list_path: str, out: str, concurrency: int) -> None:
    with open(list_path) as handle:
        items = iter(list(enumerate(handle.read().split())))
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await asyncio.gather(*(worker(items, out, session) for _ in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
