"""Politeness seen from outside: a real daemon, `status` and `/metrics`."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from tests.daemonproc import DaemonProcess, drop
from tests.imageserver import ImageServer
from tests.test_operator import free_port, status


def test_status_and_metrics_show_the_paced_host_and_its_opt_outs(
    server: ImageServer, tmp_path: Path
) -> None:
    port = free_port()
    daemon = DaemonProcess(tmp_path, "--metrics-port", str(port), "--rate-per-host", "2")
    lines = [f"{server.base}/noai/{i}.jpg" for i in range(2)]
    lines += [f"{server.base}/img/{i}.jpg" for i in range(10)]
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "paced.txt", "".join(line + "\n" for line in lines))
        daemon.wait_event("download_failed", count=2)
        deadline = time.monotonic() + 20
        while True:  # the status file is rewritten every second
            report = json.loads(status(daemon.inbox, "--json").stdout)
            if report["hosts"] and report["hosts"][0]["req_s"] > 0:
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.5)
        (host,) = report["hosts"]
        assert host["host"] == "127.0.0.1" and host["rate"] == 2.0
        assert host["ceiling"] == 8 and host["opt_outs"] == 2
        assert 0 <= host["in_flight"] + host["waiting"] <= host["limit"] <= 8
        assert 0 < host["req_s"] <= 3.0
        text = status(daemon.inbox).stdout
        assert "127.0.0.1: " in text and "(paced at 2/s)" in text and "2 opted out" in text
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        for sample in (
            'imgdl_host_rate_limit{host="127.0.0.1"} 2.0',
            'imgdl_host_ceiling{host="127.0.0.1"} 8.0',
            'imgdl_host_opt_outs_total{host="127.0.0.1",reason="opted_out"} 2.0',
            'imgdl_host_requests_total{host="127.0.0.1"}',
            'imgdl_host_in_flight{host="127.0.0.1"}',
        ):
            assert sample in scraped, sample
        daemon.wait_event("job_finished", timeout=60)
    finally:
        daemon.stop_cleanly()
    report_lines = (daemon.inbox / "done" / "paced.report.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in report_lines]
    assert sorted(r["url"] for r in records if r.get("reason") == "opted_out") == lines[:2]
    assert sum(r["outcome"] == "ok" for r in records) == 10
    # One request per opted-out URL, and its 64 MB body not read: what went
    # is what the sockets' buffers took before we hung up.
    assert all(server.counts[f"/noai/{i}.jpg"] == 1 for i in range(2))
    assert server.noai_body_bytes < 2 * 16 * 1024**2
    # 12 requests at 2 a second, a second's worth (2) at once: 5 s at least.
    (finished,) = daemon.events("job_finished")
    assert finished["elapsed_s"] >= 5.0


def test_host_gauges_are_bounded_and_go_with_their_host() -> None:
    from imgdl_watch import metrics
    from imgdl_watch.download.hoststats import HostState

    def state(host: str) -> HostState:
        return HostState(host, 1, 0, 4, 8, 2.0, 0.0, 10, 0.0, 0.0, 0)

    recorder = metrics.PrometheusRecorder()
    recorder.hosts([state("a.example"), state("b.example")])
    assert recorder.registry.get_sample_value("imgdl_host_limit", {"host": "a.example"}) == 4
    recorder.hosts([state("b.example")])  # a.example left the status: its gauges go
    assert recorder.registry.get_sample_value("imgdl_host_limit", {"host": "a.example"}) is None
    assert recorder.registry.get_sample_value("imgdl_host_rate_limit", {"host": "b.example"}) == 2
    for i in range(metrics.MAX_HOST_LABELS + 10):
        recorder.opted_out(f"h{i}.example", "opted_out")
    other = {"host": "_other", "reason": "opted_out"}
    # a.example and b.example hold two labels: 498 more hosts get theirs.
    assert recorder.registry.get_sample_value("imgdl_host_opt_outs_total", other) == 12
    recorder.hosts([state("late.example")])  # past the bound: no gauge, no "_other" gauge
    assert recorder.registry.get_sample_value("imgdl_host_limit", {"host": "_other"}) is None


def test_sighup_reloads_the_hosts_table(server: ImageServer, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[hosts."127.0.0.1"]\nrate = 0.5\n')
    daemon = DaemonProcess(tmp_path, "--config", str(config))
    try:
        daemon.wait_event("daemon_started")
        drop(daemon.inbox, "slow.txt", "".join(f"{server.base}/img/{i}.jpg\n" for i in range(20)))
        daemon.wait_event("download_ok", count=2)  # at 0.5/s: 40 s for the list
        config.write_text('[hosts."127.0.0.1"]\nrate = 0.5\nspeed = 9\n')
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_event("config_reload_failed")[0]
        assert "unknown key 'speed'" in failed["detail"]  # the running table stays
        config.write_text('[hosts."127.0.0.1"]\nrate = 0\n')  # exempt from any rate
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_event("config_reloaded")[0]
        assert reloaded["hosts"] == 1
        (finished,) = daemon.wait_event("job_finished", timeout=30)
    finally:
        daemon.stop_cleanly()
    assert finished["ok"] == 20
    assert finished["elapsed_s"] < 20  # not 38 s, as at 0.5/s
