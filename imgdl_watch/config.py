"""Configuration: one table of options, read from flags, environment and TOML.

Each option is a flag (`--per-host`), an environment variable
(`IMGDL_WATCH_PER_HOST`) and a key of the config file (`per_host`, or
`per-host`). Precedence: flag > environment > file > default. Values are
checked here, once, so that a bad one stops the program at start-up with one
clear line (`ConfigError`) rather than somewhere deep inside it.

**Categories.** A `[category.NAME]` table of the config file makes the inbox
subfolder NAME a category: its lists run with the table's settings, into
`OUTPUT/NAME/<stem>/`. A category may set only the options marked
`per_job` (what shapes one job's downloads: headers, retries, timeouts,
type, size and image filters), and an option marked `limit` no higher than
its global value, so that nothing a category does (and so nothing a list
dropped into it does) widens what the operator allowed. An option becomes
settable per category by marking it; `category_settings` and the builders
below do the rest: `download_rules` fills each field of `DownloadRules` from
the setting of the same name, so a per-job download option needs its mark
here and its field there, and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .download.body import Filters
from .download.durability import Durability
from .download.hostrules import HostRule, HostTable, is_host_name
from .download.options import FetchOptions
from .download.rules import DownloadRules
from .job.job import JobOptions
from .naming import LOCK_SUFFIX
from .version import PROG, __version__

ENV_PREFIX = "IMGDL_WATCH_"
# The levels of `--log-level`, lowest first.
LEVELS = ("debug", "info", "warning", "error", "critical")
# Who we are, as crawlers say it: the product token (robots.txt and
# X-Robots-Tag address us by it), then a comment. `--contact` adds how to
# reach the operator.
USER_AGENT = f"{PROG}/{__version__} (image list downloader)"


class ConfigError(Exception):
    """A setting is wrong. The message is one line, for the user."""


# Upper bounds, so that a slip of the keyboard (an extra zero or three) is
# an error at start-up rather than a process that eats the machine: each
# download slot may cost two tasks per job and six open files.
# More downloads in flight than curl allows (300), with room to spare.
MAX_CONCURRENCY = 1000
# More lists at once than any disk or network would thank us for.
MAX_JOBS = 256
# A retry waits up to 30 s: 100 retries already keep a URL for ~50 minutes.
MAX_RETRIES = 100
# curl's default is 50; a chain longer than this is a loop by another name.
MAX_REDIRECTS = 100
# A hook that needs more than a day is not a hook.
MAX_HOOK_TIMEOUT_S = 86400.0
# The shortest intervals: at 1e-9 s an idle daemon rescanned its inbox at
# 93% of a core, and a job logged 4,000 job_progress lines a second. A
# hundredth of a second still lets tests make daemons contend for each list.
MIN_RESCAN_INTERVAL_S = 0.01
MIN_PROGRESS_INTERVAL_S = 0.1
# Requests per second to one host: more than any host would call polite.
MAX_RATE_PER_HOST = 1000.0
# An hour between two requests to one host already makes a list of 100 last days.
MAX_MIN_GAP_S = 3600.0
# A bandwidth cap below this would stall every read (a read is up to 64 KiB).
MIN_MAX_RATE = 1024
# Pixels on a side: no image format in use goes past 2^16 (JPEG, WebP) or so.
MAX_DIMENSION = 1 << 20
# Width x height: a gigapixel panorama is 1e9; past this, nothing is a photo.
MAX_PIXELS = 10**12
# Digests in a --skip-sha256 file, at most: far more placeholders than exist.
MAX_DIGESTS = 100_000
# The shipped list of known placeholder images (`--skip-sha256`'s default).
PLACEHOLDERS_FILE = os.path.join(os.path.dirname(__file__), "placeholders.txt")
# A category's name: one folder name, plain (it is also a folder of OUTPUT).
_CATEGORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Names a category may not take: the inbox's own folders.
_RESERVED_FOLDERS = frozenset({"processing", "done", "failed"})


def is_category_name(name: str) -> bool:
    """Whether `name` may name a category: one plain folder name, not the
    inbox's own, and not a lock file's (a category's locks are a folder of
    its name beside the top-level stems' `<stem>.lock` files)."""
    lowered = name.lower()
    return (
        bool(_CATEGORY_NAME.fullmatch(name))
        and lowered not in _RESERVED_FOLDERS
        and not lowered.endswith(LOCK_SUFFIX)
    )


def _int_between(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high`."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be {low} to {high}")
        return value

    return parse


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def _at_least(minimum: float) -> Callable[[str], float]:
    """Seconds no shorter than `minimum`: an interval that a slip (`1e-9`)
    would otherwise turn into a busy loop, or a flood of log lines."""

    def parse(text: str) -> float:
        value = _finite(text)
        if not value >= minimum:
            raise ValueError(f"must be at least {minimum:g}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    value = _finite(text)
    if not value >= 0:
        raise ValueError("must be 0 or more")
    return value


def _size(text: str) -> int:
    """Bytes, with an optional K, M, G or T suffix (powers of 1024)."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    if text and text[-1] in "KMGT":
        factor = 1024 ** ("KMGT".index(text[-1]) + 1)
        text = text[:-1]
    value = _finite(text) * factor
    if value < 0:
        raise ValueError("must be 0 or more")
    return int(value)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


# A header name is an HTTP token (RFC 9110, 5.1).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers that the fetcher sets itself, or that describe the connection or
# the body: a value from the user would break the download, not shape it.
# (Accept-Encoding is `identity`, so that the bytes saved are the image's.)
_OUR_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "te"}
)


def _header(text: str) -> tuple[str, str]:
    """`Name: value`, one line."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _HEADER_NAME.fullmatch(name):
        raise ValueError  # the caller says what a header looks like
    if name.lower() in _OUR_HEADERS:
        raise ValueError(f"must not set {name}, which imgdl-watch sets itself")
    return name, _header_value(value, name)


def _header_value(value: str, name: str = "") -> str:
    """A value that HTTP can carry in a header: one line of ASCII."""
    of = f" ({name})" if name else ""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"must be one line{of}")
    if not value.isascii():
        raise ValueError(
            f"must be ASCII{of}, as HTTP header values are (percent-encode any URL in it)"
        )
    return value


def _user_agent(text: str) -> str:
    return _header_value(_text(text))


def _command(text: str) -> str:
    """A command line, split as a shell would (`shlex`), though no shell runs it."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"must be a command line ({exc})") from None
    if not words:
        raise ValueError("must not be empty")
    return text


def _hook_timeout(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_HOOK_TIMEOUT_S:
        raise ValueError(f"must be at most {MAX_HOOK_TIMEOUT_S:g}")
    return value


def _rate(text: str) -> float:
    """Requests per second; 0 for no rate (a `[hosts]` entry's way to exempt a host)."""
    value = _non_negative_float(text)
    if value > MAX_RATE_PER_HOST:
        raise ValueError(f"must be at most {MAX_RATE_PER_HOST:g} requests per second")
    return value


def _gap(text: str) -> float:
    value = _non_negative_float(text)
    if value > MAX_MIN_GAP_S:
        raise ValueError(f"must be at most {MAX_MIN_GAP_S:g} seconds")
    return value


def _bandwidth(text: str) -> int:
    value = _size(text)
    if 0 < value < MIN_MAX_RATE:
        raise ValueError("must be 0 (no cap) or at least 1K bytes per second")
    return value


# A contact goes into the User-Agent's comment: no parentheses, semicolons or spaces.
_EMAIL = re.compile(r"[^@\s()<>;,\\\"]+@[^@\s()<>;,\\\"]+\.[^@\s()<>;,\\\".]+")
_CONTACT_URL = re.compile(r"https?://[^\s()<>;,\\\"]+", re.IGNORECASE)


def _contact(text: str) -> str:
    """How to reach the operator: an http(s) URL or an email address."""
    value = text.strip()
    if not value.isascii() or not (_EMAIL.fullmatch(value) or _CONTACT_URL.fullmatch(value)):
        raise ValueError(
            "must be an http(s) URL or an email address (ASCII, no spaces), "
            "such as https://example.com/bot or ops@example.com"
        )
    return value


def user_agent_with(contact: str | None) -> str:
    """The default User-Agent, with the operator's contact (`--contact`) if any."""
    if contact is None:
        return USER_AGENT
    # A URL is `+URL`, as crawlers write it; an email goes as it is.
    shown = f"+{contact}" if contact.lower().startswith("http") else contact
    return f"{USER_AGENT[:-1]}; {shown})"


@dataclass(frozen=True, slots=True)
class Digests:
    """Known placeholder images, by the hex digest of their bytes."""

    sha256: frozenset[str]
    md5: frozenset[str]
    source: str


def _digests(text: str) -> Digests:
    """A file of hex digests, one per line: 64 digits are a sha256, 32 an md5
    (what imgur's placeholder is known by). `#` starts a comment."""
    path = text.strip()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read(MAX_DIGESTS * 200).splitlines()
    except FileNotFoundError:
        raise ValueError(f"must name a file of sha256 digests; {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"must name a readable file of sha256 digests ({path}: {exc})") from None
    sha256: set[str] = set()
    md5: set[str] = set()
    for number, line in enumerate(lines, 1):
        digest = line.split("#", 1)[0].strip().lower()
        if not digest:
            continue
        if not re.fullmatch(r"[0-9a-f]{64}|[0-9a-f]{32}", digest):
            raise ValueError(
                f"must hold one sha256 (64 hex digits) or md5 (32) per line: "
                f"line {number} of {path} is {_cut(line)!r}"
            )
        (sha256 if len(digest) == 64 else md5).add(digest)
        if len(sha256) + len(md5) > MAX_DIGESTS:
            raise ValueError(f"must hold at most {MAX_DIGESTS} digests ({path})")
    return Digests(frozenset(sha256), frozenset(md5), path)


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "…"


# The most download workers; more than the cores only adds hand-offs.
MAX_WORKERS = 64
AUTO_WORKERS_HELP = (
    "one fewer than the cores, 0 on one core; for fetch, only those it can fork at start-up"
)


def auto_workers() -> int:
    """`--workers auto`: one fewer than the cores (the daemon's own process
    keeps a share of the downloads, `download.workers`). `fetch` takes only
    those of them that it can fork at its start (`cli.fetch`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except OSError:  # a seccomp filter that refuses it: count the machine's
        cores = os.cpu_count() or 1
    return min(MAX_WORKERS, max(0, cores - 1))


def _workers(text: str) -> int | None:
    """A number of workers, or None for auto (resolved as the fetcher starts)."""
    if text.strip().lower() == "auto":
        return None
    return _int_between(0, MAX_WORKERS)(text)


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError("must be a port number, 1 to 65535")
    return value


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = "N"
    # Which commands take the option.
    commands: tuple[str, ...] = ("run", "fetch")
    # Options that are plain switches on the command line.
    switch: bool = False
    # Options given any number of times: a repeated flag, a TOML array, or
    # one value per line of the environment variable. Parsed into a tuple.
    repeat: bool = False
    # Options that shape one job's downloads: a `[category.NAME]` may set them.
    per_job: bool = False
    # A limit: a category may set it no higher than its global value.
    limit: bool = False
    # For a limit: 0 means none (the highest of all).
    zero_is_none: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("inbox", _text, "inbox", "folder watched for lists", "DIR", ("run", "status")),
    Option(
        "output",
        _text,
        None,
        "folder that receives OUTPUT/<list stem>/",
        "DIR",
    ),
    Option(
        "concurrency",
        _int_between(1, MAX_CONCURRENCY),
        32,
        "downloads in flight at once, across all jobs",
        per_job=True,
        limit=True,
    ),
    Option(
        "per_host",
        _int_between(1, MAX_CONCURRENCY),
        8,
        "downloads in flight at once to one host",
        per_job=True,
        limit=True,
    ),
    Option("max_jobs", _int_between(1, MAX_JOBS), 4, "lists processed at once", commands=("run",)),
    Option(
        "retries",
        _int_between(0, MAX_RETRIES),
        4,
        "retries of a failed download that a retry can fix",
        per_job=True,
    ),
    Option(
        "max_bytes",
        _size,
        32 * 1024**2,
        "largest image saved, in bytes (K, M, G, T suffixes)",
        "BYTES",
        per_job=True,
        limit=True,
    ),
    Option(
        "settle",
        _non_negative_float,
        1.0,
        "seconds a list must be unchanged before it is taken",
        "SECONDS",
        ("run",),
    ),
    Option(
        "grace",
        _non_negative_float,
        10.0,
        "seconds in-flight downloads get to finish on stop",
        "SECONDS",
        ("run",),
    ),
    Option(
        "min_free",
        _size,
        0,
        "no download starts while the output's free space is below this",
        "BYTES",
        ("run", "fetch"),
    ),
    Option("connect_timeout", _positive_float, 10.0, "seconds to connect", "SECONDS", per_job=True),
    Option(
        "read_timeout", _positive_float, 30.0, "seconds a read may stall", "SECONDS", per_job=True
    ),
    Option(
        "total_timeout",
        _positive_float,
        300.0,
        "seconds one download attempt may take in all",
        "SECONDS",
        per_job=True,
    ),
    Option(
        "max_redirects",
        _int_between(0, MAX_REDIRECTS),
        10,
        "redirects followed per download",
        per_job=True,
        limit=True,
    ),
    Option(
        "any_type",
        _bool,
        False,
        "save any Content-Type, not only images",
        "BOOL",
        switch=True,
        per_job=True,
    ),
    Option(
        "block_private",
        _bool,
        False,
        "refuse URLs that resolve to loopback, private or link-local addresses",
        "BOOL",
        switch=True,
    ),
    Option(
        "user_agent",
        _user_agent,
        USER_AGENT,
        "User-Agent header sent with each request (the default carries --contact)",
        "TEXT",
        per_job=True,
    ),
    Option(
        "contact",
        _contact,
        None,
        "how hosts reach the operator, a URL or an email, told in the User-Agent "
        "(an email also as the From header)",
        "CONTACT",
    ),
    Option(
        "rate_per_host",
        _rate,
        None,
        "requests per second to one host, across all jobs, with a burst of a "
        "second's worth (off when unset or 0)",
        "RATE",
    ),
    Option(
        "min_gap",
        _gap,
        0.0,
        "seconds at least between two requests to one host, each gap up to 50%% longer "
        "at random (0: none)",
        "SECONDS",
    ),
    Option(
        "max_rate",
        _bandwidth,
        0,
        "bytes per second read by the whole process, such as 2M (0: no cap)",
        "BYTES",
    ),
    Option(
        "ignore_opt_outs",
        _bool,
        False,
        "download what X-Robots-Tag opts out of (noai, noimageai, none, noindex)",
        "BOOL",
        switch=True,
    ),
    Option(
        "robots",
        _bool,
        False,
        "fetch each host's robots.txt and honour its Disallow and Crawl-delay",
        "BOOL",
        switch=True,
    ),
    Option(
        "header",
        _header,
        (),
        "another request header, such as 'Referer: https://example.com/' (repeat for more)",
        "HEADER",
        repeat=True,
        per_job=True,
    ),
    Option(
        "min_width",
        _int_between(0, MAX_DIMENSION),
        0,
        "drop an image narrower than this many pixels (read from its header; 0: off)",
        per_job=True,
    ),
    Option(
        "min_height",
        _int_between(0, MAX_DIMENSION),
        0,
        "drop an image shorter than this many pixels (read from its header; 0: off)",
        per_job=True,
    ),
    Option(
        "max_pixels",
        _int_between(0, MAX_PIXELS),
        0,
        "drop an image of more pixels than this, width x height from its header"
        " (a decompression-bomb bound; 0: off)",
        per_job=True,
        limit=True,
        zero_is_none=True,
    ),
    Option(
        "skip_sha256",
        _digests,
        None,
        "drop images whose sha256 (or md5) is listed in FILE, one per line: known"
        " placeholders ('image removed'); /dev/null for none",
        "FILE",
        per_job=True,
    ),
    Option(
        "url_column",
        _text,
        None,
        "the column (csv, tsv) or key (jsonl) of a list that holds the URLs",
        "NAME",
        per_job=True,
    ),
    Option(
        "durability",
        _choice("file", "filesystem", "none"),
        "file",
        "what a final name promises: file (its data is on disk first; default), "
        "filesystem (the same, by one syncfs per batch: for an output on a filesystem "
        "of its own), none (whole after a crash, not after a power loss)",
        "MODE",
    ),
    Option(
        "workers",
        _workers,
        None,
        "download worker processes that share the requests and file writes with the"
        " daemon's own, which keeps the lists, limits and log: 0 for none, or auto"
        f" ({AUTO_WORKERS_HELP})",
        "N",
    ),
    Option(
        "log_file", _text, None, "also write JSON log lines to this file", "FILE", ("run", "fetch")
    ),
    Option(
        "log_level", _choice(*LEVELS), "info", "lowest level logged: " + ", ".join(LEVELS), "LEVEL"
    ),
    Option(
        "log_format",
        _choice("auto", "json", "console"),
        "auto",
        "stdout format: json, console, or auto (console at a terminal)",
        "FORMAT",
    ),
    Option(
        "progress_interval",
        _at_least(MIN_PROGRESS_INTERVAL_S),
        5.0,
        "seconds between job_progress events",
        "SECONDS",
    ),
    Option(
        "rescan_interval",
        _at_least(MIN_RESCAN_INTERVAL_S),
        5.0,
        "seconds between scans of the inbox when no event comes",
        "SECONDS",
        ("run",),
    ),
    Option(
        "force_polling",
        _bool,
        False,
        "poll the inbox instead of inotify (NFS, CIFS)",
        "BOOL",
        ("run",),
        switch=True,
    ),
    Option(
        "metrics_port",
        _port,
        None,
        "serve Prometheus metrics, the status page and /status.json on this port (off when unset)",
        "PORT",
        ("run",),
    ),
    Option(
        "metrics_bind", _text, "127.0.0.1", "address the metrics server binds to", "ADDR", ("run",)
    ),
    Option(
        "archive",
        _text,
        None,
        "SQLite file that remembers every downloaded URL, its sha256 and its file, "
        "so that no list fetches it again (off when unset)",
        "FILE",
    ),
    Option(
        "on_finished",
        _command,
        None,
        "command run after each finished job, the job_finished event as JSON on its stdin",
        "CMD",
        ("run",),
    ),
    Option(
        "on_failed",
        _command,
        None,
        "command run after each job that failed as a whole (job_failed)",
        "CMD",
        ("run",),
    ),
    Option(
        "on_disk_full",
        _command,
        None,
        "command run when the output's disk is full",
        "CMD",
        ("run",),
    ),
    Option(
        "hook_timeout",
        _hook_timeout,
        60.0,
        "seconds a hook may run before it is killed",
        "SECONDS",
        ("run",),
    ),
    Option(
        "notify",
        _text,
        (),
        "send job_finished, job_failed and disk_full to this Apprise URL, such as "
        "json://host/path or ntfy://topic (repeat for more; needs imgdl-watch[notify])",
        "URL",
        ("run",),
        repeat=True,
    ),
)
OPTION_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every option, resolved: the one place their defaults come from (`OPTIONS`)."""

    inbox: str
    # Resolved: ./downloads for run, . for fetch, unless given.
    output: str
    concurrency: int
    per_host: int
    max_jobs: int
    retries: int
    max_bytes: int
    settle: float
    grace: float
    min_free: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_redirects: int
    any_type: bool
    block_private: bool
    durability: str
    # None: auto (`auto_workers`).
    workers: int | None
    user_agent: str
    contact: str | None
    rate_per_host: float | None
    min_gap: float
    max_rate: int
    ignore_opt_outs: bool
    robots: bool
    header: tuple[tuple[str, str], ...]
    log_file: str | None
    log_level: str
    log_format: str
    progress_interval: float
    rescan_interval: float
    force_polling: bool
    metrics_port: int | None
    metrics_bind: str
    archive: str | None
    on_finished: str | None
    on_failed: str | None
    on_disk_full: str | None
    hook_timeout: float
    notify: tuple[str, ...]
    min_width: int
    min_height: int
    max_pixels: int
    # None: the shipped list (`PLACEHOLDERS_FILE`).
    skip_sha256: Digests | None
    url_column: str | None
    # The config file's `[hosts]` table (from the file only).
    hosts: HostTable = dataclasses.field(default_factory=HostTable)
    config: str | None = None
    # The `[category.NAME]` tables of the config file, checked.
    categories: tuple[Category, ...] = ()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Category:
    """An inbox subfolder that the config names, and the options it sets."""

    name: str
    values: tuple[tuple[str, Any], ...]


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


# What a value of each kind looks like, for the one-line error about a bad one.
_WANTED: Final = {
    "N": "a whole number",
    "BYTES": "a size such as 4096, 500K, 32M or 1G",
    "SECONDS": "a number of seconds",
    "PORT": "a port number",
    "HEADER": "a header such as 'Referer: https://example.com/'",
    "CMD": "a command line",
    "URL": "an Apprise URL",
    "RATE": "a number of requests per second",
    "FILE": "a file of sha256 digests",
}


def _parse(option: Option, raw: Any, where: str) -> Any:
    if not option.repeat:
        return _parse_one(option, raw, where)
    # A flag given many times and a TOML array are lists; the environment
    # holds one value per line.
    if isinstance(raw, list):
        items = raw
    else:
        items = str(raw).splitlines() if isinstance(raw, str) else [raw]
    return tuple(_parse_one(option, item, where) for item in items if str(item).strip())


def _parse_one(option: Option, raw: Any, where: str) -> Any:
    wanted = _WANTED.get(option.metavar, f"a valid {option.metavar.lower()}")
    name = option.name.replace("_", "-")
    if isinstance(raw, bool) and option.parse is not _bool:
        raise ConfigError(f"{where}: {name} must be {wanted}, not true/false")
    if not isinstance(raw, str | int | float):
        # A TOML table, array, date or time: its text would be taken for a
        # value (a folder named "{'a': 1}").
        kind = "a table" if isinstance(raw, dict) else "an array"
        if not isinstance(raw, dict | list):
            kind = "a date or time"
        raise ConfigError(f"{where}: {name} must be a string or a number, not {kind}")
    text = str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        return option.parse(text)
    except ValueError as exc:
        detail = str(exc) if str(exc).startswith("must") else f"{text!r} is not {wanted}"
        raise ConfigError(f"{where}: {name} {detail}") from None


def read_config_file(path: str) -> dict[str, Any]:
    # Imported here: only a run with a config file reads TOML, and the import
    # is 2-3 ms of every other command's start-up (`python -X importtime`).
    import tomllib  # noqa: PLC0415

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid TOML: it is not UTF-8") from None
    table = data.get("imgdl-watch", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [imgdl-watch] must be a table")
    if table is not data:
        # [hosts."name"] and [category.NAME] may be beside [imgdl-watch], as
        # well as inside it; an option beside it would be silently unread
        # (`block_private = true` above the table, say): it is an error.
        table = dict(table)
        for key, value in data.items():
            if key == "imgdl-watch":
                continue
            if key not in TABLES:
                raise ConfigError(
                    f"config file {path}: {key!r} is outside [imgdl-watch]: put it inside the"
                    " table, or drop the table's header"
                )
            if key in table:
                raise ConfigError(f"config file {path}: [{key}] is given twice")
            table[key] = value
    _one_spelling(table, f"config file {path}")
    return table


def _one_spelling(table: Mapping[str, Any], where: str) -> None:
    """A key given as `per_host` and as `per-host` is an error: one would
    silently win over the other."""
    spelled: dict[str, str] = {}
    for key in table:
        earlier = spelled.setdefault(key.replace("-", "_"), key)
        if earlier != key:
            raise ConfigError(f"{where}: {earlier!r} and {key!r} are the same key")


# The tables of a config file beside its options (and beside [imgdl-watch]).
TABLES: Final = ("hosts", "category")


# The keys of a `[hosts."name"]` entry, and the option whose parser checks each.
HOST_KEYS: Final = {
    "rate": "rate_per_host",
    "min_gap": "min_gap",
    "per_host": "per_host",
    "max_rate": "max_rate",
    "header": "header",
}


def host_table(raw: Any, where: str) -> HostTable:
    """The `[hosts]` table, each key checked, with a one-line error for a bad one."""
    if not isinstance(raw, dict):
        raise ConfigError(f'{where}: [hosts] must be a table of [hosts."name"] tables')
    rules = []
    seen: dict[str, str] = {}
    for name, entry in raw.items():
        at = f'{where}: [hosts."{name}"]'
        if not is_host_name(name):
            raise ConfigError(f"{at}: not a host name, nor *.domain for a domain")
        earlier = seen.setdefault(name.lower().rstrip("."), name)
        if earlier != name:
            # One host, two entries: one would silently win over the other.
            raise ConfigError(f'{at}: the same host as [hosts."{earlier}"]')
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be a table, such as rate = 2")
        _one_spelling(entry, at)
        values: dict[str, Any] = {}
        for key, value in entry.items():
            field = key.replace("-", "_")
            if field not in HOST_KEYS:
                known = ", ".join(HOST_KEYS)
                raise ConfigError(f"{at}: unknown key {key!r} (known: {known})")
            option = dataclasses.replace(OPTION_BY_NAME[HOST_KEYS[field]], name=field)
            one_or_more = [value] if option.repeat and not isinstance(value, list) else value
            values[field] = _parse(option, one_or_more, at)
        rules.append(HostRule(name=name.lower().rstrip("."), **values))
    return HostTable(rules)


def _read_categories(raw: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """The `[category.NAME]` tables, each checked for its name and keys; values
    are parsed by `_category`, once the global ones are known."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: category must be a table of [category.NAME] tables")
    found = []
    for name, table in raw.items():
        where = f"config file {path}: [category.{name}]"
        if not is_category_name(name):
            raise ConfigError(
                f"{where}: a category's name is its inbox folder's: letters, digits, '.', '-'"
                " and '_', not starting with '.', not ending in '.lock', and none of"
                " processing, done, failed"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table of options")
        _one_spelling(table, where)
        values: dict[str, Any] = {}
        for key, value in table.items():
            option = OPTION_BY_NAME.get(key.replace("-", "_"))
            if option is None:
                raise ConfigError(f"{where}: unknown key {key!r}")
            if not option.per_job:
                raise ConfigError(
                    f"{where}: a category may not set {key} (only per-job options: "
                    + ", ".join(o.name for o in OPTIONS if o.per_job)
                    + ")"
                )
            values[option.name] = value
        found.append((name, values))
    return found


# The options whose values are paths: relative ones in a config file are
# the file's own (beside it), as a shell's flags are the shell's.
_PATH_METAVARS = ("DIR", "FILE")


def _beside(option: Option, raw: Any, config_path: str) -> Any:
    """A config file's value of `option`: a relative path joined to the
    file's folder; any other value as it is."""
    if option.metavar in _PATH_METAVARS and isinstance(raw, str) and raw.strip():
        return os.path.join(os.path.dirname(os.path.abspath(config_path)), raw.strip())
    return raw


def _category(name: str, raw: dict[str, Any], path: str, values: Mapping[str, Any]) -> Category:
    """A category's options, parsed, with each limit checked against its global value."""
    where = f"config file {path}: [category.{name}]"
    parsed: dict[str, Any] = {}
    for key, raw_value in raw.items():
        option = OPTION_BY_NAME[key]
        value = _parse(option, _beside(option, raw_value, path), where)
        if option.limit and _above(option, value, values[key]):
            raise ConfigError(
                f"{where}: {key} = {raw_value} is above the global {key} ({values[key]}):"
                " a category may lower a limit, never raise it"
            )
        parsed[key] = value
    return Category(name, tuple(sorted(parsed.items())))


def _above(option: Option, value: Any, ceiling: Any) -> bool:
    if option.zero_is_none:
        return bool(ceiling) and (not value or value > ceiling)
    return bool(value > ceiling)


def resolve(
    command: str,
    flags: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    config_path: str | None,
) -> Settings:
    """Settings for `command`: flag > environment > file > default."""
    config_path = config_path or env.get(env_name("config"))
    file_values: dict[str, Any] = {}
    hosts = HostTable()
    raw_categories: list[tuple[str, dict[str, Any]]] = []
    if config_path:
        for key, value in read_config_file(config_path).items():
            if key == "hosts":
                hosts = host_table(value, f"config file {config_path}")
                continue
            if key == "category":
                raw_categories = _read_categories(value, config_path)
                continue
            name = key.replace("-", "_")
            if name not in OPTION_BY_NAME:
                raise ConfigError(f"config file {config_path}: unknown key {key!r}")
            file_values[name] = value
    values: dict[str, Any] = {}
    given: set[str] = set()
    for option in OPTIONS:
        raw = flags.get(option.name)
        if raw is not None:
            values[option.name] = _parse(option, raw, "option --" + option.name.replace("_", "-"))
        elif env_name(option.name) in env:
            values[option.name] = _parse(option, env[env_name(option.name)], env_name(option.name))
        elif option.name in file_values:
            assert config_path is not None  # file values come from one
            values[option.name] = _parse(
                option,
                _beside(option, file_values[option.name], config_path),
                f"config file {config_path}",
            )
        else:
            values[option.name] = option.default
            continue
        given.add(option.name)
    if values["output"] is None:
        values["output"] = "downloads" if command == "run" else "."
    contact = values["contact"]
    if contact is not None:
        if "user_agent" not in given:
            values["user_agent"] = user_agent_with(contact)
        names = {name.lower() for name, _value in values["header"]}
        if "@" in contact and not contact.lower().startswith("http") and "from" not in names:
            # RFC 9110 10.1.2: the From header is how a robot names its operator.
            values["header"] = (*values["header"], ("From", contact))
    categories = tuple(
        _category(name, raw, config_path or "", values) for name, raw in raw_categories
    )
    return Settings(**values, hosts=hosts, config=config_path, categories=categories)


def check_categories(settings: Settings) -> None:
    """Each category's limits against the global values of `settings`: for a
    reload, which applies some of a new file's values and keeps the others
    running, so that no category ends above what runs."""
    for category in settings.categories:
        for key, value in category.values:
            option = OPTION_BY_NAME[key]
            ceiling = getattr(settings, key)
            if option.limit and _above(option, value, ceiling):
                raise ConfigError(
                    f"[category.{category.name}]: {key} = {value} is above the running"
                    f" {key} ({ceiling}), which a reload does not change: restart to raise it"
                )


def category_settings(settings: Settings, name: str) -> Settings:
    """The settings of a job of category `name`: the global ones, with the
    category's over them. Its headers come after the global ones (and so win
    for a name both set). An unknown name gives the global settings."""
    for category in settings.categories:
        if category.name == name:
            changes = dict(category.values)
            if "header" in changes:
                changes["header"] = settings.header + changes["header"]
            return settings.replace(**changes)
    return settings


@functools.cache
def shipped_placeholders() -> Digests:
    """The placeholders `--skip-sha256` drops when it is not set."""
    return _digests(PLACEHOLDERS_FILE)


def download_rules(settings: Settings) -> DownloadRules:
    """What shapes one job's downloads (`settings` as `category_settings` gives
    them): each field of `DownloadRules` from the setting of the same name, so
    that a new per-job option needs only its field there and its mark here."""
    skip = settings.skip_sha256 or shipped_placeholders()
    filters = Filters(
        min_width=settings.min_width,
        min_height=settings.min_height,
        max_pixels=settings.max_pixels,
        skip_sha256=skip.sha256,
        skip_md5=skip.md5,
    )
    shared = {f.name for f in dataclasses.fields(DownloadRules) if f.init} - {"filters"}
    return DownloadRules(**{name: getattr(settings, name) for name in shared}, filters=filters)


def defaults(command: str = "run") -> Settings:
    """Every option at its default, as `command` takes it."""
    return resolve(command, {}, env={}, config_path=None)


def fetch_options(settings: Settings) -> FetchOptions:
    """The download side's options: the settings of the same names."""
    shared = {f.name for f in dataclasses.fields(FetchOptions)} - {
        "backoff",
        "durability",
        "workers",
    }
    return FetchOptions(
        **{name: getattr(settings, name) for name in shared},
        durability=Durability(settings.durability),
        workers=auto_workers() if settings.workers is None else settings.workers,
    )


def job_options(settings: Settings) -> JobOptions:
    return JobOptions(
        progress_interval_s=settings.progress_interval,
        min_free=settings.min_free,
        url_column=settings.url_column,
    )
