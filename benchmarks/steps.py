"""How many times trio runs a task per image, in one `fetch` of the seed list.

    python -m benchmarks.steps [--set static|lag] [--concurrency N] [--bare]

(Run it with the bench's Python: `make bench` installs what it needs.)

Starts the bench's nginx, then runs `imgdl-watch fetch` in this process
(`--workers 0`: one trio loop) with a trio instrument that counts, per image
of the 1183: task steps (each time the scheduler runs a task until its next
schedule point), tasks spawned, and the loop's waits for I/O (epoll), and
which tasks took the steps. It answers whether a download's CPU on the loop
is many passes through the scheduler or much code run per pass: on
2026-12-03, static set, 16 at once, 9.5 steps per image, nearly all of them
the crew's workers (`Crew._work`), 0.05 tasks spawned and 0.98 waits for
I/O per image; 10.2, 0.17 and 1.62 on the lag set at 64. With `--bare`,
the same instrument counts `bare.py` (the `trio (bare)` row) instead: 5.1
and 5.3 task steps per image on the two sets.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
from pathlib import Path
from typing import Any

import trio

from benchmarks import bare, corpus, outputfs
from benchmarks import server as servers
from benchmarks.run import OUTPUTS, WORK


class _Count(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.spawned = 0
        self.io_waits = 0
        self.by_task: collections.Counter[str] = collections.Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        self.by_task[task.name.rsplit(".", 1)[-1]] += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1

    def after_io_wait(self, timeout: float) -> None:
        self.io_waits += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("static", "lag"), default="static")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bare", action="store_true", help="count bare.py instead")
    args = parser.parse_args()
    count = _Count()
    real_run = trio.run

    def counted_run(*a: Any, **k: Any) -> Any:
        k.setdefault("instruments", []).append(count)
        return real_run(*a, **k)

    # The product's `fetch` calls trio.run itself; a wrapper that only adds an
    # instrument, not trio.run's own signature.
    trio.run = counted_run  # type: ignore[assignment]
    root = WORK / "corpus"
    corpus.build(root)
    srv = servers.start(root, latency=0.1, mix_paths=None)
    paths = corpus.seed_paths()
    from imgdl_watch.cli.main import main as imgdl_main

    try:
        with outputfs.output_root(OUTPUTS):
            folder = Path(tempfile.mkdtemp(prefix="steps-", dir=OUTPUTS))
            base = srv.static if args.set == "static" else srv.latency
            listed = folder / "list.txt"
            listed.write_text("".join(f"{base}{p}\n" for p in paths))
            out = folder / "out"
            try:
                if args.bare:
                    out.mkdir()
                    real_run(
                        bare.main, str(listed), str(out), args.concurrency, instruments=[count]
                    )
                else:
                    conc = str(args.concurrency)
                    argv = ["fetch", str(listed), "--output", str(out), "--workers", "0"]
                    argv += ["--concurrency", conc, "--per-host", conc, "--log-level", "warning"]
                    if rc := imgdl_main(argv):
                        raise SystemExit(f"fetch exited with {rc}")
            finally:
                shutil.rmtree(folder)
    finally:
        trio.run = real_run
        srv.stop()
    n = len(paths)
    print(
        f"{'bare.py' if args.bare else 'fetch'}, {args.set} set, {args.concurrency} at once, per image: {count.steps / n:.1f} task steps, "
        f"{count.spawned / n:.2f} tasks spawned, {count.io_waits / n:.2f} waits for I/O"
    )
    for name, steps in count.by_task.most_common(6):
        print(f"  {steps / n:6.2f}  {name}")


if __name__ == "__main__":
    main()
