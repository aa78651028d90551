"""What the fetcher asks of a download worker, and what the worker answers.

    fetcher -> worker                       worker -> fetcher
    Setup        once, first                Hello       ready: its pid and temp token
    Rules        a body's rules and the
                 timeouts, by key
    Folder (+fd) a job folder, by key
    Forget       the job is done with it
    Hop          one request on a slot      Redirected  a redirect's Location
                 and, for an image, its     Refused     a status that is no image
                 body                       Got         a whole, checked body, held
    Publish      a held body, under the     Published   its file is in place,
                 name its Got gave (or an               under the name it took
                 alias, if another URL's
                 file took that)
    (either)                                Failed      a `DownloadError`, `Filtered`
                                                        or `AlreadyThere`
                                            Crashed     anything else (a bug)
    Cancel       the hop or publish, abandoned,
                 or a held body, dropped
    Ping                                    Pong        the worker's loop is alive

Every hop carries an `id`, unique in the fetcher's process; a reply names
the hop it answers, and so does the Publish of its body. The body waits in
the worker for the fetcher's word, as a `FileSink` waits in the fetcher's
own process: a download that is cancelled or times out before it is
published leaves no file, and the download's slot is free while the disk
makes the file durable.

Messages are named tuples (pickled in a few microseconds, where a
dataclass takes ~13: `python -m timeit` on one `Hop`), and only values
cross: an error goes as its class name in `errors`, its arguments and its
attributes (`pack_error`), since some of ours take keyword-only arguments
that pickle's default would not pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import errors as err
from .body import BodyRules
from .durability import Durability
from .headers import RawHeaders


class Setup(NamedTuple):
    connect_timeout: float
    read_timeout: float
    block_private: bool
    durability: Durability


class Rules(NamedTuple):
    key: int
    body: BodyRules
    timeouts: dict[str, Any]


class Folder(NamedTuple):
    key: int


class Forget(NamedTuple):
    key: int


class Hop(NamedTuple):
    id: int
    slot: int
    url: str
    headers: RawHeaders
    # The key of the Rules sent before: the body's rules and the timeouts.
    rules: int
    folder: int
    name: str
    # The robots token an X-Robots-Tag may opt us out by; None: opt-outs ignored.
    token: str | None
    # The tag of the URL the download is for, set on its file (`naming.source_tag`).
    source: bytes = b""


class Publish(NamedTuple):
    id: int
    # The Hop's folder key (the folder stays open while its bodies are held).
    folder: int
    # The name to take if another URL's file took the Got's (`FileSink.rename`).
    alias: str | None = None


class Cancel(NamedTuple):
    id: int


class Ping(NamedTuple):
    id: int


class Hello(NamedTuple):
    pid: int
    # The worker's temporary files start with TEMP_PREFIX + this token.
    token: str


class Redirected(NamedTuple):
    id: int
    location: str


class Refused(NamedTuple):
    id: int
    status: int
    headers: dict[str, str]


class Got(NamedTuple):
    id: int
    file: str
    size: int
    content_type: str | None
    sniffed: str | None
    sha256: str
    width: int | None
    height: int | None


class Published(NamedTuple):
    id: int
    # The name it took: the Got's, or the Publish's alias.
    file: str


class Failed(NamedTuple):
    id: int
    error: tuple[str, tuple[Any, ...], dict[str, Any]]


class Crashed(NamedTuple):
    id: int
    detail: str
    # Where the worker raised it, for the log's `download_crashed`.
    traceback: str = ""


class Pong(NamedTuple):
    id: int


Reply = Redirected | Refused | Got | Published | Failed | Crashed | Pong


def pack_error(exc: Exception) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    return type(exc).__name__, exc.args, dict(vars(exc))


def unpack_error(packed: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Exception:
    """The error a worker raised, as the same class of `errors` with the same state."""
    name, args, state = packed
    kind = getattr(err, name, None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        return RuntimeError(f"a download worker raised {name}: {args}")
    exc = kind.__new__(kind, *args)
    exc.args = args
    vars(exc).update(state)
    return exc
