"""A download worker's process: `python -m imgdl_watch.download.workermain FD`.

Its own entry, so that something runs before httpx is imported: httpx
imports its command-line tool (click, pygments and rich) whenever click is
installed, which the `notify` extra (Apprise) brings, as `startup` says for
the daemon's process. Marked absent here, such a worker starts with ~5 MB
less (`resource.getrusage` after importing `worker`, in an environment with
the extra, with and without the mark: 31 MB against 36.5 on 2026-12-02;
without the extra there is nothing to save). The worker itself is `worker`.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .worker import main

if __name__ == "__main__":
    main()
