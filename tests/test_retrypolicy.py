from __future__ import annotations

import datetime as dt

from imgdl_watch import errors as err
from imgdl_watch.download.retrypolicy import (
    Backoff,
    parse_retry_after,
    status_error,
    status_is_retryable,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_retryable_statuses() -> None:
    assert all(status_is_retryable(s) for s in (408, 429, 500, 502, 503, 504))
    assert not any(status_is_retryable(s) for s in (400, 401, 403, 404, 410, 451))


def test_full_jitter_backoff_grows_and_is_capped() -> None:
    policy = Backoff(base_s=0.5, cap_s=4.0)
    assert policy.delay(1, rand=lambda: 1.0) == 0.5
    assert policy.delay(3, rand=lambda: 1.0) == 2.0
    assert policy.delay(10, rand=lambda: 1.0) == 4.0
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.delay(3, rand=lambda: 0.5) == 1.0


def test_retry_after_wins_and_is_capped() -> None:
    policy = Backoff(retry_after_cap_s=60)
    assert policy.delay(1, rand=lambda: 1.0, retry_after=7) == 7
    assert policy.delay(1, rand=lambda: 1.0, retry_after=86400) == 60


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("120", now=NOW) == 120
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=NOW) == 30
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=NOW) == 0
    assert parse_retry_after("soon", now=NOW) is None
    # Digits that are not ASCII (latin-1's "²", full-width ones): no delay
    # given, not a ValueError that ended the whole job.
    assert parse_retry_after("\xb2", now=NOW) is None
    assert parse_retry_after("\uff11\uff12", now=NOW) is None
    assert parse_retry_after(None, now=NOW) is None


def _concrete_errors() -> list[type[err.DownloadError]]:
    found, todo = [], [err.DownloadError]
    while todo:
        kind = todo.pop()
        todo.extend(kind.__subclasses__())
        found.append(kind)
    bases = {err.DownloadError, err.RetryableError, err.PermanentError, err.HttpStatusError}
    return [k for k in found if k not in bases]


def test_every_download_error_sits_on_one_branch_of_the_tree() -> None:
    # Whether a retry may help is the branch a class is on, never an instance's say.
    for kind in _concrete_errors():
        retryable = issubclass(kind, err.RetryableError)
        assert retryable != issubclass(kind, err.PermanentError), kind
        assert kind.retryable is retryable, kind
        assert "retryable" not in vars(kind) or kind in (err.RetryableError, err.PermanentError)


def test_a_status_error_is_retryable_by_its_status() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for status, kind in [(404, err.RefusedStatus), (408, err.RetryableStatus),
                         (429, err.RetryableStatus), (503, err.RetryableStatus),
                         (403, err.RefusedStatus), (500, err.RetryableStatus)]:  # fmt: skip
        error = status_error(status, {"retry-after": "7"}, now=now)
        assert type(error) is kind and error.status == status
        assert isinstance(error, err.HttpStatusError) and error.reason == "http_error"
        assert error.retry_after == (7.0 if status in (429, 503) else None)
