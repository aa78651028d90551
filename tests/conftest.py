from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

from tests.daemonproc import kill_leftovers
from tests.imageserver import ImageServer


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 128 KB tmpfs, to fill up (needs root; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the injected-error tests cover the same path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def out_fd(tmp_path: Path) -> Iterator[int]:
    folder = tmp_path / "out"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.fixture(autouse=True)
def _stamina_active() -> Iterator[None]:
    # Retries are part of what we test: make sure no other test left them off.
    stamina.set_active(True)
    yield


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test() -> Iterator[None]:
    # A test that failed before stopping its daemons would leave them running
    # (and loading the machine) for the rest of the suite.
    yield
    kill_leftovers()
