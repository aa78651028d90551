"""Download workers forked before the loop (`prefork`): real forks, a real daemon.

Forking is only safe in a process of one thread, which the test process is
not, so each fork here happens in a fresh interpreter: the daemon itself,
or a short script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
import trio

from imgdl_watch.download.filesink import TEMP_PREFIX
from imgdl_watch.download.prefork import Forked
from imgdl_watch.service.status import collect
from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer, image_bytes
from tests.test_operator import free_port, wait_for_status


def python(script: str) -> dict[str, object]:
    """Run `script` in a fresh interpreter; what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


async def test_a_forked_process_is_waited_for_and_signalled_through_its_pidfd() -> None:
    pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], os.environ)
    child = Forked(pid)
    assert child.returncode is None
    child.send_signal(signal.SIGKILL)
    with trio.fail_after(10):
        assert await child.wait() == -signal.SIGKILL
    assert await child.wait() == -signal.SIGKILL  # once reaped, the same answer
    # Reaped: its pid may be another process's now, and is never signalled.
    with pytest.raises(ProcessLookupError):
        child.send_signal(signal.SIGKILL)


def test_a_forked_child_names_its_temporary_files_apart_from_its_parent() -> None:
    # A dead worker's files are swept by its token: a child sharing its
    # parent's would have the parent's own files swept.
    result = python("""
        import json, os
        from imgdl_watch.download import filesink
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, filesink.RUN_TOKEN.encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"parent": filesink.RUN_TOKEN, "child": os.read(read, 64).decode()}))
    """)
    assert result["parent"] != result["child"]
    assert len(str(result["child"])) == 16


def test_no_spares_with_a_second_thread_or_none_asked() -> None:
    result = python("""
        import json, os, threading
        from imgdl_watch.download.prefork import fork_spares
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        with_thread = len(fork_spares(1))
        stop.set()
        thread.join()
        none_asked = len(fork_spares(0))
        (spare,) = fork_spares(1)
        spare.sock.close()  # no Setup will come: the spare exits
        _, status = os.waitpid(spare.process.pid, 0)
        print(json.dumps({"with_thread": with_thread, "none_asked": none_asked,
                          "exit": os.waitstatus_to_exitcode(status)}))
    """)
    assert result == {"with_thread": 0, "none_asked": 0, "exit": 0}


def test_fetch_runs_on_auto_only_the_workers_it_can_fork() -> None:
    # A worker started as a program takes ~0.3 s before fetch's first
    # request; one that was asked for is started so all the same.
    result = python("""
        import json, threading
        from imgdl_watch import config
        from imgdl_watch.cli.fetch import download_side
        from imgdl_watch.download.prefork import end_spares
        config.auto_workers = lambda: 1  # whatever this machine's cores
        auto = config.defaults("fetch")
        asked = config.resolve("fetch", {"workers": "2"}, env={}, config_path=None)
        def side(settings):
            options, spares = download_side(settings)
            end_spares(spares)
            return [options.workers, len(spares)]
        alone = side(auto)
        # One download slot: a worker would have none of it.
        one_slot = side(config.resolve("fetch", {"concurrency": "1"}, env={}, config_path=None))
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        with_thread = side(auto), side(asked)
        stop.set()
        thread.join()
        print(json.dumps({"alone": alone, "one_slot": one_slot, "with_thread": with_thread}))
    """)
    assert result == {"alone": [1, 1], "one_slot": [0, 0], "with_thread": [[0, 0], [2, 0]]}


def test_fetchs_worker_is_forked(server: ImageServer, tmp_path: Path) -> None:
    paths = [f"/slow/200/s{i}.jpg" for i in range(8)] + [f"/img/f/{i}.jpg" for i in range(24)]
    (tmp_path / "forked.txt").write_text("".join(server.base + p + "\n" for p in paths))
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgdl_watch", "fetch", "forked.txt", "--workers", "1",
         "--concurrency", "4", "--log-format", "json", "--log-level", "debug"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "worker_started":
            pid = int(events[-1]["pid"])
            # Forked from fetch: its child, running fetch's own command line.
            assert parent_of(pid) == proc.pid
            assert cmdline(pid) == cmdline(proc.pid)
            break
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert [e for e in events if e["event"] == "worker_started"]
    for path in paths:
        name = path.rsplit("/", 1)[1]
        assert (tmp_path / "forked" / name).read_bytes() == image_bytes(path)
    assert len(os.listdir(tmp_path / "forked")) == len(paths)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def test_the_daemons_worker_is_forked_and_one_started_again_is_a_program(
    server: ImageServer, tmp_path: Path
) -> None:
    port = free_port()
    daemon = DaemonProcess(
        tmp_path, "--workers", "1", "--concurrency", "4", "--log-level", "debug",
        "--metrics-port", str(port),
    )  # fmt: skip
    (started,) = daemon.wait_event("worker_started")
    first = int(started["pid"])
    # Forked from the daemon: its child, running the daemon's own command line.
    assert parent_of(first) == daemon.proc.pid
    assert cmdline(first) == cmdline(daemon.proc.pid)
    assert Path(f"/proc/{first}/comm").read_text().strip() == "imgdl-worker"
    paths = [f"/img/fork/{i}.jpg" for i in range(16)]
    drop(daemon.inbox, "fork.txt", "".join(server.base + p + "\n" for p in paths))
    daemon.wait_event("job_finished")
    served = [e for e in daemon.events("download_ok") if e.get("job") == "fork"]
    assert len(served) == len(paths)
    for path in paths:
        name = path.rsplit("/", 1)[1]
        assert (daemon.output / "fork" / name).read_bytes() == image_bytes(path)
    # Killed, it is replaced by a worker started as a program of its own.
    os.kill(first, signal.SIGKILL)
    daemon.wait_event("worker_lost")
    second = int(daemon.wait_event("worker_started", count=2)[-1]["pid"])
    assert second != first
    assert "imgdl_watch.download.workermain" in cmdline(second)
    assert Path(f"/proc/{second}/comm").read_text().strip() == "imgdl-worker"
    again = [f"/img/again/{i}.jpg" for i in range(16)]
    drop(daemon.inbox, "again.txt", "".join(server.base + p + "\n" for p in again))
    daemon.wait_event("job_finished", count=2)
    for path in again:
        name = path.rsplit("/", 1)[1]
        assert (daemon.output / "again" / name).read_bytes() == image_bytes(path)
    # An operator sees it too, not only in the log: the metrics count the
    # lost worker, and say how many are ready of how many; so does `status`.
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    for sample in (
        "imgdl_download_workers 1.0",
        "imgdl_download_workers_ready 1.0",
        "imgdl_download_workers_lost_total 1.0",
    ):
        assert sample in scraped.decode().splitlines(), sample
    wait_for_status(daemon.inbox, lambda r: bool(r["daemons"]))
    (shown,) = collect(str(daemon.inbox))["daemons"]
    assert shown["workers"] == {"ready": 1, "count": 1}
    daemon.stop_cleanly()
    left = [n for d in ("fork", "again") for n in os.listdir(daemon.output / d)]
    assert not [n for n in left if n.startswith(TEMP_PREFIX)]


async def test_waiting_for_a_forked_process_leaves_the_loop_free() -> None:
    # On its pidfd: a live child is waited for without blocking the loop.
    pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], os.environ)
    child = Forked(pid)
    with trio.move_on_after(0.2) as waited:
        await child.wait()
    assert waited.cancelled_caught and child.returncode is None
    child.end(within_s=0)  # not gone at once: killed, and reaped
    assert child.returncode == -signal.SIGKILL


def test_a_forked_worker_says_hello_with_a_token_of_its_own() -> None:
    # The token a dead worker's files are swept by (`workers._lost`): the
    # parent's would have the daemon's own files swept.
    result = python("""
        import json, trio
        from imgdl_watch.download import errands as e, filesink
        from imgdl_watch.download.durability import Durability
        from imgdl_watch.download.prefork import end_spares, fork_spares
        from imgdl_watch.download.wire import Wire
        (spare,) = fork_spares(1)

        async def hello():
            wire = Wire(spare.sock)
            wire.post(e.Setup(connect_timeout=5.0, read_timeout=5.0, block_private=False,
                              durability=Durability.FILE))
            with trio.fail_after(10):
                return await wire.receive()

        said = trio.run(hello)
        end_spares([spare])
        print(json.dumps({"pid": said.pid, "spare": spare.process.pid, "token": said.token,
                          "parent": filesink.RUN_TOKEN, "code": spare.process.returncode}))
    """)
    assert result["pid"] == result["spare"]
    assert result["token"] != result["parent"]
    assert result["code"] == 0  # its socket closed, it exited


def test_without_a_pidfd_there_are_no_spares_and_no_child_left() -> None:
    result = python("""
        import json, os
        from imgdl_watch.download import prefork

        def refused(pid):
            raise OSError(38, "Function not implemented")

        os.pidfd_open = refused
        spares = prefork.fork_spares(1)
        try:
            os.waitpid(-1, os.WNOHANG)
            left = True
        except ChildProcessError:
            left = False
        print(json.dumps({"spares": len(spares), "child_left": left}))
    """)
    assert result == {"spares": 0, "child_left": False}


def test_spares_no_worker_took_end_with_a_daemon_that_cannot_start(tmp_path: Path) -> None:
    # The log file cannot be opened: the daemon exits at once, after forking.
    # Run under a subreaper, which any child it left behind would come to.
    result = python(f"""
        import ctypes, json, os, subprocess, sys, time
        PR_SET_CHILD_SUBREAPER = 36
        assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        done = subprocess.run(
            [sys.executable, "-m", "imgdl_watch", "run", "--inbox", "{tmp_path / "in"}",
             "--output", "{tmp_path / "out"}", "--workers", "1",
             "--log-file", "{tmp_path / "missing" / "x.log"}"],
            capture_output=True, text=True, timeout=60,
        )
        time.sleep(0.5)  # an orphaned spare would see its socket close and exit
        try:
            orphan = os.waitpid(-1, os.WNOHANG)[0]
        except ChildProcessError:
            orphan = 0
        print(json.dumps({{"code": done.returncode, "stderr": done.stderr, "orphan": orphan}}))
    """)
    assert result["code"] == 2, result["stderr"]
    assert "Traceback" not in str(result["stderr"])
    assert result["orphan"] == 0  # the daemon reaped its spare itself
