"""Prometheus metrics, in a registry owned by the app (no global default registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from yadml_common.wire import ServerStatus


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "yadml_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "yadml_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.dispatched = Counter("yadml_results_dispatched", "Results sent to hosts", registry=r)
        self.uploaded = Counter(
            "yadml_results_uploaded", "Result uploads accepted", ["late"], registry=r
        )
        self.upload_bytes = Counter("yadml_upload_bytes", "Bytes of accepted uploads", registry=r)
        self.rejected = Counter(
            "yadml_uploads_rejected", "Uploads refused, by reason", ["error"], registry=r
        )
        self.failures = Counter(
            "yadml_client_failures", "Failures reported", ["reason"], registry=r
        )
        self.hosts_active = Gauge("yadml_hosts_active", "Hosts seen recently", registry=r)
        self.results_state = Gauge(
            "yadml_results", "Results by server state", ["state"], registry=r
        )
        self.jobs_running = Gauge("yadml_jobs_running", "Jobs pending or running", registry=r)

    def observe_status(self, status: ServerStatus) -> None:
        self.hosts_active.set(status.hosts_active)
        self.jobs_running.set(status.jobs_running)
        self.results_state.labels("unsent").set(status.results_unsent)
        self.results_state.labels("in_progress").set(status.results_in_progress)
        for outcome, n in status.results_over.items():
            self.results_state.labels(f"over_{outcome}").set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
