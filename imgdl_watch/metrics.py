"""Prometheus metrics, off unless `--metrics-port` is given.

The parts that see events (the fetcher, the job) report to `recorder`, which
does nothing until the daemon calls `enable()`. Then prometheus-client is
imported (only then: it costs start-up time that `fetch` should not pay);
the status page's server (`service/statuspage.py`) answers `/metrics` from
the registry it returns.

    imgdl_downloads_total{result}            ok, failed, skipped, reused, filtered
    imgdl_download_failures_total{reason}    failed downloads by reason
    imgdl_download_bytes_total
    imgdl_download_duration_seconds          histogram of successful downloads
    imgdl_host_throttled_total{host,status}  429 and 503 answers, per host
    imgdl_host_requests_total{host}          download attempts sent, per host
    imgdl_host_opt_outs_total{host,reason}   URLs refused: opted_out (X-Robots-Tag),
                                             robots_disallowed, robots_unavailable
    imgdl_host_paused_seconds_total{host}    seconds a host was paused (Retry-After)
    imgdl_host_in_flight{host}, imgdl_host_limit{host}, imgdl_host_ceiling{host},
    imgdl_host_rate_limit{host}              gauges, for the hosts `status` shows
    imgdl_jobs_running, imgdl_lists_queued, imgdl_downloads_in_flight   gauges
    imgdl_output_free_bytes, imgdl_output_min_free_bytes    the output's disk
    imgdl_heartbeat_timestamp_seconds        the daemon's loop is alive
    imgdl_hooks_total{hook,result}           hooks run: ok, failed
    imgdl_notifications_total{result}        notifications: sent, failed

Every label has a bounded set of values (`alerts.yml` in contrib/prometheus
relies on these names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported when metrics are enabled: `fetch` never pays for it
    from prometheus_client import Counter, Gauge

# Distinct host labels before further hosts are counted as "_other": a list
# with a million hosts must not create a million time series.
MAX_HOST_LABELS = 500
# Distinct failure reasons before further ones count as "_other". The
# reasons are the error classes' own (about twenty); this only bounds a bug.
MAX_REASON_LABELS = 64
# Results counted from the start at 0, so that `rate()` and `increase()` see
# a series before the first download of each kind.
RESULTS = ("ok", "failed", "skipped", "reused", "filtered")


class HostGauges(Protocol):
    """One host's gauges (the download side's `HostState`)."""

    @property
    def host(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def limit(self) -> int: ...
    @property
    def ceiling(self) -> int: ...
    @property
    def rate(self) -> float | None: ...


class Recorder:
    """The no-op recorder: what every part calls while metrics are off."""

    def request(self, host: str) -> None:
        pass

    def opted_out(self, host: str, reason: str) -> None:
        pass

    def paused(self, host: str, seconds: float) -> None:
        pass

    def hosts(self, states: Sequence[HostGauges]) -> None:
        pass

    def download(
        self, result: str, *, size: int = 0, seconds: float = 0.0, reason: str | None = None
    ) -> None:
        pass

    def throttled(self, host: str, status: int) -> None:
        pass

    def gauges(self, *, jobs: int, queued: int, in_flight: int) -> None:
        pass

    def disk(self, *, free: int, min_free: int) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def hook(self, hook: str, result: str) -> None:
        pass

    def notification(self, result: str) -> None:
        pass

    def workers(self, *, ready: int, count: int) -> None:
        pass

    def worker_lost(self) -> None:
        pass


class PrometheusRecorder(Recorder):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry  # noqa: PLC0415

        self.registry = CollectorRegistry()
        self._define_downloads()
        self._define_hosts()
        self._define_daemon()
        self._gauged: set[str] = set()
        self._hosts: set[str] = set()
        self._reasons: set[str] = set()

    def _counter(self, name: str, text: str, *labels: str) -> Counter:
        from prometheus_client import Counter  # noqa: PLC0415

        return Counter(name, text, labels, registry=self.registry)

    def _gauge(self, name: str, text: str, *labels: str) -> Gauge:
        from prometheus_client import Gauge  # noqa: PLC0415

        return Gauge(name, text, labels, registry=self.registry)

    def _define_downloads(self) -> None:
        from prometheus_client import Histogram  # noqa: PLC0415

        self._downloads = self._counter("imgdl_downloads", "Downloads by result", "result")
        for result in RESULTS:
            self._downloads.labels(result)
        self._failures = self._counter(
            "imgdl_download_failures", "Failed downloads by reason", "reason"
        )
        self._bytes = self._counter("imgdl_download_bytes", "Bytes saved")
        self._duration = Histogram(
            "imgdl_download_duration_seconds",
            "Duration of successful downloads, retries included",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )

    def _define_hosts(self) -> None:
        counter = self._counter
        self._throttled = counter(
            "imgdl_host_throttled", "429 and 503 answers by host", "host", "status"
        )
        self._requests = counter("imgdl_host_requests", "Download attempts by host", "host")
        self._opt_outs = counter(
            "imgdl_host_opt_outs",
            "URLs opted out (X-Robots-Tag) or disallowed by robots.txt, by host",
            "host",
            "reason",
        )
        self._paused = counter(
            "imgdl_host_paused_seconds",
            "Seconds a host was paused at its request (Retry-After)",
            "host",
        )
        self._host_gauges = {
            name: self._gauge(f"imgdl_host_{name}", text, "host")
            for name, text in (
                ("in_flight", "Downloads in flight to a host"),
                ("limit", "A host's concurrency limit now (adaptive, at most its ceiling)"),
                ("ceiling", "A host's concurrency ceiling"),
                ("rate_limit", "Requests per second allowed to a host (0: no limit)"),
            )
        }

    def _define_daemon(self) -> None:
        gauge = self._gauge
        self._jobs = gauge("imgdl_jobs_running", "Jobs running")
        self._queued = gauge("imgdl_lists_queued", "Lists waiting in the inbox")
        self._in_flight = gauge("imgdl_downloads_in_flight", "Downloads in flight")
        self._free = gauge(
            "imgdl_output_free_bytes", "Free bytes on the output folder's filesystem"
        )
        self._min_free = gauge(
            "imgdl_output_min_free_bytes", "Free bytes below which no download starts (--min-free)"
        )
        self._heartbeat = gauge(
            "imgdl_heartbeat_timestamp_seconds",
            "When the daemon's event loop last wrote its status (Unix time)",
        )
        self._hooks = self._counter(
            "imgdl_hooks", "Hooks run, by hook and result", "hook", "result"
        )
        self._notifications = self._counter(
            "imgdl_notifications", "Notifications by result", "result"
        )
        self._workers = gauge("imgdl_download_workers", "Download workers asked for (--workers)")
        self._workers_ready = gauge(
            "imgdl_download_workers_ready",
            "Download workers ready now (the slots of the others run in the daemon's process)",
        )
        self._workers_lost = self._counter(
            "imgdl_download_workers_lost", "Download workers that died or hung, and were replaced"
        )

    def _label(self, host: str) -> str:
        """The host's label: itself, or "_other" past `MAX_HOST_LABELS` hosts."""
        if host not in self._hosts:
            if len(self._hosts) >= MAX_HOST_LABELS:
                return "_other"
            self._hosts.add(host)
        return host

    def request(self, host: str) -> None:
        self._requests.labels(self._label(host)).inc()

    def opted_out(self, host: str, reason: str) -> None:
        self._opt_outs.labels(self._label(host), reason).inc()

    def paused(self, host: str, seconds: float) -> None:
        self._paused.labels(self._label(host)).inc(seconds)

    def hosts(self, states: Sequence[HostGauges]) -> None:
        shown = set()
        for state in states:
            label = self._label(state.host)
            if label == "_other":
                continue  # a gauge of many hosts at once would mean nothing
            shown.add(label)
            values = (state.in_flight, state.limit, state.ceiling, state.rate or 0)
            for gauge, value in zip(self._host_gauges.values(), values, strict=True):
                gauge.labels(label).set(value)
        for gone in self._gauged - shown:
            for gauge in self._host_gauges.values():
                gauge.remove(gone)
        self._gauged = shown

    def download(
        self, result: str, *, size: int = 0, seconds: float = 0.0, reason: str | None = None
    ) -> None:
        self._downloads.labels(result).inc()
        if result == "ok":
            self._bytes.inc(size)
            self._duration.observe(seconds)
        elif reason is not None:
            if reason not in self._reasons:
                if len(self._reasons) >= MAX_REASON_LABELS:
                    reason = "_other"
                else:
                    self._reasons.add(reason)
            self._failures.labels(reason).inc()

    def throttled(self, host: str, status: int) -> None:
        self._throttled.labels(self._label(host), str(status)).inc()

    def gauges(self, *, jobs: int, queued: int, in_flight: int) -> None:
        self._jobs.set(jobs)
        self._queued.set(queued)
        self._in_flight.set(in_flight)

    def disk(self, *, free: int, min_free: int) -> None:
        self._free.set(free)
        self._min_free.set(min_free)

    def heartbeat(self) -> None:
        self._heartbeat.set_to_current_time()

    def hook(self, hook: str, result: str) -> None:
        self._hooks.labels(hook, result).inc()

    def notification(self, result: str) -> None:
        self._notifications.labels(result).inc()

    def workers(self, *, ready: int, count: int) -> None:
        self._workers.set(count)
        self._workers_ready.set(ready)

    def worker_lost(self) -> None:
        self._workers_lost.inc()

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its Content-Type."""
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


recorder: Recorder = Recorder()


def enable() -> PrometheusRecorder:
    """Turn metrics on; the recorder returned holds the registry to serve."""
    global recorder  # noqa: PLW0603 - the one switch from no-op to Prometheus
    prometheus = PrometheusRecorder()
    recorder = prometheus
    return prometheus
