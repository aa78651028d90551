"""Requests of our own, with no credentials: a robots.txt, before or during a download.

on_own_slot   a global slot of its own, whatever the host's pacing: the
              robots.txt comes before the download takes its slots
on_slot       the slot of the download that follows a redirect to a new origin
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import httpx

from .. import errors as err
from .addressguard import literal_is_refused
from .headers import RequestHeaders
from .robots import Send, WithSend
from .slots import Slots
from .translate import HTTP_ERRORS, translate
from .transports import Answer, Transports

T = TypeVar("T")


class Anonymous:
    """GETs with no credentials, on the download slots (and their connections)."""

    def __init__(
        self, transports: Transports, slots: Slots, headers: RequestHeaders, *, block_private: bool
    ) -> None:
        self._transports = transports
        self._slots = slots
        self._headers = headers.anonymous()
        self._block_private = block_private

    async def on_own_slot(self, fetch: Callable[[Send], Awaitable[T]]) -> T:
        """`fetch(send)` on a global slot of its own."""
        async with self._slots.one() as slot:
            return await fetch(partial(self._send, slot))

    def on_slot(self, slot: int) -> WithSend:
        """Runs a fetch on `slot`, which the caller holds."""
        send = partial(self._send, slot)

        async def with_send(fetch: Callable[[Send], Awaitable[T]]) -> T:
            return await fetch(send)

        return with_send

    async def _send(self, slot: int, url: httpx.URL) -> Answer:
        if self._block_private and literal_is_refused(url.host):
            raise err.BlockedAddress(f"{url.host} is not a public address")
        try:
            return await self._transports.send(slot, url, self._headers)
        except HTTP_ERRORS as exc:
            raise translate(exc, url.host) from exc
