"""Why a download failed: one exception type per reason.

httpx and the OS raise many exception types; the fetcher translates them at
its boundary (`translate`) into this tree, so that everything above it (the
retry policy, the job, the log) deals in stable reasons. `reason` is what
`download_failed` logs and the report records; whether a retry may help is
the branch a class sits on.

    DownloadError                      any failure of one URL
    ├── RetryableError                 a later attempt may succeed
    │   ├── ConnectFailed              connect_error: refused, unreachable, DNS down
    │   ├── TimedOut                   timeout: connect, stalled read, or total
    │   ├── ConnectionLost             connection_lost: reset or closed mid-way
    │   ├── Truncated                  truncated: body shorter than Content-Length
    │   └── RetryableStatus            http_error: 408, 429, 5xx (status, retry_after)
    └── PermanentError                 retrying would give the same answer
        ├── RefusedStatus              http_error: any other status (status)
        ├── TooLarge                   too_large: over --max-bytes
        ├── NotAnImage                 not_an_image: neither image/* nor image bytes
        ├── RedirectError              too_many_redirects
        │   ├── RedirectLoop           redirect_loop
        │   └── BadRedirect            bad_redirect: not http(s), or unparseable
        ├── UnknownHost                unknown_host: DNS says the name does not exist
        ├── UntrustedCertificate       certificate_error: TLS verification failed
        ├── BlockedAddress             blocked_address: private-address guard
        ├── OptedOut                   opted_out: X-Robots-Tag noai, noimageai, none or
        │                              noindex for us (no body byte read)
        ├── RobotsDisallowed           robots_disallowed: robots.txt disallows it (--robots)
        │   └── RobotsUnavailable      robots_unavailable: robots.txt answered 5xx or 429,
        │                              or could not be fetched (RFC 9309: disallow, a while)
        ├── ProtocolError              protocol_error: not speaking HTTP
        ├── WriteFailed                write_error
        │   └── DiskFull               disk_full: ENOSPC or EDQUOT
        └── InternalError              internal_error: a bug of ours met on this URL
                                       (`download_crashed` logs its traceback): it
                                       fails alone, the job goes on

    RetryableStatus and RefusedStatus are both an HttpStatusError, which
    carries the `status` (and, for 429 and 503, the server's `retry_after`).

`Interrupted` is not a failure: the daemon is stopping, and the URL stays in
the job for the next run.

`AlreadyThere` is not a failure either: the name is taken in the folder,
and the URL counts as skipped.

`Filtered` is not a failure either: the image came whole, and a filter
(`--min-width`, `--max-pixels`, `--skip-sha256`, ...) dropped it before it
was published. It is not retried, and not listed in failed/.

`JobError` is not a download's: the list as a whole cannot run (its
`reason`: `list_unreadable`, `bad_header`, `folder_error`).
"""

from __future__ import annotations


class DownloadError(Exception):
    """A URL could not be downloaded. `reason` is a stable identifier."""

    reason = "download_error"
    retryable = False

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        # Attempts made before giving up; the fetcher sets it, once.
        self.attempts = 0
        # The HTTP status, for an HTTP error.
        self.status: int | None = None

    @property
    def detail(self) -> str:
        return str(self)


class RetryableError(DownloadError):
    retryable = True


class PermanentError(DownloadError):
    retryable = False


class ConnectFailed(RetryableError):
    reason = "connect_error"


class TimedOut(RetryableError):
    reason = "timeout"


class ConnectionLost(RetryableError):
    reason = "connection_lost"


class Truncated(RetryableError):
    reason = "truncated"


class HttpStatusError(DownloadError):
    """An answer with a status that is neither the image nor a redirect."""

    reason = "http_error"

    def __init__(self, status: int, *, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        # Seconds the server asked us to wait (Retry-After), if it did.
        self.retry_after = retry_after


class RetryableStatus(RetryableError, HttpStatusError):
    """408, 429 and 5xx: the server was busy or broken, not the request."""


class RefusedStatus(PermanentError, HttpStatusError):
    """Any other status (404, 403, ...): asking again gets the same answer."""


class TooLarge(PermanentError):
    reason = "too_large"


class NotAnImage(PermanentError):
    reason = "not_an_image"


class RedirectError(PermanentError):
    reason = "too_many_redirects"


class RedirectLoop(RedirectError):
    reason = "redirect_loop"


class BadRedirect(RedirectError):
    reason = "bad_redirect"


class UnknownHost(PermanentError):
    """DNS answered that the host has no address: a typo or a dead domain.

    Retrying would only ask again: five lookups and ~10 s of backoff for
    every URL of the host. A DNS server that could not be reached
    (EAI_AGAIN) is a `ConnectFailed` instead, and retried.
    """

    reason = "unknown_host"


class UntrustedCertificate(PermanentError):
    """The server's TLS certificate failed verification: expired, self-signed,
    or for another name. Retrying meets the same certificate."""

    reason = "certificate_error"


class BlockedAddress(PermanentError):
    reason = "blocked_address"


class OptedOut(PermanentError):
    """The publisher opted the image out (X-Robots-Tag), seen before its body was read."""

    reason = "opted_out"


class RobotsDisallowed(PermanentError):
    """The host's robots.txt disallows the URL for our token (`--robots`): never requested."""

    reason = "robots_disallowed"


class RobotsUnavailable(RobotsDisallowed):
    """The host's robots.txt could not be had (5xx, 429, unreachable): RFC 9309 says
    disallow everything for a while. Retrying within seconds would meet the same."""

    reason = "robots_unavailable"


class ProtocolError(PermanentError):
    reason = "protocol_error"


class WriteFailed(PermanentError):
    reason = "write_error"


class DiskFull(WriteFailed):
    reason = "disk_full"


class InternalError(PermanentError):
    reason = "internal_error"

    @classmethod
    def of(cls, bug: Exception, *, attempts: int = 0) -> InternalError:
        """The failure of a URL that met `bug` (its cause), after `attempts` tries."""
        error = cls(f"{type(bug).__name__}: {bug}")
        error.attempts = attempts
        error.__cause__ = bug
        return error


class AlreadyThere(Exception):
    """Not a failure: this URL's own file is under the download's name (or,
    its name taken by another's, under its wide-hash name too:
    `FileSink.rename`). It is left as it is, never replaced; the URL is
    `skipped`."""

    def __init__(self, file: str) -> None:
        super().__init__(file)
        self.file = file


class JobError(Exception):
    """The job as a whole cannot run: its list is unreadable, or its folder unusable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Filtered(Exception):
    """An image dropped by a filter. `reason`: `placeholder`, `too_small` or
    `too_many_pixels`; what was known of the image comes with it."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        sha256: str,
        width: int | None,
        height: int | None,
        size: int,
        content_type: str | None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.sha256 = sha256
        self.width = width
        self.height = height
        self.size = size
        self.content_type = content_type
        # Attempts made; the fetcher sets it.
        self.attempts = 0

    @property
    def detail(self) -> str:
        return str(self)


class Interrupted(Exception):
    """The daemon is stopping: the download was not tried, or not finished."""


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups, for a one-line report."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def inbox_error_detail(exc: OSError) -> str:
    """An `inbox_error`'s detail: what the system said, and where (both
    paths of a move)."""
    if exc.filename2 is not None:
        return f"{exc.strerror or exc} moving {exc.filename} to {exc.filename2}"
    return f"{exc.strerror or exc} in {exc.filename or 'the inbox'}"
