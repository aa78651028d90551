"""`imgdl-watch status`: what the daemons on an inbox are doing."""

from __future__ import annotations

import json
import os
import sys

from ..config import Settings
from ..service.status import collect, render
from .common import fail
from .parser import EXIT_FAILED, EXIT_OK


def status(settings: Settings, *, json_output: bool) -> int:
    if not os.path.isdir(settings.inbox):
        return fail(f"no inbox at {settings.inbox}: give the daemon's --inbox DIR")
    report = collect(settings.inbox, [c.name for c in settings.categories])
    text = json.dumps(report, indent=2) if json_output else render(report)
    try:
        print(text, flush=True)
    except OSError as exc:
        # Standard output goes nowhere from here, so that the interpreter's
        # last flush at exit does not fail on it again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        if not isinstance(exc, BrokenPipeError):  # a full disk (`> /dev/full`), say
            return fail(f"cannot write the status: {exc.strerror or exc}", EXIT_FAILED)
        # The reader went away (`| head -1`): nothing is left to tell it, and
        # nothing went wrong.
    return EXIT_OK
