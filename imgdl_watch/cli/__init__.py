"""The command line (see `main`)."""

# First, before anything imports structlog (see `startup`).
from .. import startup  # noqa: F401

# isort: split
from .main import entry, main
from .parser import build_parser

__all__ = ["build_parser", "entry", "main"]
