"""A seed-style downloader: the shape of the seed's asyncio + aiohttp version, capped.

The project's origin was a small seed script whose fastest version was an
asyncio + aiohttp rewrite. This is our own program in that style (none of its
code): the whole list read into memory, one task per URL started at once
(`asyncio.gather`), one `aiohttp.ClientSession` with its defaults, the
status and Content-Type checked, the file named after the URL's last path
segment and written with a plain `open().write()` on the event loop. The
seed ran every URL at once; here an `asyncio.Semaphore` caps the downloads
in flight at CONCURRENCY (the connector's own cap is lifted so that the
semaphore is the only one), so that it runs at the concurrency of the other
rows. No fsync, no temporary name, no retries, no per-host cap, no log.

`make bench` times it as the reference row `aiohttp (seed-style)`, with the
bench environment's Python (aiohttp comes with the bench extra).

    python aiohttp_seed.py LIST OUTPUT CONCURRENCY
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp


def file_name(url: str) -> str:
    """The URL's last path segment, without its query."""
    return url[url.rfind("/") + 1 :].split("?", 1)[0] or "image.jpg"


async def fetch(
    url: str, session: aiohttp.ClientSession, cap: asyncio.Semaphore, out: Path
) -> bool:
    async with cap:
        try:
            async with session.get(url) as response:
                if response.status != 200:
                    return False
                if "image" not in response.headers.get("Content-Type", ""):
                    return False
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError):
            return False
        with open(out / file_name(url), "wb") as handle:
            handle.write(body)
        return True


async def main(list_path: str, out: str, concurrency: int) -> int:
    urls = [line.strip() for line in Path(list_path).read_text().splitlines() if line.strip()]
    cap = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=0)  # the semaphore is the cap
    async with aiohttp.ClientSession(connector=connector) as session:
        saved = await asyncio.gather(*(fetch(url, session, cap, Path(out)) for url in urls))
    print(f"{sum(saved)} of {len(urls)} images")
    return 0 if all(saved) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
