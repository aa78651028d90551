"""imgdl-watch: a download daemon for lists of image URLs."""

import importlib
import sys
import types

from .version import __version__

# Start-up time. structlog imports two things for features we never use:
# rich, when it is installed, only to draw tracebacks at a terminal (ours go
# to the JSON log), and asyncio, only inside its async log methods. Together
# ~45 ms of every command's start-up (measured), a one-shot `fetch` included.
# So, for that one import, rich is hidden (the progress bar of `fetch`
# imports rich itself, later, when it draws one), and structlog gets a
# stand-in for asyncio that imports the real one on first use.
# (`importlib.util.LazyLoader` cannot do this: the `import` statement itself
# reads the module's `__spec__`, and that loads it.)


class _ImportOnUse(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        return getattr(importlib.import_module(self.__name__), name)


if "structlog" not in sys.modules:
    stand_ins: dict[str, types.ModuleType | None] = {
        "rich": None,
        "asyncio": _ImportOnUse("asyncio"),
    }
    stand_ins = {name: mod for name, mod in stand_ins.items() if name not in sys.modules}
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        import structlog  # noqa: F401
    finally:
        for name in stand_ins:
            del sys.modules[name]

__all__ = ["__version__"]
