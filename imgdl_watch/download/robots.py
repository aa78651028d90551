"""robots.txt (`--robots`): fetched once per origin, cached, and honoured (RFC 9309).

    RobotsFile     what an origin's robots.txt says of us: a parser, or "all"/"nothing"
    RobotsCache    the files by origin: bounded in count and bytes, each with a TTL (pure)
    Robots         the check before a request, fetching a file at most once at a time

The parser is protego's (RFC 9309: groups, `Allow` over `Disallow` by
length, `*` and `$` wildcards, which the standard library's parser lacks).

A fetch that fails follows RFC 9309 (2.3.1):
- a 4xx means there is no robots.txt: everything is allowed;
- a 5xx, a 429 (the host asks for fewer requests: RFC 9309 would allow all,
  but Google treats it as a server error, and so do we), or a host that
  cannot be reached means everything is disallowed, for `ERROR_TTL_S`;
- redirects are followed, `REDIRECTS` of them at most (more: allowed).

Only the first `MAX_BYTES` of a file are read and parsed (RFC 9309 2.5 asks
for at least 500 KiB), so an enormous or endless file costs no more. Each
file is kept `TTL_S` at most (RFC 9309 2.4: 24 hours), and the cache keeps at
most `CACHE_FILES` files and `CACHE_BYTES` of them, dropping the least
recently used first, so that many hosts do not grow it without bound.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import trio

from .. import errors as err
from .redirects import REDIRECTS as REDIRECT_STATUSES
from .redirects import next_hop
from .translate import HTTP_ERRORS
from .transports import Answer

# Bytes of a robots.txt read and parsed; the rest is never read.
MAX_BYTES: Final = 512 * 1024
# Seconds a fetched robots.txt is trusted (RFC 9309 2.4: 24 hours at most).
TTL_S: Final = 24 * 3600.0
# Seconds a failed fetch (5xx, unreachable) disallows the origin before we ask again.
ERROR_TTL_S: Final = 600.0
# Redirects followed to find a robots.txt (RFC 9309 2.3.1.2: at least five).
REDIRECTS: Final = 5
# Seconds one fetch of a robots.txt may take in all, however slowly it comes.
FETCH_TIMEOUT_S: Final = 30.0
# The cache: at most this many origins, and this many bytes of their files.
CACHE_FILES: Final = 1000
CACHE_BYTES: Final = 16 * 1024**2
# A Crawl-delay longer than this is taken as this: one file must not park a
# list for days.
MAX_CRAWL_DELAY_S: Final = 60.0
# Files larger than this are parsed in a worker thread, not on the event loop.
_PARSE_INLINE_BYTES: Final = 64 * 1024

Origin = tuple[str, str, int | None]


class Verdict(enum.Enum):
    RULES = "rules"
    # No robots.txt (4xx, too many redirects): everything allowed.
    ALLOW_ALL = "allow_all"
    # 5xx, 429, unreachable: everything disallowed for a while.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class RobotsFile:
    verdict: Verdict
    # Seconds of the clock after which it is fetched again.
    expires: float
    # protego's parser, for RULES.
    parser: Any = None
    # Bytes it costs the cache.
    size: int = 0
    # Why the origin is unavailable, for the error's detail.
    detail: str = ""

    def allows(self, url: httpx.URL, token: str) -> bool:
        if self.verdict is Verdict.RULES:
            return bool(self.parser.can_fetch(str(url), token))
        return self.verdict is Verdict.ALLOW_ALL

    def crawl_delay(self, token: str) -> float:
        if self.verdict is not Verdict.RULES:
            return 0.0
        delay = self.parser.crawl_delay(token)
        if delay is None or not math.isfinite(delay) or delay <= 0:
            return 0.0
        return float(min(delay, MAX_CRAWL_DELAY_S))


def verdict_for_status(status: int) -> Verdict | None:
    """What a final status says, or None for a 2xx: read the rules."""
    if 200 <= status < 300:
        return None
    if status == 429 or status >= 500:
        return Verdict.UNAVAILABLE
    # 4xx, and anything else that is neither a file nor a server error.
    return Verdict.ALLOW_ALL


def origin_of(url: httpx.URL) -> Origin:
    return url.scheme, url.host, url.port


def robots_url(url: httpx.URL) -> httpx.URL:
    return url.copy_with(
        path="/robots.txt", query=None, fragment=None, username=None, password=None
    )


class RobotsCache:
    """Files by origin, least recently used first, bounded in count and bytes."""

    def __init__(self, *, files: int = CACHE_FILES, max_bytes: int = CACHE_BYTES) -> None:
        self._files = files
        self._max_bytes = max_bytes
        self._entries: OrderedDict[Origin, RobotsFile] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, origin: Origin, now: float) -> RobotsFile | None:
        entry = self._entries.get(origin)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(origin)
            return None
        self._entries.move_to_end(origin)
        return entry

    def put(self, origin: Origin, entry: RobotsFile) -> None:
        if origin in self._entries:
            self._drop(origin)
        self._entries[origin] = entry
        self.bytes += entry.size
        while len(self._entries) > self._files or self.bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, origin: Origin) -> None:
        self.bytes -= self._entries.pop(origin).size


Send = Callable[[httpx.URL], Awaitable[Answer]]
# Runs a fetch with a `Send` of the caller's (on a download slot it holds or takes).
WithSend = Callable[[Callable[[Send], Awaitable["RobotsFile"]]], Awaitable["RobotsFile"]]


class Robots:
    """The robots.txt check: `check(url, send)` raises when `url` is not for us."""

    def __init__(self, token: str, *, cache: RobotsCache | None = None) -> None:
        self.token = token
        self.cache = cache or RobotsCache()
        # Origins being fetched now: later askers wait for the first fetch.
        self._fetching: dict[Origin, trio.Event] = {}
        # Each host's Crawl-delay, from its files in the cache.
        self._delays: dict[str, float] = {}

    def crawl_delay(self, host: str) -> float:
        return self._delays.get(host, 0.0)

    async def check(self, url: httpx.URL, with_send: WithSend) -> None:
        """Raise `RobotsDisallowed` (or `RobotsUnavailable`) unless `url` may be fetched.

        `with_send(fetch)` runs `fetch(send)`, where `send` GETs a URL on a
        download slot: only the one download that fetches a file holds a slot
        for it; the others wait for it holding none.
        """
        entry = await self._file(origin_of(url), url, with_send)
        if entry.allows(url, self.token):
            return
        if entry.verdict is Verdict.UNAVAILABLE:
            raise err.RobotsUnavailable(f"robots.txt of {url.host}: {entry.detail}")
        raise err.RobotsDisallowed(f"robots.txt of {url.host} disallows {url.raw_path.decode()}")

    async def _file(self, origin: Origin, url: httpx.URL, with_send: WithSend) -> RobotsFile:
        while True:
            entry = self.cache.get(origin, trio.current_time())
            if entry is not None:
                return entry
            busy = self._fetching.get(origin)
            if busy is None:
                break
            await busy.wait()
        done = self._fetching[origin] = trio.Event()
        try:
            where = robots_url(url)
            entry = await with_send(lambda send: fetch(where, send))
            self.cache.put(origin, entry)
            delay = entry.crawl_delay(self.token)
            if delay:
                self._delays[url.host] = delay
            else:
                self._delays.pop(url.host, None)
            if len(self._delays) > CACHE_FILES:
                self._delays.clear()  # refilled as files are read again
            return entry
        finally:
            del self._fetching[origin]
            done.set()


async def fetch(url: httpx.URL, send: Send) -> RobotsFile:
    """Fetch and parse the robots.txt at `url`; never raises a `DownloadError`."""
    now = trio.current_time()
    with trio.move_on_after(FETCH_TIMEOUT_S):
        try:
            return await _fetch(url, send, now)
        except err.DownloadError as exc:
            return RobotsFile(Verdict.UNAVAILABLE, now + ERROR_TTL_S, detail=exc.reason)
        except HTTP_ERRORS as exc:  # the body broke off
            detail = type(exc).__name__
            return RobotsFile(Verdict.UNAVAILABLE, now + ERROR_TTL_S, detail=detail)
    return RobotsFile(
        Verdict.UNAVAILABLE, now + ERROR_TTL_S, detail=f"no answer within {FETCH_TIMEOUT_S:g} s"
    )


async def _fetch(url: httpx.URL, send: Send, now: float) -> RobotsFile:
    seen = {str(url)}
    current = url
    for _hop in range(REDIRECTS + 1):
        answer = await send(current)
        try:
            location = answer.headers.get("location")
            if answer.status in REDIRECT_STATUSES and location:
                try:
                    current = next_hop(current, location, seen)
                except err.RedirectError:
                    return RobotsFile(Verdict.ALLOW_ALL, now + TTL_S)
                continue
            verdict = verdict_for_status(answer.status)
            if verdict is Verdict.UNAVAILABLE:
                return RobotsFile(verdict, now + ERROR_TTL_S, detail=f"HTTP {answer.status}")
            if verdict is not None:
                return RobotsFile(verdict, now + TTL_S)
            text = await _read_capped(answer)
        finally:
            await answer.close()
        parser = await _parse(text)
        return RobotsFile(Verdict.RULES, now + TTL_S, parser=parser, size=len(text))
    # More redirects than RFC 9309 asks us to follow: as if there were no file.
    return RobotsFile(Verdict.ALLOW_ALL, now + TTL_S)


async def _read_capped(answer: Answer) -> str:
    """The body's first `MAX_BYTES`, as text; the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.body:
        chunks.append(chunk[: MAX_BYTES - size])
        size += len(chunks[-1])
        if size >= MAX_BYTES:
            break
    return b"".join(chunks).decode("utf-8", errors="replace").removeprefix("\ufeff")


async def _parse(text: str) -> Any:
    from protego import Protego  # noqa: PLC0415 - only with --robots

    if len(text) <= _PARSE_INLINE_BYTES:
        return Protego.parse(text)
    return await trio.to_thread.run_sync(Protego.parse, text)
