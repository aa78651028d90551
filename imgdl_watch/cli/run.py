"""`imgdl-watch run`: the daemon, with its folders checked and its log open."""

from __future__ import annotations

import argparse
import contextlib

import trio

from ..config import ConfigError, Settings, fetch_options
from ..download.prefork import end_spares, fork_spares
from ..service.daemon import Daemon
from ..service.hooks import check_commands
from ..service.notify import NotifyError, targets
from .common import (
    check_apart,
    check_writable_folder,
    closing_log,
    ensure_open_files,
    open_archive,
    open_log,
    settings_for,
)
from .parser import EXIT_OK


def run(settings: Settings, args: argparse.Namespace) -> int:
    # Before either folder is made: an output refused inside the inbox must
    # not be left there, a stray folder for every daemon after this one.
    check_apart(settings.inbox, settings.output)
    check_writable_folder(settings.inbox, "inbox")
    check_writable_folder(settings.output, "output")
    ensure_open_files(settings, jobs=settings.max_jobs)
    check_commands(settings)
    try:
        notify = targets(settings.notify)
    except NotifyError as exc:
        raise ConfigError(str(exc)) from None
    # Before anything opens a file or starts a thread: the download workers,
    # forked here, share the imported modules' pages with this process.
    spares = fork_spares(fetch_options(settings).workers)
    with contextlib.ExitStack() as stack:
        # Last: the spares no worker took (a start that failed after them).
        stack.callback(end_spares, spares)
        archive = open_archive(settings)
        if archive is not None:
            stack.callback(archive.close)
        if settings.metrics_port is not None:
            # prometheus-client only when asked for
            from ..service.statuspage import serve  # noqa: PLC0415

            try:
                server = serve(settings.metrics_port, settings.metrics_bind, inbox=settings.inbox)
            except OSError as exc:
                where = f"{settings.metrics_bind}:{settings.metrics_port}"
                raise ConfigError(f"cannot serve metrics on {where}: {exc.strerror}") from None
            stack.callback(server.stop)
        output = open_log(settings)
        daemon = Daemon(
            settings,
            reload=lambda: settings_for("run", args),
            log_output=output,
            notify=notify,
            archive=archive,
            spares=spares,
        )
        with closing_log(output):
            trio.run(daemon.run)
    return EXIT_OK
