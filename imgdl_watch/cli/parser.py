"""The command line's words: its commands, their options, and its exit codes.

Every option of the table in `config` is a flag of each command that takes
it, with its default and environment variable in its help.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from ..config import OPTIONS, Option, env_name
from ..version import PROG, __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line: what is wrong, and where to
    read more (argparse's own prints the whole usage first, a dozen lines
    for `fetch`)."""

    # The commands' parsers, by name: an unknown option is theirs to report.
    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_command(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """The arguments; an option that the command does not know is that
        command's error (`imgdl-watch run: error: ...`), not the program's."""
        args, extra = self.parse_known_args(argv)
        if extra:
            self.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
        return args


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    flag = "--" + option.name.replace("_", "-")
    default = option.default
    if option.name == "output":
        default = "./downloads for run, . for fetch"
    elif option.name == "skip_sha256":
        default = "the shipped list of known placeholders"
    elif option.name == "workers":
        default = "auto"
    elif option.name == "url_column":
        default = "url or image_url, in any case"
    shown = f"default: {default}" if default not in (None, ()) else "default: none"
    per_line = ", one per line" if option.repeat else ""
    text = f"{option.help} ({shown}; env {env_name(option.name)}{per_line})"
    if option.switch:
        parser.add_argument(
            flag, dest=option.name, action="store_const", const="true", default=None, help=text
        )
    elif option.repeat:
        parser.add_argument(
            flag, dest=option.name, metavar=option.metavar, action="append", default=None, help=text
        )
    else:
        parser.add_argument(flag, dest=option.name, metavar=option.metavar, default=None, help=text)


def build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Download every image of URL lists: "
        "a daemon that watches an inbox, or a one-shot fetch.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    run = commands.add_parser(
        "run",
        help="watch an inbox and download every list dropped into it",
        description="Watch INBOX for lists of image URLs (*.txt, *.csv, *.tsv or *.jsonl, "
        "optionally .gz or .zst) and download each into OUTPUT/<stem>/.",
    )
    fetch = commands.add_parser(
        "fetch",
        help="download lists once, then exit (0 all ok, 1 some failed, 2 usage or input error)",
        description="Download each LIST into OUTPUT/<stem>/ and exit: 0 when every URL succeeded, "
        "1 when any failed or was invalid, 2 on a usage, config or unreadable-input error.",
    )
    fetch.add_argument(
        "lists",
        nargs="+",
        metavar="LIST",
        help="a list of image URLs: one per line, or a .csv, .tsv or .jsonl list,"
        " gzipped or not (- for standard input)",
    )
    status = commands.add_parser(
        "status",
        help="show what a daemon on an inbox is doing (running jobs, queue, last finished)",
        description="Show the running jobs with their progress and rates, the lists queued in "
        "the inbox, the last finished jobs, and whether a daemon is alive on the inbox. "
        "Works from any shell while the daemon runs; exits 0, or 2 when there is no inbox"
        " at the path given (--inbox, IMGDL_WATCH_INBOX or the config).",
    )
    status.add_argument("--json", action="store_true", help="print one JSON document instead")
    for sub, name in ((run, "run"), (fetch, "fetch"), (status, "status")):
        sub.add_argument(
            "--config",
            metavar="FILE",
            default=None,
            help=f"TOML config file (default: none; env {env_name('config')})",
        )
        for option in OPTIONS:
            if name in option.commands:
                _add_option(sub, option)
    parser.commands = {"run": run, "fetch": fetch, "status": status}
    return parser
