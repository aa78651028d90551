"""`imgdl-watch status`: what the daemons on an inbox are doing."""

from __future__ import annotations

import json
import os

from ..config import Settings
from ..service.status import collect, render
from .common import fail
from .parser import EXIT_OK


def status(settings: Settings, *, json_output: bool) -> int:
    if not os.path.isdir(settings.inbox):
        return fail(f"no inbox at {settings.inbox}: give the daemon's --inbox DIR")
    report = collect(settings.inbox, [c.name for c in settings.categories])
    if json_output:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return EXIT_OK
