"""The open-file limit, raised at start-up as far as the settings need.

Downloads hold sockets and temporary files, and a busy daemon can need more
file descriptors than the usual soft limit of 1024. Running out in the middle
of a job fails downloads, and can fail an import, which is a crash. So the
need is worked out from the settings before anything starts, and the soft
limit is raised to it. Any process may raise its soft limit up to the hard
one (systemd's default hard limit is 524288, and systemd asks programs that
need more than 1024 to raise the soft limit themselves). When even the hard
limit is too low, start-up stops with one line that says what to change.
"""

from __future__ import annotations

import resource

from ..config import Settings
from ..download.connections import SLOT_CONNECTIONS
from ..job.crew import WORKERS_PER_SLOT

# Descriptors the process holds besides its downloads and lists: stdio, the
# log file, trio's epoll and wake-up descriptors, the inbox folder and its
# inotify watch, the status file, the metrics socket, imports in progress.
BASE_FILES = 64
# Per running job: its list, its folder, its report and its failed list.
FILES_PER_JOB = 4
# Per download slot: its own keep-alive connections (`connections`) and, through
# a proxy, as many again in that proxy's transport; and one body per worker
# task of the slot (`crew.WORKERS_PER_SLOT`: one downloading, one publishing).
FILES_PER_SLOT = 2 * SLOT_CONNECTIONS + WORKERS_PER_SLOT


class OpenFilesError(Exception):
    """The hard limit is below what the settings need. One line, for the user."""


def files_needed(settings: Settings, *, jobs: int) -> int:
    """File descriptors the settings may need at once, with `jobs` lists open."""
    return BASE_FILES + settings.concurrency * FILES_PER_SLOT + jobs * FILES_PER_JOB


def ensure_open_files(needed: int) -> None:
    """Raise the soft limit to `needed` if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OpenFilesError(
            f"these settings may need {needed} open files, but this process may open only "
            f"{hard}: lower --concurrency or --max-jobs, or raise the hard limit "
            "(LimitNOFILE= in the systemd unit, or ulimit -Hn)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
