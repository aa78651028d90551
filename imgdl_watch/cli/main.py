"""The command line: `imgdl-watch run | fetch | status`.

    parser      the commands, their options, the exit codes
    common      one-line errors, settings, folder checks, the log
    run         the daemon
    fetch       one-shot lists, with a progress bar at a terminal (terminal)
    status      what the daemons on an inbox are doing

Every error a user can cause ends here as one line on stderr and an exit
code: 2 for usage, configuration and unreadable input, 1 when a download
failed, 130 when interrupted. No traceback reaches the terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..config import ConfigError
from ..errors import first_leaf
from .common import Logged, fail, log_crash, settings_for, tell
from .parser import EXIT_FAILED, EXIT_INTERRUPTED, build_parser


def entry() -> NoReturn:
    """The console script: `main()`, then exit.

    After `fetch`, the process exits without the interpreter's teardown,
    which frees every object of a large run one by one (~40 ms after 1183
    images, measured): every file is closed and the log flushed by then, and
    a one-shot command's exit is part of its wall time.
    """
    code = main()
    if len(sys.argv) > 1 and sys.argv[1] == "fetch":
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass  # the reader went away (`| head`): nothing left to tell it
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_command(argv)
    try:
        settings = settings_for(args.command, args)
        # Each command's module is imported only when it runs: `fetch` needs
        # neither the watcher nor its Rust library, and a one-shot command's
        # start-up time is part of its wall time.
        if args.command == "run":
            from .run import run  # noqa: PLC0415

            return run(settings, args)
        if args.command == "status":
            from .status import status  # noqa: PLC0415

            return status(settings, json_output=args.json)
        from .fetch import fetch  # noqa: PLC0415

        return fetch(settings, args.lists)
    except ConfigError as exc:
        return fail(str(exc))
    except BaseExceptionGroup as group:
        # Trio wraps what its tasks raise. A Ctrl-C before our own signal
        # handling is in place arrives this way; anything else is a crash.
        interrupt, rest = group.split(KeyboardInterrupt)
        if interrupt is not None and rest is None:
            tell("interrupted")
            return EXIT_INTERRUPTED
        if isinstance(group, Exception):
            return _crash(group)
        raise
    except KeyboardInterrupt:
        tell("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, never a traceback
        return _crash(exc)


def _crash(exc: Exception) -> int:
    """A bug: log it (once) with its traceback, and tell the user in one line."""
    leaf = first_leaf(exc.__cause__ if isinstance(exc, Logged) and exc.__cause__ else exc)
    if not isinstance(exc, Logged):
        log_crash(leaf)
    return fail(
        f"internal error: {type(leaf).__name__}: {leaf} (the log has the details)", EXIT_FAILED
    )
