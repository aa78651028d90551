"""Publishers' opt-outs in the X-Robots-Tag header: pure logic, no I/O.

A response's X-Robots-Tag lists directives, each for every robot or for one
named robot: `noai, noimageai`, `otherbot: noindex`, `imgdl-watch: none`. A
name applies to the directives after it, up to the next name (as Google
reads the header). Repeated headers arrive joined by ", ", so they parse as
one list.

`OPT_OUT_DIRECTIVES` opt an image out of being downloaded by us, when they
are addressed to all robots or to our token (`agent_token` of our
User-Agent): `noai` and `noimageai` (the images are not for AI datasets,
which is what bulk image downloads feed), `none` and `noindex`. Directives
for other robots are theirs, not ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

OPT_OUT_DIRECTIVES: Final = frozenset({"noai", "noimageai", "none", "noindex"})
# Directives that carry a value after a colon: `max-snippet: 20` is not a
# robot named max-snippet.
_VALUED: Final = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_NAMED: Final = re.compile(r"\s*([A-Za-z0-9_.*-]+)\s*:\s*(.*)", re.DOTALL)
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]+")


def agent_token(user_agent: str) -> str:
    """The product token of a User-Agent: `imgdl-watch/0.1 (...)` -> `imgdl-watch`."""
    found = _TOKEN.match(user_agent.strip())
    return found.group(0).lower() if found else ""


def directives(value: str) -> list[tuple[str | None, str]]:
    """(robot or None for all, directive) for each directive of a header value, lower case."""
    found: list[tuple[str | None, str]] = []
    robot: str | None = None
    for piece in value.split(","):
        named = _NAMED.fullmatch(piece)
        if named and named.group(1).lower() not in _VALUED:
            robot, said = named.group(1).lower(), named.group(2)
        else:
            said = piece
        word = said.strip().lower()
        if word:
            found.append((robot, word.split(":", 1)[0].strip()))
    return found


def opt_out(headers: Iterable[str], token: str) -> str | None:
    """The directive of a response's X-Robots-Tag headers that opts out of us, or None."""
    for value in headers:
        for robot, directive in directives(value):
            if directive in OPT_OUT_DIRECTIVES and robot in (None, "*", token):
                return directive
    return None
