from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from structlog.typing import EventDict


def write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def open_list(path: Path) -> int:
    return os.open(path, os.O_RDONLY)


def events(logs: Sequence[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]
