"""Prometheus metrics, off unless `--metrics-port` is given.

The parts that see events (the fetcher, the job) report to `recorder`, which
does nothing until the daemon calls `serve()`. Then prometheus-client is
imported (only then: it costs start-up time that `fetch` should not pay) and
its own HTTP server answers `/metrics` from a thread.

    imgdl_downloads_total{result}            ok, failed, skipped
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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

# Distinct host labels before further hosts are counted as "_other": a list
# with a million hosts must not create a million time series.
MAX_HOST_LABELS = 500


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

    def download(self, result: str, *, size: int = 0, seconds: float = 0.0) -> None:
        pass

    def throttled(self, host: str, status: int) -> None:
        pass

    def gauges(self, *, jobs: int, queued: int, in_flight: int) -> None:
        pass


class PrometheusRecorder(Recorder):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # noqa: PLC0415

        self.registry = CollectorRegistry()
        self._downloads = Counter(
            "imgdl_downloads", "Downloads by result", ["result"], registry=self.registry
        )
        self._bytes = Counter("imgdl_download_bytes", "Bytes saved", registry=self.registry)
        self._duration = Histogram(
            "imgdl_download_duration_seconds",
            "Duration of successful downloads, retries included",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self._throttled = Counter(
            "imgdl_host_throttled",
            "429 and 503 answers by host",
            ["host", "status"],
            registry=self.registry,
        )
        self._jobs = Gauge("imgdl_jobs_running", "Jobs running", registry=self.registry)
        self._queued = Gauge(
            "imgdl_lists_queued", "Lists waiting in the inbox", registry=self.registry
        )
        self._in_flight = Gauge(
            "imgdl_downloads_in_flight", "Downloads in flight", registry=self.registry
        )
        self._requests = Counter(
            "imgdl_host_requests", "Download attempts by host", ["host"], registry=self.registry
        )
        self._opt_outs = Counter(
            "imgdl_host_opt_outs",
            "URLs opted out (X-Robots-Tag) or disallowed by robots.txt, by host",
            ["host", "reason"],
            registry=self.registry,
        )
        self._paused = Counter(
            "imgdl_host_paused_seconds",
            "Seconds a host was paused at its request (Retry-After)",
            ["host"],
            registry=self.registry,
        )
        self._host_gauges = {
            name: Gauge(f"imgdl_host_{name}", text, ["host"], registry=self.registry)
            for name, text in (
                ("in_flight", "Downloads in flight to a host"),
                ("limit", "A host's concurrency limit now (adaptive, at most its ceiling)"),
                ("ceiling", "A host's concurrency ceiling"),
                ("rate_limit", "Requests per second allowed to a host (0: no limit)"),
            )
        }
        self._gauged: set[str] = set()
        self._hosts: set[str] = set()

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

    def download(self, result: str, *, size: int = 0, seconds: float = 0.0) -> None:
        self._downloads.labels(result).inc()
        if result == "ok":
            self._bytes.inc(size)
            self._duration.observe(seconds)

    def throttled(self, host: str, status: int) -> None:
        self._throttled.labels(self._label(host), str(status)).inc()

    def gauges(self, *, jobs: int, queued: int, in_flight: int) -> None:
        self._jobs.set(jobs)
        self._queued.set(queued)
        self._in_flight.set(in_flight)


recorder: Recorder = Recorder()


def serve(port: int, address: str) -> Any:
    """Turn metrics on and serve them on `address:port`. Returns the server."""
    global recorder  # noqa: PLW0603 - the one switch from no-op to Prometheus
    from prometheus_client import start_http_server  # noqa: PLC0415

    prometheus = PrometheusRecorder()
    server, _thread = start_http_server(port, addr=address, registry=prometheus.registry)
    recorder = prometheus
    return server
