"""Several real daemons on one inbox: every list is claimed once, and none is lost.

The daemons run as root, or as an unprivileged service user (uid and gid of
their own, no other groups), the way the systemd unit runs them. Lists are
dropped by another user, `alice`, with mode 0644 (umask 022), the commonest
way a person drops a file. Under `fs.protected_hardlinks=1` (the default on
Debian, Ubuntu and Fedora) a service user may not hard-link such a file, so
these tests prove that claiming needs no `link()`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemonproc import DaemonProcess, Event
from tests.imageserver import ImageServer, image_bytes

# Ids no real account uses: the daemons' service user and group, and the user who drops lists.
SERVICE_UID, GROUP_GID, ALICE_UID = 64_201, 64_200, 64_202
# Seconds into the past for a dropped list's mtime: as with `mv` of a file
# written earlier, it is taken at once, without waiting to settle.
OLD_S = 3600
# Each daemon is poked by its own finished jobs and by inotify, but tries the
# inbox on its own only at a rescan. Rescanning every 10 ms makes both daemons
# contend for every list at once, which is where the old claim's races were
# (at the default of 1 s, the old code passed these tests nearly always).
CONTEND = ("--rescan-interval", "0.01")


def _runs_as(python: str, uid: int, gid: int) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import trio, httpx, watchfiles, imgdl_watch"],
            user=uid, group=gid, extra_groups=[], capture_output=True, timeout=60,
        )  # fmt: skip
    except PermissionError:
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def service_python() -> Iterator[str]:
    """An interpreter the service user can run, with this environment's packages.

    The test's own may live where that user cannot go (pyenv's, under a 0700
    /root). Then the system's Python of the same version gets a bare venv
    whose `.pth` adds this environment's site-packages: the same code and
    libraries, run the way the systemd unit runs them.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root, to run daemons as a service user")
    if _runs_as(sys.executable, SERVICE_UID, GROUP_GID):
        yield sys.executable
        return
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/bin")
    if system is None:
        pytest.skip(
            f"the service user cannot run {sys.executable}, and there is no /usr/bin/{version}"
        )
    folder = Path(tempfile.mkdtemp(prefix="imgdl-service-python-"))
    try:
        os.chmod(folder, 0o755)
        subprocess.run([system, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
        site = folder / "venv" / "lib" / version / "site-packages"
        purelib = sysconfig.get_paths()["purelib"]
        (site / "imgdl-tests.pth").write_text(f"import site; site.addsitedir({purelib!r})\n")
        python = str(folder / "venv" / "bin" / "python")
        if not _runs_as(python, SERVICE_UID, GROUP_GID):
            pytest.skip(f"the service user can run neither {sys.executable} nor {system}")
        yield python
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Setup:
    root: Path
    # The daemons' (uid, gid); None: root.
    user: tuple[int, int] | None
    python: str

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def daemon(self, name: str, *args: str) -> DaemonProcess:
        return DaemonProcess(
            self.root,
            *args,
            name=name,
            user=self.user,
            python=self.python,
            env={"PYTHONDONTWRITEBYTECODE": "1", "HOME": str(self.root)},
        )

    def drop(self, name: str, text: str, *, category: str = "", mode: int = 0o644) -> None:
        """alice drops a list: written aside with umask 022 (or as `mode`
        says), then renamed in (into a category's folder, with `category`)."""
        folder = self.inbox / category if category else self.inbox
        aside = folder / f".{name}.part"
        aside.write_text(text)
        os.chown(aside, ALICE_UID, GROUP_GID)
        os.chmod(aside, mode)
        old = time.time() - OLD_S
        os.utime(aside, (old, old))
        os.rename(aside, folder / name)

    def config(self, text: str) -> str:
        path = self.root / "config.toml"
        path.write_text(text)
        os.chmod(path, 0o644)
        return str(path)


@pytest.fixture(params=["root", "service-user"])
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    if os.geteuid() != 0:
        pytest.skip("needs root, to make the service user's and alice's files")
    user = (SERVICE_UID, GROUP_GID) if request.param == "service-user" else None
    python = request.getfixturevalue("service_python") if user else sys.executable
    # Not under pytest's tmp_path: its parent is 0700, closed to the service user.
    root = Path(tempfile.mkdtemp(prefix="imgdl-claims-"))
    os.chmod(root, 0o755)
    if user is not None:
        os.chown(root, SERVICE_UID, GROUP_GID)
    # As the unit's tmpfiles.d makes it: setgid, group-writable, the service's own.
    inbox = root / "inbox"
    inbox.mkdir()
    os.chown(inbox, SERVICE_UID, GROUP_GID)
    os.chmod(inbox, 0o2770)
    yield Setup(root, user, python)
    shutil.rmtree(root, ignore_errors=True)


def _hard_link_refused(setup: Setup) -> bool:
    """Whether the daemons' user is refused `link()` of one of alice's lists."""
    setup.drop("probe.txt", "x\n")
    probe = setup.inbox / "probe.txt"
    assert setup.user is not None
    try:
        done = subprocess.run(
            [setup.python, "-c", "import os, sys; os.link(sys.argv[1], sys.argv[2])",
             str(probe), str(setup.root / "linked")],
            capture_output=True, text=True, user=setup.user[0], group=setup.user[1],
            extra_groups=[],
        )  # fmt: skip
        return done.returncode != 0 and "Operation not permitted" in done.stderr
    finally:
        probe.unlink()


def _protected_hardlinks() -> bool:
    return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"


def _check_preconditions(setup: Setup) -> None:
    if setup.user is not None and _protected_hardlinks():
        # The case the tests are about: the old claim's link() fails here.
        assert _hard_link_refused(setup)


def _lists(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if not p.name.endswith(".report.jsonl")}


def _stop_both(*daemons: DaemonProcess) -> None:
    """Stop every daemon, then say what went wrong with any of them (a daemon
    left running by a failed test would load the machine for the rest of the run)."""
    problems = []
    for daemon in daemons:
        try:
            daemon.stop_cleanly()
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            problems.append(str(exc))
        for bad in ("crashed", "job_crashed", "job_failed"):
            if daemon.events(bad):
                problems.append(f"{daemon.log_path}: {daemon.events(bad)}")
    assert not problems, problems


def test_two_daemons_take_each_list_once(server: ImageServer, setup: Setup) -> None:
    """300 lists dropped by alice at once, two daemons racing for each of them.
    The old claim's fallback (a rename after a check) crashed the daemon that
    lost a race, and could start one list twice."""
    _check_preconditions(setup)
    # Many short jobs: both daemons claim again and again, racing for the same
    # names. (The old claim crashed in 6 of 6 runs of this; at 50 lists of
    # 3 URLs, in about 1 of 6.)
    lists, urls_per_list = 300, 1
    expected = {}
    first = setup.daemon("first", *CONTEND)
    second = setup.daemon("second", *CONTEND)
    try:
        first.wait_event("daemon_started")
        second.wait_event("daemon_started")
        for n in range(lists):
            urls = [f"{server.base}/img/c{n}/{i}.jpg" for i in range(urls_per_list)]
            expected[f"list{n:03}.txt"] = "\n".join(urls) + "\n"
            setup.drop(f"list{n:03}.txt", expected[f"list{n:03}.txt"])

        def all_done(_: object) -> bool:
            finished = len(first.events("job_finished")) + len(second.events("job_finished"))
            return finished >= lists

        first.wait_for(all_done, timeout=90)
    finally:
        _stop_both(first, second)
    jobs = [e["job"] for e in first.events("job_finished") + second.events("job_finished")]
    assert sorted(jobs) == sorted(name[:-4] for name in expected)  # each exactly once
    assert first.events("job_finished") and second.events("job_finished")  # both took a share
    assert _lists(setup.inbox / "done") == expected
    # Each image once: no list ran twice, not even in part.
    assert len(server.counts) == lists * urls_per_list and set(server.counts.values()) == {1}
    for n in range(lists):
        for i in range(urls_per_list):
            saved = setup.root / "downloads" / f"list{n:03}" / f"{i}.jpg"
            assert saved.read_bytes() == image_bytes(f"/img/c{n}/{i}.jpg")


def _claim_intervals(daemon: DaemonProcess, job: str) -> list[tuple[dt.datetime, dt.datetime]]:
    """From each claim of `job` to its end, as this daemon logged them."""

    def when(event: Event) -> dt.datetime:
        return dt.datetime.fromisoformat(event["timestamp"])

    ours = [e for e in daemon.events() if e.get("job") == job]
    starts = [when(e) for e in ours if e["event"] in ("list_claimed", "job_resumed")]
    ends = [when(e) for e in ours if e["event"] in ("job_finished", "job_interrupted")]
    assert len(starts) == len(ends)
    return list(zip(starts, ends, strict=True))


def test_redrops_of_one_stem_racing_with_claims_lose_nothing(
    server: ImageServer, setup: Setup
) -> None:
    """`same.txt` is dropped again the moment the previous one is claimed, 60
    times, with two daemons competing for it. The old claim lost a round now
    and then (an unlink by name removed the next drop unread), ran two jobs of
    the stem at once, or crashed the daemon that lost a rename."""
    _check_preconditions(setup)
    rounds = 60
    first = setup.daemon("first", *CONTEND)
    second = setup.daemon("second", *CONTEND)
    dropped = []
    try:
        first.wait_event("daemon_started")
        second.wait_event("daemon_started")
        for n in range(rounds):
            text = f"{server.base}/img/r{n}a.jpg\n{server.base}/img/r{n}b.jpg\n"
            dropped.append(text)
            setup.drop("same.txt", text)
            deadline = time.monotonic() + 30
            while os.path.lexists(setup.inbox / "same.txt"):  # claimed: drop the next at once
                assert time.monotonic() < deadline, f"round {n} was never claimed"

        def published(_: object) -> bool:
            done = setup.inbox / "done"
            return (
                done.is_dir() and len(_lists(done)) + len(_lists(setup.inbox / "failed")) >= rounds
            )

        first.wait_for(published, timeout=60)
    finally:
        _stop_both(first, second)
    # Every drop is accounted for exactly once, with its own content.
    assert not _lists(setup.inbox / "failed")
    assert sorted(_lists(setup.inbox / "done").values()) == sorted(dropped)
    assert not [p for p in setup.inbox.iterdir() if p.name == "same.txt"]
    assert sorted(os.listdir(setup.inbox / "processing")) == []
    # Each image fetched once, so no round ran twice.
    assert len(server.counts) == 2 * rounds and set(server.counts.values()) == {1}
    # No two jobs of the stem overlapped, across both daemons.
    intervals = sorted(_claim_intervals(first, "same") + _claim_intervals(second, "same"))
    assert len(intervals) == rounds
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end <= start


def test_two_daemons_take_each_list_of_a_category_once(server: ImageServer, setup: Setup) -> None:
    """As the first test, with categories: 160 lists, half at the top and half in
    `art/` under the very same names (so `art/listN` and `listN` are distinct
    stems of the same name), csv and txt, raced for by two daemons."""
    _check_preconditions(setup)
    config = setup.config("[category.art]\nretries = 1\n")
    lists = 80
    expected: dict[str, dict[str, str]] = {"": {}, "art": {}}
    first = setup.daemon("first", *CONTEND, "--config", config)
    second = setup.daemon("second", *CONTEND, "--config", config)
    try:
        first.wait_event("daemon_started")
        second.wait_event("daemon_started")
        for n in range(lists):
            for category in ("", "art"):
                url = f"{server.base}/img/{category or 'top'}/c{n}.jpg"
                name, text = (
                    (f"list{n:03}.csv", f"url,n\n{url},{n}\n")
                    if n % 2
                    else (f"list{n:03}.txt", url + "\n")
                )
                expected[category][name] = text
                setup.drop(name, text, category=category)

        def all_done(_: object) -> bool:
            finished = len(first.events("job_finished")) + len(second.events("job_finished"))
            return finished >= 2 * lists

        first.wait_for(all_done, timeout=90)
    finally:
        _stop_both(first, second)
    jobs = [e["job"] for e in first.events("job_finished") + second.events("job_finished")]
    stems = [f"list{n:03}" for n in range(lists)]
    assert sorted(jobs) == sorted([*stems, *(f"art/{s}" for s in stems)])  # each exactly once
    assert first.events("job_finished") and second.events("job_finished")
    assert _lists(setup.inbox / "done") == expected[""]
    assert _lists(setup.inbox / "art" / "done") == expected["art"]
    assert len(server.counts) == 2 * lists and set(server.counts.values()) == {1}
    for n in range(lists):
        for category, parent in (
            ("", setup.root / "downloads"),
            ("art", setup.root / "downloads" / "art"),
        ):
            saved = parent / f"list{n:03}" / f"c{n}.jpg"
            assert saved.read_bytes() == image_bytes(f"/img/{category or 'top'}/c{n}.jpg")


def test_settle_and_resume_in_a_category(server: ImageServer, setup: Setup) -> None:
    """A category's list written slowly in place is one job, as at the top; a
    daemon killed mid-job leaves it in the category's processing/, and the
    other daemon resumes it without fetching its finished images again."""
    _check_preconditions(setup)
    config = setup.config("[category.art]\nconcurrency = 2\n")
    slow = setup.daemon("slow", "--config", config, "--settle", "0.6")
    try:
        slow.wait_event("daemon_started")
        target = setup.inbox / "art" / "slowly.txt"
        with open(target, "w") as handle:
            for i in range(5):
                handle.write(f"{server.base}/img/settle/{i}.jpg\n")
                handle.flush()
                time.sleep(0.25)  # pauses shorter than --settle
        finished = slow.wait_event("job_finished")
        assert (finished[0]["job"], finished[0]["ok"]) == ("art/slowly", 5)
        assert len(slow.events("job_started")) == 1
        urls = [f"{server.base}/slow/200/k{i}.jpg" for i in range(30)]
        setup.drop("kill.txt", "\n".join(urls) + "\n", category="art")
        slow.wait_event("download_ok", count=5 + 4)
        slow.kill()
    finally:
        if slow.proc.poll() is None:
            slow.kill()
    done_before = {e["url"] for e in slow.events("download_ok")}
    left = [n for n in os.listdir(setup.inbox / "art" / "processing") if not n.startswith(".")]
    assert left == ["kill.txt"]  # (with its report's hidden parts, which the resume rewrites)
    other = setup.daemon("other", "--config", config)
    try:
        finished = other.wait_event("job_finished", timeout=60)
    finally:
        _stop_both(other)
    assert [e["job"] for e in other.events("job_resumed")] == ["art/kill"]
    assert finished[0]["job"] == "art/kill" and finished[0]["failed"] == 0
    assert finished[0]["ok"] + finished[0]["skipped"] == 30
    for url in urls:
        path = url[len(server.base) :]
        assert server.counts[path] == 1 if url in done_before else server.counts[path] <= 2
    folder = setup.root / "downloads" / "art" / "kill"
    assert sorted(os.listdir(folder)) == sorted(f"k{i}.jpg" for i in range(30))
    assert _lists(setup.inbox / "art" / "done") == {
        "slowly.txt": "".join(f"{server.base}/img/settle/{i}.jpg\n" for i in range(5)),
        "kill.txt": "\n".join(urls) + "\n",
    }


def test_a_list_the_service_may_not_read_goes_to_failed_and_the_daemon_goes_on(
    server: ImageServer, setup: Setup
) -> None:
    """alice drops a list with umask 077 (mode 0600): the service user may
    not read it. It once stopped the daemon, at every start again."""
    if setup.user is None:
        pytest.skip("root reads every list")
    daemon = setup.daemon("d")
    try:
        daemon.wait_event("daemon_started")
        setup.drop("secret.txt", f"{server.base}/img/secret.jpg\n", mode=0o600)
        setup.drop("open.txt", f"{server.base}/img/open.jpg\n")
        daemon.wait_event("job_finished")
        (ignored,) = daemon.wait_event("file_ignored")
        assert ignored["file"] == "secret.txt" and ignored["failed_as"] == "secret.txt"
        assert "may not read it" in ignored["reason"]
        assert (setup.inbox / "failed" / "secret.txt").exists()
    finally:
        _stop_both(daemon)


def test_a_list_that_can_be_neither_read_nor_moved_waits_and_the_daemon_goes_on(
    server: ImageServer, setup: Setup
) -> None:
    """As above, with a failed/ the service user may not write in (another
    user's): the move raised PermissionError, which stopped the daemon at
    every start. The list waits in processing/, said once."""
    if setup.user is None:
        pytest.skip("root reads every list")
    (setup.inbox / "failed").mkdir()
    os.chmod(setup.inbox / "failed", 0o755)  # root's, closed to the service user
    daemon = setup.daemon("d", "--rescan-interval", "0.05")
    try:
        daemon.wait_event("daemon_started")
        setup.drop("secret.txt", f"{server.base}/img/secret.jpg\n", mode=0o600)
        (said,) = daemon.wait_event("file_ignored")
        assert "failed/ refused it" in said["reason"] and "failed_as" not in said
        # Dozens of rescans try it again; the daemon is up, and says it once.
        setup.drop("open.txt", f"{server.base}/img/open.jpg\n")
        daemon.wait_event("job_finished")
        assert len(daemon.events("file_ignored")) == 1 and not daemon.events("crashed")
        assert (setup.inbox / "processing" / "secret.txt").exists()
    finally:
        _stop_both(daemon)
