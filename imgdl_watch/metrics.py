"""Prometheus metrics, off unless `--metrics-port` is given.

The parts that see events (the fetcher, the job) report to `recorder`, which
does nothing until the daemon calls `serve()`. Then prometheus-client is
imported (only then: it costs start-up time that `fetch` should not pay) and
its own HTTP server answers `/metrics` from a thread.

    imgdl_downloads_total{result}            ok, failed, skipped
    imgdl_download_bytes_total
    imgdl_download_duration_seconds          histogram of successful downloads
    imgdl_host_throttled_total{host,status}  429 and 503 answers, per host
    imgdl_jobs_running, imgdl_lists_queued, imgdl_downloads_in_flight   gauges
"""

from __future__ import annotations

from typing import Any

# Distinct host labels before further hosts are counted as "_other": a list
# with a million hosts must not create a million time series.
MAX_HOST_LABELS = 500


class Recorder:
    """The no-op recorder: what every part calls while metrics are off."""

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
        self._hosts: set[str] = set()

    def download(self, result: str, *, size: int = 0, seconds: float = 0.0) -> None:
        self._downloads.labels(result).inc()
        if result == "ok":
            self._bytes.inc(size)
            self._duration.observe(seconds)

    def throttled(self, host: str, status: int) -> None:
        if host not in self._hosts:
            if len(self._hosts) >= MAX_HOST_LABELS:
                host = "_other"
            else:
                self._hosts.add(host)
        self._throttled.labels(host, str(status)).inc()

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
