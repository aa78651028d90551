"""Receiving a response's body: whole, within the size cap, and an image.

We ask for `Accept-Encoding: identity` and read the raw body: the file is
exactly what the server holds, and a compressed bomb cannot inflate in
memory. The size cap is checked against Content-Length before the body is
read, and again against the bytes as they stream.

A body counts as an image when its Content-Type is `image/*` or its first
bytes are one (`imagecheck.sniff`); one that claims `image/*` but is markup
or JSON (`imagecheck.disguised`) is not. `any_type` saves whatever comes.

The body's sha256 is computed as it streams (never by reading the file
back) and left on its sink (`FileSink.sha256`): the archive records it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from .. import errors as err
from .filesink import FileSink
from .imagecheck import SNIFF_BYTES, disguised, is_image_type, sniff
from .transports import Answer


@dataclass(frozen=True, slots=True)
class BodyRules:
    """What a body must be to be saved."""

    # Largest body saved, in bytes.
    max_bytes: int
    # Save any Content-Type, not only images.
    any_type: bool


@dataclass(frozen=True, slots=True)
class Received:
    """A whole, checked body in its sink, not yet published, and what it is."""

    sink: FileSink
    content_type: str | None
    # The image type its first bytes show, when they were looked at.
    sniffed: str | None


async def receive(answer: Answer, dir_fd: int, rules: BodyRules, *, need_type: bool) -> Received:
    """Stream `answer`'s body into a new sink in the folder `dir_fd`, and check it.

    `need_type`: the caller needs the body's image type even when nothing is
    checked (to name a file that has no extension). Raises a `DownloadError`;
    the sink is then discarded.
    """
    limit = rules.max_bytes
    length = _content_length(answer.headers)
    if length is not None and length > limit:
        raise err.TooLarge(f"Content-Length {length} is over the cap of {limit}")
    content_type = answer.headers.get("content-type")
    typed_image = is_image_type(content_type)
    checked = not rules.any_type
    # The first bytes: to sniff an untyped body, to unmask a typed one, or to
    # tell the caller the type.
    want_head = checked or need_type
    head = b""
    sink = FileSink(dir_fd)
    digest = hashlib.sha256()
    try:
        async for chunk in answer.body:
            if sink.size + len(chunk) > limit:
                raise err.TooLarge(f"body is over the cap of {limit} bytes")
            if want_head and len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            digest.update(chunk)
            await sink.write(chunk)
        if length is not None and sink.size < length:
            raise err.Truncated(f"{sink.size} of {length} bytes")
        if sink.size == 0:
            raise err.NotAnImage("empty body")
        sniffed = sniff(head) if want_head else None
        if checked and not typed_image and sniffed is None:
            raise err.NotAnImage(f"Content-Type {content_type or 'missing'}")
        if checked and typed_image and (kind := disguised(head)) is not None:
            raise err.NotAnImage(f"Content-Type {content_type}, but the body is {kind}")
        sink.sha256 = digest.hexdigest()
        return Received(sink, content_type, sniffed)
    except BaseException:
        sink.discard()
        raise


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
