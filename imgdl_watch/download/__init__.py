"""The download side: one URL to one file, byte for byte.

    fetcher       the download: one attempt under the limits, and its redirects
    options       the fetcher's options (`FetchOptions`), one value object
    retries       the retry loop, and its download_retry events
    slots         the global limit: numbered slots, taken on the host's turn
    hostpolicy    each host's rules and state, asked by the fetcher (one object)
    anonymous     our own requests with no credentials: a robots.txt
    rules         what one job may shape of its downloads (`DownloadRules`)
    transports    how a request reaches its server: a slot's connections, or a proxy
    connections   a download slot's own keep-alive connections, with no pool
    headers       the headers of each request, and who gets credentials
    redirects     where a redirect leads, and whether we may go there
    translate     httpx's and httpcore's exceptions, translated into ours
    body          receiving a body: whole, within the cap, an image, hashed, filtered
    imagecheck    is it an image, and how large: Content-Type, magic bytes, header
    filesink      writing it, so that a final name is only ever a whole file
    hostlimits    per-host concurrency that adapts to 429 and 503
    pacing        per-host request rate, minimum gap, and Retry-After pauses
    bandwidth     bytes per second read, for the process and per host
    optout        X-Robots-Tag opt-outs, read before any body byte (pure)
    robots        robots.txt (--robots): fetched once per origin, cached, honoured
    hostrules     the config file's [hosts] table: per-host overrides (pure)
    hoststats     what each host has seen of us, for status and metrics
    retrypolicy   what is retried, and how long to wait first
    addressguard  --block-private: the addresses a download may connect to
    workers       --workers: worker processes that send requests for the fetcher
    worker        a worker's process: requests, bodies and files, as told
    workermain    a worker started as a program of its own
    prefork       workers forked at start-up, sharing the daemon's imported pages
    wire          the messages between the fetcher and a worker, over a socketpair
    errands       what those messages are, and errors across them

It knows neither the settings (`config` builds its `FetchOptions` and each
job's `DownloadRules`), nor a job, nor a list.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fetcher import Downloaded, Fetcher
    from .options import FetchOptions
    from .rules import DownloadRules

__all__ = ["DownloadRules", "Downloaded", "FetchOptions", "Fetcher"]

# Where each name lives. Imported on first use (PEP 562), so that a download
# worker (`worker`), which needs a few of the modules, imports no more.
_HOMES = {
    "Downloaded": ".fetcher",
    "Fetcher": ".fetcher",
    "FetchOptions": ".options",
    "DownloadRules": ".rules",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
