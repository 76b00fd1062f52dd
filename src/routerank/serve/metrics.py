"""Prometheus metrics of one server: requests, latency, batch sizes, queue depth, errors by code.

Each app gets its own registry, so several servers (tests, the benchmark) live in one process without
clashing over global metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "routerank_requests", "HTTP requests by endpoint and status code", ["endpoint", "code"], registry=r
        )
        self.latency = Histogram(
            "routerank_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("routerank_errors", "Error responses by status code", ["code"], registry=r)
        self.batch_pairs = Histogram(
            "routerank_batch_pairs", "Pairs per model forward batch", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "routerank_batch_tokens", "Tokens per model forward batch", ["model"], buckets=TOKEN_BUCKETS, registry=r
        )
        self.queue_pairs = Gauge("routerank_queue_pairs", "Pairs waiting to be scored", ["model"], registry=r)
        self.in_flight = Gauge("routerank_in_flight_requests", "Requests being handled now", registry=r)
        self.backend = Gauge(
            "routerank_model_backend", "1 for the backend each model scores on", ["model", "backend"], registry=r
        )
        self.truncated = Counter(
            "routerank_truncated_documents", "Documents cut to fit the window", ["model"], registry=r
        )

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one finished request by endpoint and status code, with its latency; codes of 400 and up also count
        as errors."""
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if code >= 400:
            self.errors.labels(str(code)).inc()

    def render(self) -> bytes:
        """Every metric in the Prometheus text format, the body of /metrics."""
        return generate_latest(self.registry)
