"""`imgdl-watch fetch LIST...`: the same job engine, without an inbox.

Each list runs in turn into OUTPUT/<stem>/; at a terminal, with a progress
bar (`terminal`). A pipe is copied to an unnamed file first, since a job
reads its list from the start.
"""

from __future__ import annotations

import enum
import os
import re
import shlex
import signal
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..config import Settings, download_rules, fetch_options, job_options
from ..download.fetcher import Fetcher
from ..download.options import FetchOptions
from ..download.prefork import Spare, end_spares, fork_spares
from ..inbox.publish import stem_tag
from ..job.job import Job
from ..job.listformat import ListFormat
from ..naming import tagged_stem
from ..version import PROG
from .common import (
    check_writable_folder,
    closing_log,
    ensure_open_files,
    fail,
    open_archive,
    open_log,
    tell,
)
from .parser import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .terminal import ProgressView, summary_paragraph

if TYPE_CHECKING:
    from ..job.archive import Archive

# A job's failures that say its list cannot be read (exit 2); others exit 1.
UNREADABLE_LIST = frozenset({"list_unreadable", "bad_header"})


class Outcome(enum.Enum):
    OK = "every URL succeeded"
    FAILED = "some URL failed or was invalid"
    # A list could not be read at all (corrupt, no URL column, a missing extra).
    UNREADABLE = "a list could not be read"
    INTERRUPTED = "stopped by SIGINT, SIGTERM or SIGHUP"


async def fetch_lists(
    settings: Settings,
    lists: list[tuple[str, int]],
    *,
    options: FetchOptions,
    spares: Sequence[Spare] = (),
    view: ProgressView | None = None,
    archive: Archive | None = None,
) -> Outcome:
    """Run each list in turn, until done or until SIGINT, SIGTERM or SIGHUP
    (the terminal was closed). `options` and `spares`: see `download_side`.

    A signal cancels everything at once (a one-shot command has no grace
    period): temporary files go, finished images stay, and the next run
    skips them.
    """
    output = os.path.abspath(settings.output)  # noqa: ASYNC240 - no I/O, only the cwd
    interrupted = False

    async def on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        nonlocal interrupted
        async for _signum in signals:  # pragma: no branch
            interrupted = True
            scope.cancel()

    outcome = Outcome.FAILED
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with Fetcher(options, spares=spares) as fetcher, trio.open_nursery() as nursery:
            nursery.start_soon(on_signal, signals, nursery.cancel_scope)
            if view is not None:
                nursery.start_soon(view.refresh_loop)
            outcome = await _run_lists(settings, lists, fetcher, output, view, archive=archive)
            nursery.cancel_scope.cancel()
    return Outcome.INTERRUPTED if interrupted else outcome


async def _run_lists(
    settings: Settings,
    lists: list[tuple[str, int]],
    fetcher: Fetcher,
    output: str,
    view: ProgressView | None,
    *,
    archive: Archive | None,
) -> Outcome:
    all_ok, unreadable = True, False
    rules = download_rules(settings)
    for path, fd in lists:
        name = os.path.basename(path)
        job = Job(
            # A failed list the inbox numbered (cats.1.txt) runs as the job it failed in.
            name=tagged_stem(name, stem_tag(fd)),
            list_fd=fd,
            output=output,
            fetcher=fetcher,
            options=job_options(settings),
            archive=archive,
            rules=rules,
            list_format=ListFormat.of(name),
        )
        if view is not None:
            view.add(job.summary)
        summary = await job.run()
        if summary.failure in UNREADABLE_LIST:
            unreadable = True
            tell(f"error: cannot read list {path}: {summary.failure_detail}")
        elif summary.failure is not None:
            tell(f"error: list {path} could not run: {summary.failure_detail}")
        all_ok = all_ok and summary.failure is None and not (summary.failed or summary.invalid)
    if unreadable:
        return Outcome.UNREADABLE
    return Outcome.OK if all_ok else Outcome.FAILED


def fetch(settings: Settings, lists: list[str]) -> int:
    fds = []
    pipes = 0
    for path in lists:
        try:
            fd = _open_list(path)
        except FileNotFoundError:
            if "://" in path:
                return fail(
                    f"{path} is a URL, not a list: put URLs in a file, one per line,"
                    f" or pipe them in: echo {shlex.quote(path)} | {PROG} fetch -"
                )
            return fail(f"cannot read list {path}: no such file")
        except OSError as exc:
            return fail(f"cannot read list {path}: {exc.strerror}")
        if fd is None:
            return fail(f"list {path} is not a regular file")
        name = _list_name(path)
        if name == "pipe":
            # `<(a) <(b)`: pipe/ and pipe-2/, in the order given.
            pipes += 1
            name = "pipe" if pipes == 1 else f"pipe-{pipes}"
        fds.append((name, fd))
    check_writable_folder(settings.output, "output")
    # Every list stays open from here, and one runs at a time. Before the
    # workers fork, so that they have the same limit.
    ensure_open_files(settings, jobs=len(fds) + 1)
    # Before anything starts a thread (see `download_side`).
    options, spares = download_side(settings)
    try:
        return _fetch(settings, fds, options, spares)
    finally:
        # The spares no worker took (a start that failed before its loop).
        end_spares(spares)


def download_side(settings: Settings) -> tuple[FetchOptions, list[Spare]]:
    """The fetcher's options, and its download workers forked now (`prefork`).

    With `--workers auto`, `fetch` runs only the workers it could fork here:
    a fork is ready in milliseconds, sharing the modules imported already,
    where a worker started as a program would take ~0.3 s to import them
    again, before the first request, which a list of the seed's size does not
    win back (benchmarks/README.md, "The second core"). A number asked for
    is kept: the workers that cannot be forked start as programs.
    """
    options = fetch_options(settings)
    if settings.workers is not None:
        return options, fork_spares(options.workers)
    # The slots are shared one in N + 1: a worker past the slots would get
    # none, and each is forked before the first request.
    spares = fork_spares(min(options.workers, options.concurrency - 1))
    return options.replace(workers=len(spares)), spares


def _fetch(
    settings: Settings, fds: list[tuple[str, int]], options: FetchOptions, spares: list[Spare]
) -> int:
    # At a terminal: a progress bar, warnings above it, a summary after it.
    interactive = settings.log_format == "auto" and sys.stdout.isatty()
    archive = open_archive(settings)
    output = open_log(settings, stream_level="warning" if interactive else "debug")
    try:
        with closing_log(output):
            if interactive:
                with ProgressView() as view:
                    outcome = trio.run(
                        partial(
                            fetch_lists, options=options, spares=spares, view=view, archive=archive
                        ),
                        settings,
                        fds,
                    )
                print(summary_paragraph(view.summaries, os.path.abspath(settings.output)))
            else:
                run = partial(fetch_lists, options=options, spares=spares, archive=archive)
                outcome = trio.run(run, settings, fds)
    finally:
        for _, fd in fds:
            os.close(fd)
        if archive is not None:
            archive.close()
    if outcome is Outcome.INTERRUPTED:
        tell("interrupted; run the same command again to finish")
        return EXIT_INTERRUPTED
    if outcome is Outcome.UNREADABLE:
        return EXIT_USAGE
    return EXIT_OK if outcome is Outcome.OK else EXIT_FAILED


# A list named by a descriptor, as a shell's `<(command)` is (/dev/fd/63):
# its number says nothing, and the next run's may differ.
_DESCRIPTOR_PATH = re.compile(r"/(?:dev|proc/self|proc/[0-9]+)/fd/[0-9]+")


def _list_name(path: str) -> str:
    """The name a list's job goes by: standard input's goes to OUTPUT/stdin/,
    a pipe named by a descriptor's to OUTPUT/pipe/, a file's by its stem."""
    if path == "-":
        return "stdin"
    if _DESCRIPTOR_PATH.fullmatch(path):
        return "pipe"
    return path


# What `fetch -` says when its list is typed at a terminal.
TYPED_LIST = "reading the list from the terminal, one URL a line; end it with Ctrl-D"
# Each read of a list from a pipe or a terminal, into its spool file.
SPOOL_READ_BYTES = 1 << 16


def _open_list(path: str) -> int | None:
    """A readable, seekable descriptor of the list at `path` (`-`: standard input).

    A pipe (`-`, `/dev/stdin`, `<(command)`) is copied to an unnamed
    temporary file first: a job reads its list from the start. None for a
    folder or a device, which are not lists.
    """
    source = (
        os.dup(sys.stdin.fileno()) if path == "-" else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    )
    mode = os.fstat(source).st_mode
    if stat.S_ISREG(mode):
        return source
    # Standard input may be any stream the shell gives (`< /dev/null` too); a
    # device named as a list is not one.
    streamed = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(source)
    if not streamed and not (path == "-" and stat.S_ISCHR(mode)):
        os.close(source)
        return None
    if os.isatty(source):
        print(f"{PROG}: {TYPED_LIST}", file=sys.stderr, flush=True)
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - its descriptor outlives this call
    try:
        # Read as the stream gives it, not through a buffered reader: at a
        # terminal, Ctrl-D after a line is a read of 0 bytes, the end; one
        # that waits to fill its buffer took it for a short read, and
        # needed a second Ctrl-D.
        while chunk := os.read(source, SPOOL_READ_BYTES):
            spool.write(chunk)
        spool.flush()
        return os.dup(spool.fileno())
    finally:
        spool.close()
        os.close(source)
