"""Warm daemons of several source trees side by side, in the same minutes.

    python -m benchmarks.trees [--set static|lag] [--rounds N] NAME=TREE[,VAR=VALUE...] ...

Each NAME=TREE is a checkout of imgdl-watch (a `git clone` of a commit, or a
throwaway patch of one), run as `python -P -m imgdl_watch` with TREE on
`PYTHONPATH` (and so before the editable install of this checkout), with the environment variables after it (`LD_PRELOAD=...
libeatmydata.so` for a no-sync row). One warm daemon a tree, each with its
warm-up list; then the set's list is dropped into each in turn, `--rounds`
times, the order reversed every other round, and the medians are printed: the
wall from the drop to `job_finished` and the CPU per image of the daemon and
its workers (`warm.WarmDaemon`), then the memory of one more job (counted
once, sampled). The bench's nginx and an ext4 of its own serve and hold the
files, as in `make bench`. This VM's speed drifts by half from one minute to
the next, so compare builds here, as ratios, never with a figure measured
another time ("A VM whose speed drifts", benchmarks/README.md).

For example, two download tasks a slot against four (`crew.WORKERS_PER_SLOT`
edited in a clone):

    git clone -q . /tmp/two && git clone -q . /tmp/four && sed -i \\
        's/^WORKERS_PER_SLOT = 2/WORKERS_PER_SLOT = 4/' /tmp/four/imgdl_watch/job/crew.py
    .venv/bin/python -m benchmarks.trees two=/tmp/two four=/tmp/four
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from . import corpus, outputfs
from . import server as servers
from .run import LATENCY_S, OUTPUTS, WORK
from .warm import WarmDaemon

# Seconds a job may take before the tree is taken for broken.
JOB_TIMEOUT_S = 120
# URLs of the warm-up list, run once by each daemon before it is timed.
WARM_UP_URLS = 50


def _tree(spec: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = spec.partition("=")
    tree, *variables = rest.split(",")
    if not name or not tree:
        raise SystemExit(f"benchmarks.trees: {spec!r} is not NAME=TREE[,VAR=VALUE...]")
    env = dict(v.split("=", 1) for v in variables)
    return name, Path(tree).resolve(), env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("static", "lag"), default="static")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("trees", nargs="+", metavar="NAME=TREE[,VAR=VALUE...]")
    args = parser.parse_args()
    trees = [_tree(spec) for spec in args.trees]
    concurrency = "16" if args.set == "static" else "64"
    WORK.mkdir(exist_ok=True)
    with outputfs.output_root(OUTPUTS, own=True) as described:
        root = WORK / "corpus"
        images, _ = corpus.build(root)
        srv = servers.start(root, latency=LATENCY_S)
        folder = Path(tempfile.mkdtemp(prefix="imgdl-trees-", dir=OUTPUTS))
        daemons: dict[str, WarmDaemon] = {}
        try:
            base = srv.static if args.set == "static" else srv.latency
            listed = folder / f"{args.set}.txt"
            listed.write_text(corpus.SEED_LIST.read_text().replace("https://cdn.pixabay.com", base))
            urls = listed.read_text().split()
            print(
                f"{args.set} set, {concurrency} at once, {args.rounds} rounds; rows write to {described}"
            )
            for name, tree, env in trees:
                daemon = WarmDaemon(
                    # -P: not the current folder first on the path, which
                    # would run this checkout's code for every tree.
                    [sys.executable, "-P", "-m", "imgdl_watch"],
                    folder / name,
                    ["--concurrency", concurrency, "--per-host", concurrency],
                    env=dict(os.environ, PYTHONPATH=str(tree), **env),
                )
                daemons[name] = daemon
                warm = folder / name / "warm-up.txt"
                warm.write_text("".join(f"{url}?warm-up\n" for url in urls[:WARM_UP_URLS]))
                shutil.rmtree(daemon.job(warm, "warm-up", JOB_TIMEOUT_S)[2], ignore_errors=True)
            walls: dict[str, list[float]] = {name: [] for name in daemons}
            cpus: dict[str, list[float]] = {name: [] for name in daemons}
            for at in range(args.rounds):
                order = list(daemons) if at % 2 == 0 else list(reversed(daemons))
                for name in order:
                    wall, cpu, done = daemons[name].job(listed, f"round-{at}", JOB_TIMEOUT_S)
                    saved = len(os.listdir(done))
                    shutil.rmtree(done, ignore_errors=True)
                    if saved != images:
                        raise SystemExit(f"benchmarks.trees: {name} saved {saved} of {images}")
                    walls[name].append(wall)
                    cpus[name].append(cpu / images * 1000)
            first = next(iter(daemons))
            for name, daemon in daemons.items():
                once, summed, done = daemon.sampled_job(listed, "memory", JOB_TIMEOUT_S)
                shutil.rmtree(done, ignore_errors=True)
                wall = statistics.median(walls[name])
                ratio = wall / statistics.median(walls[first])
                print(
                    f"{name:16} wall {wall:.3f} s (x{ratio:.2f} {first})  "
                    f"CPU {statistics.median(cpus[name]):.3f} ms/img  "
                    f"memory {once:.1f} MB counted once ({summed:.1f} summed)  "
                    f"walls {' '.join(f'{w:.2f}' for w in walls[name])}"
                )
        finally:
            for daemon in daemons.values():
                daemon.stop()
            srv.stop()
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
