"""Every event the code emits, and every field it carries, is in docs/logging.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "logging.md"
LEVELS = {"debug", "info", "warning", "error", "critical"}


def documented() -> dict[str, set[str]]:
    """Event name -> documented fields (common fields under 'Every line')."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## (\S+)", line)
        if heading:
            current = heading.group(1)
            sections[current] = set()
        elif current and (row := re.match(r"\| ([a-z_]+) \| [a-z|\\]+ \|", line)):
            sections[current].add(row.group(1))
    common = sections.pop("Every")
    return {event: fields | common for event, fields in sections.items()}


def emitted_in_source() -> set[str]:
    names = set()
    for path in (ROOT / "imgdl_watch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
    return names


def test_every_event_in_the_source_is_documented() -> None:
    names = emitted_in_source()
    assert {"download_ok", "job_finished", "daemon_started"} <= names  # the scan works
    assert names - set(documented()) == set()


def test_every_field_of_a_real_run_is_documented(server: ImageServer, tmp_path: Path) -> None:
    b = server.base
    lines = [f"{b}/img/a.jpg", f"{b}/img/a.jpg", f"{b}/status/404/x.jpg", f"{b}/flaky/1/503/f.jpg",
             "ftp://x/y.jpg", f"{b}/slow/1200/s.jpg"]  # fmt: skip
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "link.txt").symlink_to(tmp_path / "nowhere")
    daemon = DaemonProcess(tmp_path, "--progress-interval", "0.3", "--log-level", "debug")
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "mixed.txt", "\n".join(lines) + "\n")
        daemon.wait_event("job_finished", timeout=60)
    finally:
        daemon.stop_cleanly()
    docs = documented()
    seen = {e["event"] for e in daemon.events()}
    assert {"job_progress", "download_retry", "url_invalid", "file_ignored"} <= seen
    for event in daemon.events():
        assert event["event"] in docs, event["event"]
        missing = set(event) - docs[event["event"]]
        assert not missing, f"{event['event']}: undocumented fields {missing}"


def failure_reasons_in_source() -> set[str]:
    """Every `reason` a download can fail with: each error class's own, and
    each `reason=` given to an error's constructor."""
    reasons: set[str] = set()
    for path in (ROOT / "imgdl_watch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (
                        isinstance(stmt, ast.Assign)
                        and [getattr(t, "id", None) for t in stmt.targets] == ["reason"]
                        and isinstance(stmt.value, ast.Constant)
                        and node.name != "DownloadError"  # the base's placeholder, never raised
                    ):
                        reasons.add(str(stmt.value.value))
            elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith(
                ("Error", "Failed")
            ):
                for keyword in node.keywords:
                    if keyword.arg == "reason" and isinstance(keyword.value, ast.Constant):
                        reasons.add(str(keyword.value.value))
    return reasons


def test_every_failure_reason_is_documented() -> None:
    reasons = failure_reasons_in_source()
    assert {"http_error", "disk_full", "redirect_loop", "unknown_host"} <= reasons  # the scan works
    row = next(
        line
        for line in DOC.read_text().split("## download_failed", 1)[1].splitlines()
        if line.startswith("| reason |")
    )
    assert set(re.findall(r"`([a-z_]+)`", row)) == reasons
    readme = (
        (ROOT / "README.md").read_text().split("Failure reasons:", 1)[1].split("Invalid-line")[0]
    )
    readme = re.sub(r"\([^)]*\)", "", readme)  # asides, such as http_error's "(with `status`)"
    assert set(re.findall(r"`([a-z_]+)`", readme)) == reasons
