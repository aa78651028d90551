"""One request on a slot, and what its answer is: a redirect, a refusal, or an image.

The one step of a download that runs either in the fetcher's process or in
a download worker's (`worker`), so that both read an answer alike: the
request goes out on the slot's own connections (`transports`); a redirect
with a Location, and any status that is not the image, come back as values
for the caller to decide on (the next hop, the refusal's error and its
pause are the fetcher's, `hostpolicy`); an X-Robots-Tag that opts us out
raises `OptedOut` before a byte of the body is read; an image's body is
received and checked into a sink in the job's folder (`body`), not yet
published. httpx's and httpcore's errors leave it translated (`translate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import httpx

from .. import errors as err
from ..naming import final_name, has_extension
from .bandwidth import CappedBody
from .body import BodyRules, Received, receive
from .headers import RawHeaders
from .optout import opt_out
from .redirects import REDIRECTS
from .translate import HTTP_ERRORS, translate
from .transports import Answer, Transports

# Statuses whose body is the image. 203 is a 200 passed on by a proxy.
OK: Final = frozenset({200, 203})

# An answer with its body read no faster than a bandwidth cap allows, and
# the reader to close; (the answer, None) when there is no cap.
Cap = Callable[[Answer], tuple[Answer, CappedBody | None]]


class Redirect(NamedTuple):
    location: str


class Refusal(NamedTuple):
    status: int
    headers: Mapping[str, str]


async def exchange(
    transports: Transports,
    slot: int,
    url: httpx.URL,
    headers: RawHeaders,
    timeouts: dict[str, Any],
    *,
    body: BodyRules,
    dir_fd: int,
    name: str,
    opt_out_token: str | None,
    cap: Cap | None = None,
    source: bytes = b"",
) -> Redirect | Refusal | tuple[str, Received]:
    """GET `url` on `slot`: a redirect, a refusal, or the image's final name
    (`name`, with the extension the body shows when it has none) and its
    whole, checked body. `opt_out_token`: the robots token an X-Robots-Tag
    opts us out by, or None when opt-outs are ignored. `source`: the tag of
    the URL the download is for (a redirect's first), set on the file. Raises a
    `DownloadError` (`OptedOut` among them) or `Filtered`."""
    try:
        answer = await transports.send(slot, url, headers, timeouts)
        try:
            location = answer.headers.get("location")
            if answer.status in REDIRECTS and location:
                return Redirect(location)
            if answer.status not in OK:
                return Refusal(answer.status, answer.headers)
            if opt_out_token is not None and answer.robots_tags:
                directive = opt_out(answer.robots_tags, opt_out_token)
                if directive is not None:
                    raise err.OptedOut(f"X-Robots-Tag: {directive}")
            got = await _receive(answer, body, dir_fd, name, cap, source=source)
        finally:
            await answer.close()
    except HTTP_ERRORS as exc:
        raise translate(exc, url.host) from exc
    return final_name(name, got.content_type, got.sniffed), got


async def _receive(
    answer: Answer, rules: BodyRules, dir_fd: int, name: str, cap: Cap | None, *, source: bytes
) -> Received:
    capped = None
    if cap is not None:
        answer, capped = cap(answer)
    try:
        need_type = not has_extension(name)
        svgz = name.lower().endswith(".svgz")
        return await receive(answer, dir_fd, rules, need_type=need_type, source=source, svgz=svgz)
    finally:
        if capped is not None:
            capped.close()
