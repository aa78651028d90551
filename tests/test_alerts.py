"""contrib/prometheus/alerts.yml: checked and unit-tested by the real promtool
(Debian's prometheus package; .ci/run installs it), and written against
metrics the daemon really exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from imgdl_watch.metrics import PrometheusRecorder

CONTRIB = Path(__file__).parent.parent / "contrib"
RULES = CONTRIB / "prometheus" / "alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "imgdl-watch.json"
TESTS = RULES.with_name("alerts.test.yml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (apt-get install prometheus; .ci/run does)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


@needs_promtool
def test_promtool_runs_the_rules_unit_tests() -> None:
    done = promtool("test", "rules", TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M))
    assert alerts == {
        "ImgdlWatchStalled", "ImgdlWatchFailureRatioHigh", "ImgdlWatchHostThrottled",
        "ImgdlWatchDiskFull", "ImgdlWatchDown", "ImgdlWatchHung", "ImgdlWatchWorkersDown",
    }  # fmt: skip
    # An alertname followed, before the next one, by an expected alert.
    firing = set(
        re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", TESTS.read_text())
    )
    quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", TESTS.read_text()))
    assert firing == alerts and quiet == alerts


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


@needs_promtool
def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule's expression.
    queries = dashboard_queries()
    assert len(queries) >= 9
    rules = "groups:\n  - name: dashboard\n    rules:\n"
    for n, query in enumerate(queries):
        expr = json.dumps(query.replace("$instance", ".*"))
        rules += f"      - record: dashboard:query{n}\n        expr: {expr}\n"
    (tmp_path / "dashboard.yml").write_text(rules)
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", "dashboard.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_and_the_dashboard_use_only_metrics_the_daemon_exposes() -> None:
    recorder = PrometheusRecorder()
    recorder.download("ok", size=10, seconds=0.1)
    recorder.download("failed", reason="disk_full")
    recorder.throttled("x.example", 429)
    recorder.gauges(jobs=1, queued=2, in_flight=3)
    recorder.disk(free=10, min_free=0)
    recorder.heartbeat()
    recorder.hook("on_finished", "ok")
    recorder.notification("sent")
    text, _ctype = recorder.exposition()
    exposed = set(re.findall(r"^(imgdl_\w+?)(?:_bucket)?(?:\{| )", text.decode(), re.M))
    used = set(re.findall(r"\b(imgdl_\w+)", RULES.read_text() + " ".join(dashboard_queries())))
    used -= {"imgdl_watch"}
    used = {re.sub(r"_bucket$", "", name) for name in used}
    assert used, "the scan works"
    assert used <= exposed, used - exposed
    # Results are there at 0 before the first download of each kind, so that
    # increase() sees a series from the start.
    fresh = PrometheusRecorder().exposition()[0].decode()
    for result in ("ok", "failed", "skipped", "reused", "filtered"):
        assert f'imgdl_downloads_total{{result="{result}"}} 0.0' in fresh
