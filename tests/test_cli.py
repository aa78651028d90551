"""`imgdl-watch fetch` exit codes and user-facing errors, as a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imgdl_watch.config import ConfigError, resolve
from imgdl_watch.naming import wide_name
from tests.helpers import with_open_files
from tests.imageserver import ImageServer, image_bytes


def fetch(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    open_files: tuple[int, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`imgdl-watch fetch ARGS` in `tmp_path`, with RLIMIT_NOFILE `open_files` if given."""
    command = [sys.executable, "-m", "imgdl_watch", "fetch", "--log-format", "json", *args]
    return subprocess.run(
        with_open_files(command, open_files),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_exit_0_when_all_succeed(server: ImageServer, tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text(f"{server.base}/img/1.jpg\n{server.base}/img/2.jpg\n")
    result = fetch(tmp_path, "good.txt", "--output", "out")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "good").iterdir()) == ["1.jpg", "2.jpg"]
    assert '"event":"job_finished"' in result.stdout


def test_default_output_is_the_current_folder(server: ImageServer, tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text(f"{server.base}/img/1.jpg\n")
    assert fetch(tmp_path, "here.txt").returncode == 0
    assert (tmp_path / "here" / "1.jpg").exists()


def test_exit_1_when_any_fails_or_is_invalid(server: ImageServer, tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text(f"{server.base}/img/1.jpg\n{server.base}/status/404/x.jpg\n")
    assert fetch(tmp_path, "bad.txt", "--retries", "0").returncode == 1
    (tmp_path / "junk.txt").write_text(f"{server.base}/img/1.jpg\nnot a url\n")
    assert fetch(tmp_path, "junk.txt").returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.txt"], "cannot read list missing.txt: no such file"),
        (
            ["http://h.example/a b.jpg"],
            "http://h.example/a b.jpg is a URL, not a list: put URLs in a file, one per line,"
            " or pipe them in: echo 'http://h.example/a b.jpg' | imgdl-watch fetch -",
        ),
        (["list.txt", "--max-bytes", "lots"], "max-bytes"),
        (["list.txt", "--config", "nope.toml"], "config file nope.toml does not exist"),
        (["list.txt", "--config", "bad.toml"], "unknown key 'colour'"),
        (["list.txt", "--config", "broken.toml"], "is not valid TOML"),
        ([".", "--retries", "1"], "is not a regular file"),
        (["list.txt", "--header", "Referer"], "header 'Referer' is not a header such as"),
        (["list.txt", "--header", "Host: x"], "must not set Host, which imgdl-watch sets itself"),
        (["list.txt", "--header", "Referer: https://café.example/"], "must be ASCII (Referer)"),
        (["list.txt", "--header", "X-A: 1\nX-B: 2"], "must be one line (X-A)"),
        (["list.txt", "--user-agent", "bot-é/1"], "user-agent must be ASCII"),
    ],
)
def test_exit_2_on_usage_config_or_input_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "list.txt").write_text("http://127.0.0.1:9/a.jpg\n")
    (tmp_path / "bad.toml").write_text("colour = 'red'\n")
    (tmp_path / "broken.toml").write_text("concurrency = \n")
    result = fetch(tmp_path, *args)
    assert result.returncode == 2
    assert message in one_clean_line(result.stderr)


def test_headers_come_from_flags_the_environment_or_the_config_file(
    server: ImageServer, tmp_path: Path
) -> None:
    (tmp_path / "h.txt").write_text(f"{server.base}/img/h.jpg\n")
    (tmp_path / "c.toml").write_text('header = ["X-File: f", "Referer: https://f.example/"]\n')

    def sent() -> list[tuple[str, str]]:
        return [(k, v) for k, v in server.header_items[-1] if k.startswith(("X-", "Referer"))]

    flags = ["--header", "Referer: https://r.example/", "--header", "X-Two: 2"]
    assert fetch(tmp_path, "h.txt", "--output", "a", *flags).returncode == 0
    assert sent() == [("Referer", "https://r.example/"), ("X-Two", "2")]
    environment = {**os.environ, "IMGDL_WATCH_HEADER": "X-Env: 1\nX-Env-Too: 2"}
    assert fetch(tmp_path, "h.txt", "--output", "b", env=environment).returncode == 0
    assert sent() == [("X-Env", "1"), ("X-Env-Too", "2")]
    assert fetch(tmp_path, "h.txt", "--output", "c", "--config", "c.toml").returncode == 0
    assert sent() == [("X-File", "f"), ("Referer", "https://f.example/")]
    # A flag replaces the file's list, as every flag replaces the file's value.
    assert (
        fetch(tmp_path, "h.txt", "--output", "d", "--config", "c.toml", *flags[:2]).returncode == 0
    )
    assert sent() == [("Referer", "https://r.example/")]


def test_the_open_file_limit_is_raised_as_far_as_the_settings_need(
    server: ImageServer, tmp_path: Path
) -> None:
    # 300 slow downloads at once need ~1900 descriptors. With the soft limit
    # of 128 as it was, the run died of EMFILE ("internal error"). Each takes
    # a second, so that even a loaded machine opens them all before the first
    # ends (at 0.3 s, one busy run peaked at 120).
    (tmp_path / "wide.txt").write_text(
        "".join(f"{server.base}/slow/1000/{i}.jpg\n" for i in range(300))
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit here is {hard}")
    wide = ("wide.txt", "--concurrency", "300", "--per-host", "300")
    result = fetch(tmp_path, *wide, open_files=(128, hard))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "wide").iterdir())) == 300
    assert server.peak_connections > 128  # it really held more than the old soft limit
    # With the hard limit too low, it says so and what to change, before any work.
    result = fetch(tmp_path, *wide, open_files=(128, 512))
    assert result.returncode == 2
    line = one_clean_line(result.stderr)
    assert "may open only 512: lower --concurrency or --max-jobs, or raise" in line


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        (
            "cut.csv.gz",
            gzip.compress(b"url\nhttp://a.example/1.jpg\n")[:-9],
            "cut short or corrupt",
        ),
        ("cols.csv", b"link,caption\nhttp://a.example/1.jpg,x\n", "or give --url-column NAME"),
        # A csv whose columns are separated by ";" is one column to the reader.
        (
            "semi.csv",
            b"url;caption\nhttp://a.example/1.jpg;x\n",
            "its one column holds ';': a .csv list's columns are separated by ','",
        ),
        ("tabs.tsv", b"url,caption\nhttp://a.example/1.jpg,x\n", "by a tab"),
    ],
)
def test_a_list_that_cannot_be_read_exits_2_with_one_line(
    tmp_path: Path, name: str, data: bytes, says: str
) -> None:
    (tmp_path / name).write_bytes(data)
    result = fetch(tmp_path, name)
    assert result.returncode == 2, result.stderr
    line = one_clean_line(result.stderr)
    assert line.startswith(f"imgdl-watch: error: cannot read list {name}: ") and says in line


def test_a_list_whose_folder_cannot_be_used_exits_1(tmp_path: Path) -> None:
    (tmp_path / "cats.txt").write_text("http://a.example/1.jpg\n")
    (tmp_path / "cats").write_text("a file where the job's folder would be")
    result = fetch(tmp_path, "cats.txt")
    assert result.returncode == 1, result.stderr
    line = one_clean_line(result.stderr)
    assert line.startswith("imgdl-watch: error: list cats.txt could not run: ")


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = fetch(tmp_path)
    assert result.returncode == 2
    # One line, not a dozen of usage first.
    assert one_clean_line(result.stderr) == (
        "imgdl-watch fetch: error: the following arguments are required: LIST"
        " (see imgdl-watch fetch --help)"
    )
    # An option the command does not know is the command's error.
    result = subprocess.run(
        [sys.executable, "-m", "imgdl_watch", "run", "--bogus"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert one_clean_line(result.stderr) == (
        "imgdl-watch run: error: unrecognized arguments: --bogus (see imgdl-watch run --help)"
    )


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("concurrency = 3\nper-host = 5\nretries = 7\n")
    env = {"IMGDL_WATCH_PER_HOST": "6", "IMGDL_WATCH_RETRIES": "9"}
    settings = resolve("run", {"retries": "1"}, env=env, config_path=str(config))
    assert (settings.concurrency, settings.per_host, settings.retries) == (3, 6, 1)
    assert settings.max_jobs == 4 and settings.output == "downloads"
    assert resolve("fetch", {}, env={}, config_path=None).output == "."


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CONCURRENCY", "-1", "concurrency must be 1 to 1000"),
        # An extra zero or three: an error, not a process that eats the machine.
        ("CONCURRENCY", "50000", "concurrency must be 1 to 1000"),
        ("MAX_JOBS", "100000", "max-jobs must be 1 to 256"),
        ("RETRIES", "1e9", "retries '1e9' is not a whole number"),
        ("MAX_BYTES", "inf", "max-bytes must be a finite number"),
        ("MAX_BYTES", "12Q", "max-bytes '12Q' is not a size such as 4096, 500K, 32M or 1G"),
        ("TOTAL_TIMEOUT", "nan", "total-timeout must be a finite number"),
        ("SETTLE", "soon", "settle 'soon' is not a number of seconds"),
        # A slip to a tiny interval: a busy loop, or a flood of log lines.
        ("RESCAN_INTERVAL", "1e-9", "rescan-interval must be at least 0.01"),
        ("PROGRESS_INTERVAL", "0.001", "progress-interval must be at least 0.1"),
    ],
)
def test_config_errors_are_one_line(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve("run", {}, env={f"IMGDL_WATCH_{name}": value}, config_path=None)
    assert str(info.value) == f"IMGDL_WATCH_{name}: {message}"


def test_relative_paths_in_a_config_file_are_the_config_files_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `inbox = "cfgin"` in /etc/imgdl-watch/config.toml named ./cfgin of
    # whatever folder the command ran in: `status --config` elsewhere said
    # "no inbox at cfgin".
    from imgdl_watch.config import category_settings, resolve

    here = tmp_path / "etc"
    here.mkdir()
    (here / "digests.txt").write_text("0" * 64 + "\n")
    (here / "config.toml").write_text(
        'inbox = "cfgin"\noutput = "../out"\nlog_file = "logs/d.log"\narchive = "/abs/a.db"\n'
        '[category.art]\nskip_sha256 = "digests.txt"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    flags = {"output": "flagged"}  # a flag's, or the environment's, is the shell's
    settings = resolve("run", flags, env={}, config_path=str(here / "config.toml"))
    assert settings.inbox == str(here / "cfgin")
    assert settings.output == "flagged"
    assert settings.log_file == str(here / "logs" / "d.log")
    assert settings.archive == "/abs/a.db"
    digests = category_settings(settings, "art").skip_sha256
    assert digests is not None and digests.source == str(here / "digests.txt")
    plain = resolve("run", {}, env={}, config_path=str(here / "config.toml"))
    assert plain.output == str(here / ".." / "out")
    # Blank is no path beside the file: refused, as a flag's blank is.
    (here / "config.toml").write_text('inbox = "  "\n')
    with pytest.raises(ConfigError, match="must not be empty"):
        resolve("run", {}, env={}, config_path=str(here / "config.toml"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Above an [imgdl-watch] table, an option was silently unread: here
        # the address blocking that the operator meant to turn on.
        (
            "block_private = true\n[imgdl-watch]\nmax_jobs = 2\n",
            "'block_private' is outside [imgdl-watch]: put it inside the table,"
            " or drop the table's header",
        ),
        ("per_host = 1\nper-host = 100\n", "'per_host' and 'per-host' are the same key"),
        (
            "[category.art]\nper_host = 2\nper-host = 3\n",
            "'per_host' and 'per-host' are the same key",
        ),
        (
            '[hosts."a.example"]\nmin_gap = 1\nmin-gap = 2\n',
            "'min_gap' and 'min-gap' are the same key",
        ),
        (
            '[hosts."a.example"]\nrate = 1\n[hosts."A.example"]\nrate = 2\n',
            'the same host as [hosts."a.example"]',
        ),
        (
            "inbox = {a = 1}\n",
            "config file {path}: inbox must be a string or a number, not a table",
        ),
        (
            "output = [1, 2]\n",
            "config file {path}: output must be a string or a number, not an array",
        ),
        ("log_file = 2024-01-01\n", "log-file must be a string or a number, not a date or time"),
        ("header = {Referer = 'x'}\n", "header must be a string or a number, not a table"),
        (b"\xff\xfe = 1\n", "is not valid TOML: it is not UTF-8"),
        (
            '[hosts."a.example"]\nrate = 1\n[imgdl-watch]\n[imgdl-watch.hosts."b.example"]\n',
            "[hosts] is given twice",
        ),
    ],
)
def test_a_config_file_that_says_a_key_wrong_stops_with_one_line(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    config = tmp_path / "c.toml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text)
    with pytest.raises(ConfigError) as info:
        resolve("run", {}, env={}, config_path=str(config))
    assert message.format(path=config) in str(info.value)
    assert "\n" not in str(info.value)


def test_tables_beside_an_imgdl_watch_table_are_read(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[imgdl-watch]\nper_host = 2\n[hosts."a.example"]\nrate = 1\n[category.art]\nretries = 1\n'
    )
    settings = resolve("run", {}, env={}, config_path=str(config))
    assert settings.per_host == 2 and [c.name for c in settings.categories] == ["art"]
    assert [rule.name for rule in settings.hosts.rules] == ["a.example"]


def test_sizes_take_suffixes() -> None:
    env = {"IMGDL_WATCH_MAX_BYTES": "1.5K", "IMGDL_WATCH_MIN_FREE": "2T"}
    settings = resolve("run", {}, env=env, config_path=None)
    assert (settings.max_bytes, settings.min_free) == (1536, 2 * 1024**4)


# SIGHUP: the terminal that ran it was closed.
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_fetch_interrupted_exits_130_cleanly(
    server: ImageServer, tmp_path: Path, signum: int
) -> None:
    (tmp_path / "slow.txt").write_text(
        "".join(f"{server.base}/slow/5000/{i}.jpg\n" for i in range(8))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgdl_watch", "fetch", "slow.txt", "--log-format", "json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server.wait_for_requests(8, timeout=20)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted" in one_clean_line(err)
    assert [p.name for p in (tmp_path / "slow").iterdir()] == []  # no temporary file left


def test_unwritable_folder_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, "-m", "imgdl_watch", "run", "--inbox", str(tmp_path / "in"),
         "--output", str(blocker / "out")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot create output folder" in one_clean_line(result.stderr)
    (tmp_path / "list.txt").write_text("")
    result = fetch(tmp_path, "list.txt", "--output", str(blocker))
    assert result.returncode == 2
    assert one_clean_line(result.stderr).endswith(f"output {blocker} is not a folder")


@pytest.mark.parametrize(("inbox", "output"), [("same", "same"), ("o/in", "o"), ("i", "i/out")])
def test_an_inbox_and_output_that_overlap_exit_2(tmp_path: Path, inbox: str, output: str) -> None:
    # With the inbox inside the output, a job named after it saved its
    # downloads into the inbox, where they were taken for lists.
    result = subprocess.run(
        [sys.executable, "-m", "imgdl_watch", "run", "--inbox", str(tmp_path / inbox),
         "--output", str(tmp_path / output)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "overlap: give each a folder of its own" in one_clean_line(result.stderr)
    # Nothing ran, and neither folder was made: a folder left in the inbox
    # would be a stray entry for every daemon after it.
    assert os.listdir(tmp_path) == []


def test_every_option_is_in_the_readme_and_in_help() -> None:
    from imgdl_watch.cli import build_parser
    from imgdl_watch.config import OPTIONS, env_name

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    run_help = build_parser().parse_known_args(["run"])  # the parser builds
    assert run_help
    for option in OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        assert f"`{flag}" in readme, flag
        assert env_name(option.name) in readme, option.name
    for command in ("run", "fetch", "status"):
        text = subprocess.run(
            [sys.executable, "-m", "imgdl_watch", command, "--help"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        for option in OPTIONS:
            if command in option.commands:
                assert env_name(option.name) in " ".join(text.split()), (command, option.name)


def test_startup_skips_what_structlog_imports_for_nothing() -> None:
    # rich and asyncio cost ~45 ms of every command; structlog still works,
    # and its async log methods (the one use of asyncio) import it on demand.
    # The command line does it (`startup`), first thing: the package does not.
    probe = """
import sys, imgdl_watch.cli, structlog
assert "rich" not in sys.modules and "asyncio" not in sys.modules, sorted(sys.modules)
import asyncio
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stdout))
asyncio.run(structlog.get_logger().ainfo("async_ok"))
import rich
print("rich", rich.__name__)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "async_ok" in done.stdout and "rich rich" in done.stdout


def test_only_a_config_file_imports_the_toml_reader(tmp_path: Path) -> None:
    # tomllib is 2-3 ms of start-up that a command without a config file
    # has no use for.
    config_file = tmp_path / "imgdl-watch.toml"
    config_file.write_text("concurrency = 7\n")
    probe = f"""
import sys
from imgdl_watch import config
import imgdl_watch.cli.main
config.resolve("fetch", {{}}, env={{}}, config_path=None)
assert "tomllib" not in sys.modules
assert config.resolve("fetch", {{}}, env={{}}, config_path={str(config_file)!r}).concurrency == 7
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_only_an_archive_imports_sqlite(tmp_path: Path) -> None:
    # SQLite is ~1 MB of memory and 2-3 ms of start-up that a command
    # without --archive has no use for.
    probe = f"""
import sys
import imgdl_watch.cli.main, imgdl_watch.cli.run, imgdl_watch.cli.fetch
from imgdl_watch import config
from imgdl_watch.cli.common import open_archive
assert open_archive(config.defaults("run")) is None
assert "sqlite3" not in sys.modules, "sqlite3 imported"
asked = config.resolve("run", {{"archive": {str(tmp_path / "a.db")!r}}}, env={{}}, config_path=None)
open_archive(asked).close()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok" and (tmp_path / "a.db").exists()


def test_fetch_runs_a_numbered_failed_list_as_the_job_it_failed_in(
    server: ImageServer, tmp_path: Path
) -> None:
    from imgdl_watch.naming import STEM_XATTR

    listed = tmp_path / "cats.1.txt"  # as the inbox publishes it, failed/cats.txt taken
    listed.write_text(f"{server.base}/img/n1.jpg\n")
    os.setxattr(listed, STEM_XATTR, b"cats")
    done = fetch(tmp_path, "cats.1.txt", "--output", "out")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cats"]


def test_a_list_typed_at_a_terminal_ends_at_one_ctrl_d(server: ImageServer, tmp_path: Path) -> None:
    # Read through a buffered stream, a line and Ctrl-D came back as a short
    # read, and a second Ctrl-D was needed; nothing said where URLs were read.
    leader, follower = os.openpty()
    command = [sys.executable, "-m", "imgdl_watch", "fetch", "-", "--output", "out"]
    with subprocess.Popen(
        [*command, "--log-format", "json"],
        cwd=tmp_path,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as typed:
        os.close(follower)
        try:
            os.write(leader, f"{server.base}/img/t1.jpg\n".encode())
            os.write(leader, b"\x04")  # Ctrl-D, at the start of a line: the end
            _, err = typed.communicate(timeout=30)
        finally:
            os.close(leader)
    assert typed.returncode == 0, err
    assert [p.name for p in (tmp_path / "out" / "stdin").iterdir()] == ["t1.jpg"]
    assert err.splitlines()[0] == (
        "imgdl-watch: reading the list from the terminal, one URL a line; end it with Ctrl-D"
    )


def test_a_list_can_come_from_standard_input_or_a_pipe(server: ImageServer, tmp_path: Path) -> None:
    text = f"{server.base}/img/s1.jpg\n{server.base}/img/s2.jpg\n"
    command = [
        sys.executable,
        "-m",
        "imgdl_watch",
        "fetch",
        "--log-format",
        "json",
        "--output",
        "out",
    ]
    piped = subprocess.run(
        [*command, "-"], cwd=tmp_path, input=text, capture_output=True, text=True, timeout=60
    )
    assert piped.returncode == 0, piped.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "stdin").iterdir()) == ["s1.jpg", "s2.jpg"]
    # /dev/stdin is a pipe here too: copied aside, then read like a file.
    (tmp_path / "out" / "stdin" / "s1.jpg").unlink()
    again = subprocess.run(
        [*command, "/dev/stdin"],
        cwd=tmp_path,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    finished = [json.loads(line) for line in again.stdout.splitlines()][-1]
    assert (finished["event"], finished["ok"], finished["skipped"]) == ("job_finished", 1, 1)
    # Standard input from a device (`< /dev/null`): an empty list, not an error.
    with open(os.devnull, "rb") as null:
        empty = subprocess.run(
            [*command, "-"], cwd=tmp_path, stdin=null, capture_output=True, text=True, timeout=60
        )
    assert empty.returncode == 0, empty.stderr
    finished = [json.loads(line) for line in empty.stdout.splitlines()][-1]
    assert (finished["event"], finished["ok"]) == ("job_finished", 0)
    # A device named as a list is still refused.
    assert "is not a regular file" in one_clean_line(fetch(tmp_path, "/dev/null").stderr)
    # A pipe named by its descriptor, as `<(command)` names one (/dev/fd/63):
    # into OUTPUT/pipe/, not a folder named after a number.
    ends = [os.pipe(), os.pipe()]
    for (_read, write), data in zip(ends, (text, f"{server.base}/img/s3.jpg\n"), strict=True):
        os.write(write, data.encode())
        os.close(write)
    try:
        subbed = subprocess.run(
            [*command, *(f"/dev/fd/{read}" for read, _write in ends)],
            cwd=tmp_path, pass_fds=[read for read, _write in ends],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        for read, _write in ends:
            os.close(read)
    assert subbed.returncode == 0, subbed.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "pipe").iterdir()) == ["s1.jpg", "s2.jpg"]
    # A second pipe of the same command: a folder of its own.
    assert sorted(p.name for p in (tmp_path / "out" / "pipe-2").iterdir()) == ["s3.jpg"]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_list_of_the_same_name_does_not_take_another_urls_file_for_its_own(
    server: ImageServer, tmp_path: Path, workers: str
) -> None:
    # Two lists named s.txt share the folder s/. The second's URL wants the
    # name img0.jpg that the first's image has: it was reported skipped and
    # never fetched. Each file now says which URL it came from.
    first, second = f"{server.base}/img/a/img0.jpg", f"{server.base}/img/b/img0.jpg"
    for folder, url in (("a", first), ("b", second)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "s.txt").write_text(url + "\n")
    both = fetch(tmp_path, "a/s.txt", "b/s.txt", "--output", "out", "--workers", workers)
    assert both.returncode == 0, both.stderr
    events = [json.loads(line) for line in both.stdout.splitlines()]
    assert [e["event"] for e in events if e["event"].startswith("download_")] == [
        "download_ok",
        "download_ok",
    ]
    assert (tmp_path / "out" / "s" / "img0.jpg").read_bytes() == image_bytes("/img/a/img0.jpg")
    alias = wide_name("img0.jpg", second)
    assert (tmp_path / "out" / "s" / alias).read_bytes() == image_bytes("/img/b/img0.jpg")
    # Each list run again finds its own file, under the name it had.
    for folder in ("a", "b"):
        again = fetch(tmp_path, f"{folder}/s.txt", "--output", "out", "--workers", workers)
        assert again.returncode == 0, again.stderr
        (done,) = [json.loads(line) for line in again.stdout.splitlines() if "download_" in line]
        assert done["event"] == "download_skipped"
        assert done["file"] == ("img0.jpg" if folder == "a" else alias)
    assert server.counts["/img/a/img0.jpg"] == server.counts["/img/b/img0.jpg"] == 1
    assert sorted(os.listdir(tmp_path / "out" / "s")) == sorted(["img0.jpg", alias])
