"""imgdl-watch: a download daemon for lists of image URLs."""

import sys

from .version import __version__

# Start-up time: structlog's dev module imports rich, when it is installed,
# only to draw tracebacks at a terminal, which we never show (they go to the
# JSON log). That costs every command ~35 ms (measured), a one-shot `fetch`
# included. So rich is hidden from that one import; the progress bar of
# `fetch` imports rich itself, later, when it draws one.
if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]

__all__ = ["__version__"]
