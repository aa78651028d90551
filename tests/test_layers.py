"""Imports point one way: cli -> service -> inbox and job -> download -> the shared modules.

    shared      errors, naming, hostnames, redact, metrics, version, startup: leaves
    download    one URL to one file (knows neither config, nor a job, nor a list)
    job         one list to one folder, through the download side
    inbox       which lists, when, and where they go (knows no job)
    config      the settings, and the options each side is built from
    service     the daemon: puts inbox, job and download together
    cli         the commands

A module may import from its own layer and from those listed beside it in
ALLOWED, never from one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "imgdl_watch"
SHARED = frozenset({"errors", "naming", "hostnames", "redact", "metrics", "version", "startup"})
ALLOWED = {
    "shared": {"shared"},
    "download": {"shared", "download"},
    "job": {"shared", "download", "job"},
    "inbox": {"shared", "inbox"},
    "config": {"shared", "download", "job", "config"},
    "service": {"shared", "download", "job", "inbox", "config", "service"},
    "cli": {"shared", "download", "job", "inbox", "config", "service", "cli"},
    "package": {"shared", "package", "cli"},  # __init__ and __main__
}


def layer(module: str) -> str:
    """The layer of a module, given as its dotted path below imgdl_watch."""
    top = module.partition(".")[0]
    if top in SHARED:
        return "shared"
    if top in ("__init__", "__main__", ""):
        return "package"
    return top


def imports_of(path: Path) -> list[str]:
    """Every imgdl_watch module that `path` imports, as a dotted path below imgdl_watch."""
    here = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(here[:-1])
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("imgdl_watch"):
                target = node.module.split(".")[1:]
            else:
                continue
            if node.level and node.module is None:
                # `from . import a, b`: the names are modules
                found.extend(".".join([*target, alias.name]) for alias in node.names)
            else:
                found.append(".".join(target))
        elif isinstance(node, ast.Import):
            found.extend(
                alias.name.split(".", 1)[1]
                for alias in node.names
                if alias.name.startswith("imgdl_watch.")
            )
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_layer_is_known() -> None:
    known = {*ALLOWED, "shared"}
    for path in MODULES:
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        assert layer(name) in known, name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    mine = layer(name)
    for target in imports_of(path):
        assert layer(target) in ALLOWED[mine], f"{name} ({mine}) imports {target}"


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    # The test above would pass vacuously if imports_of saw nothing.
    fetcher = PACKAGE / "download" / "fetcher.py"
    assert "errors" in imports_of(fetcher)
    assert any(t.startswith("download.") for t in imports_of(fetcher))
    jobs = PACKAGE / "service" / "jobs.py"
    assert "job.job" in imports_of(jobs) and "inbox.lifecycle" in imports_of(jobs)
