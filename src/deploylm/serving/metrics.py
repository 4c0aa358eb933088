"""Prometheus metrics of one server: one registry per server (not the process-wide default), so tests
and benchmarks can run several servers in one process."""

from __future__ import annotations


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("deploylm_requests", "Requests answered, by model, protocol and status code.",
                                ["model", "version", "protocol", "status"], registry=self.registry)
        self.latency = Histogram("deploylm_request_latency_seconds", "End-to-end request latency in the server.",
                                 ["model", "version", "protocol"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .0075, .01, .025, .05, .075, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("deploylm_batch_size", "Inputs per runner call.", ["model", "version"], registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256))
        self.queue_depth = Gauge("deploylm_queue_depth", "Requests waiting for the runner.", ["model", "version"],
                                 registry=self.registry)
        self.dropped = Counter("deploylm_requests_dropped", "Requests dropped before compute (client gone or "
                               "deadline passed).", ["model", "version", "reason"], registry=self.registry)

    def observe_request(self, model: str, version: str, protocol: str, status: int, seconds: float) -> None:
        self.requests.labels(model, version, protocol, str(status)).inc()
        if status < 400:
            self.latency.labels(model, version, protocol).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
