"""Notifications through Apprise (`--notify URL`, repeatable): the same events
as the hooks, to ntfy, email, Slack, Matrix, a JSON webhook (`json://`)...

Apprise is an optional extra (`pip install 'imgdl-watch[notify]'`), imported
only when a `--notify` is given. It blocks (it speaks HTTP with requests), so
each send runs in a worker thread, one at a time, and nothing here is ever
awaited by a job: `fire()` only queues the event. Each URL is an Apprise
object of its own, so that a retry goes only to the URL that failed. A send
that fails is logged (`notify_failed`) and tried again `RETRIES` times,
`RETRY_DELAYS_S` apart; then it is dropped. On stop, what is queued is
dropped and a send in progress is abandoned (its thread ends on Apprise's
own socket timeouts, ~4 s).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import structlog
import trio

from .. import metrics
from ..redact import excerpt
from .events import JOB_FINISHED, Event

log = structlog.get_logger("imgdl_watch")

# Delays before each retry of a failed send: RETRIES = len(RETRY_DELAYS_S).
RETRY_DELAYS_S = (1.0, 5.0, 30.0)
RETRIES = len(RETRY_DELAYS_S)
# Events waiting to be sent; past this, an event is dropped (and logged).
MAX_QUEUED = 256
# How much of Apprise's own account of a failure a log line carries.
DETAIL_CHARS = 200


class NotifyError(Exception):
    """A `--notify` URL cannot be used. The message is one line, for the user."""


def _apprise() -> Any:
    try:
        import apprise  # noqa: PLC0415 - an optional extra, loaded only when asked for
    except ImportError:
        raise NotifyError(
            "--notify needs Apprise: pip install 'imgdl-watch[notify]' (or pip install apprise)"
        ) from None
    return apprise


class Target:
    """One `--notify` URL, as an Apprise object of its own."""

    def __init__(self, url: str, index: int) -> None:
        apprise = _apprise()
        self._apprise = apprise
        self._client = apprise.Apprise()
        if not self._client.add(url):
            scheme = url.partition("://")[0] if "://" in url else "?"
            raise NotifyError(
                f"--notify URL number {index + 1} ({scheme}://...) is not one that Apprise "
                "knows: see https://github.com/caronc/apprise/wiki for the URL of each service"
            )
        # The URL with its secrets masked, for the log.
        self.name: str = self._client[0].url(privacy=True)

    def send(self, event: Event) -> tuple[bool, str]:
        """Send `event` (blocking: call from a thread). (sent?, Apprise's account)."""
        kind = (
            self._apprise.NotifyType.SUCCESS
            if event.name == JOB_FINISHED
            else self._apprise.NotifyType.FAILURE
        )
        with self._apprise.LogCapture(level=logging.WARNING) as captured:
            result = self._client.notify(body=event.body(), title=event.title(), notify_type=kind)
            sent = bool(result)
            said = captured.getvalue()
        return sent, excerpt(" ".join(said.split()), DETAIL_CHARS)


def targets(urls: Sequence[str]) -> list[Target]:
    """The `--notify` URLs, checked: raises `NotifyError` for one Apprise cannot use."""
    if urls:
        # Apprise logs each failure itself; we log our own line instead.
        logging.getLogger("apprise").addHandler(logging.NullHandler())
        logging.getLogger("apprise").propagate = False
    return [Target(url, i) for i, url in enumerate(urls)]


class Notifications:
    """Sends each event to every target, one at a time, retrying, off the event loop."""

    def __init__(
        self, targets: Sequence[Target], *, delays: Sequence[float] = RETRY_DELAYS_S
    ) -> None:
        self._targets = list(targets)
        self._delays = tuple(delays)
        self._send, self._receive = trio.open_memory_channel[Event](MAX_QUEUED)

    @property
    def enabled(self) -> bool:
        return bool(self._targets)

    def fire(self, event: Event) -> None:
        """Queue `event` for every target. Never blocks."""
        if not self._targets:
            return
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            metrics.recorder.notification("failed")
            log.warning(
                "notify_failed",
                target="*",
                notify_event=event.name,
                job=event.fields.get("job"),
                attempt=0,
                detail=f"{MAX_QUEUED} notifications waiting; this one is dropped",
                retry_s=None,
            )

    async def run(self) -> None:
        """Send what is queued until cancelled (the stop)."""
        async for event in self._receive:
            for target in self._targets:
                await self._deliver(target, event)

    async def _deliver(self, target: Target, event: Event) -> None:
        for attempt in range(1, len(self._delays) + 2):
            # Abandoned on stop: the thread finishes on Apprise's own timeouts.
            sent, said = await trio.to_thread.run_sync(target.send, event, abandon_on_cancel=True)
            if sent:
                metrics.recorder.notification("sent")
                log.info(
                    "notify_sent",
                    target=target.name,
                    notify_event=event.name,
                    job=event.fields.get("job"),
                    attempt=attempt,
                )
                return
            retry = self._delays[attempt - 1] if attempt <= len(self._delays) else None
            metrics.recorder.notification("failed")
            log.warning(
                "notify_failed",
                target=target.name,
                notify_event=event.name,
                job=event.fields.get("job"),
                attempt=attempt,
                detail=said or "Apprise could not send it",
                retry_s=retry,
            )
            if retry is None:
                return
            await trio.sleep(retry)
