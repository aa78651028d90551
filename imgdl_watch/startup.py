"""The command line's start-up: structlog imported without what we never use.

structlog imports two things for features we do not use: rich, when it is
installed, only to draw tracebacks at a terminal (ours go to the JSON log),
and asyncio, only inside its async log methods. For that one import, rich is
hidden (the progress bar of `fetch` imports rich itself, later, when it
draws one), and structlog gets a stand-in for asyncio that imports the real
one on first use. (`importlib.util.LazyLoader` cannot do this: the `import`
statement itself reads the module's `__spec__`, and that loads it.)

httpx, for its part, imports its own command-line tool (click, pygments and
rich) whenever click is installed, which Apprise (the `notify` extra)
brings. We never run httpx's tool, so its module is marked absent before
httpx is first imported, and httpx falls back to its stub (`httpx.main`
then says the tool is not installed).

And `imgdl-watch run` ignores SIGHUP, a reload, until the daemon's own
handler takes it: Python's default action would end the process, and the
imports and start-up before that handler take ~0.3 s, in which a
logrotate `postrotate` landing during a restart used to stop the service.
(Ignored, not caught: a SIG_IGN outlives `exec`, and the only processes
started before the handler are the download workers, which ignore it too.)

Importing this module does it: the command line imports it first, before
anything else can import structlog. A one-shot `fetch` pays for its imports
in wall time, a daemon once. What it saves, measured as in
benchmarks/README.md ("Start-up"), is written there.
"""

from __future__ import annotations

import importlib
import signal
import sys
import types


class _ImportOnUse(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        return getattr(importlib.import_module(self.__name__), name)


def import_structlog_lean() -> None:
    """Import structlog with rich hidden and asyncio deferred; a no-op once imported."""
    if "structlog" in sys.modules:
        return
    stand_ins: dict[str, types.ModuleType | None] = {
        "rich": None,
        "asyncio": _ImportOnUse("asyncio"),
    }
    stand_ins = {name: mod for name, mod in stand_ins.items() if name not in sys.modules}
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        import structlog  # noqa: F401, PLC0415
    finally:
        for name in stand_ins:
            del sys.modules[name]


def keep_httpx_tool_out() -> None:
    """Mark httpx's command-line tool absent, unless httpx is imported already."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def hold_reloads() -> None:
    """`run`: SIGHUP ignored until the daemon handles it (see the module's notes)."""
    if sys.argv[1:2] == ["run"]:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


hold_reloads()
import_structlog_lean()
keep_httpx_tool_out()
