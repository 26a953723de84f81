"""Prometheus metrics of the model server, on a registry of its own (one per app)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    """Request counts and latency by route and status, batch sizes, queue depth, the items
    waiting for room in the queue, and the requests waiting at the door."""

    def __init__(
        self,
        model: str,
        queue_depth: Callable[[], float],
        waiting: Callable[[], float] = lambda: 0.0,
        at_the_door: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aiaas_requests",
            "Requests by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aiaas_request_duration_seconds",
            "Request latency by route and HTTP status.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "aiaas_batch_size",
            "Items per forward pass.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        ).labels(model)
        self.batch_latency = Histogram(
            "aiaas_batch_duration_seconds",
            "Time of one forward pass (predict).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(model)
        depth = Gauge(
            "aiaas_queue_depth", "Items waiting for a batch.", ["model"], registry=self.registry
        )
        depth.labels(model).set_function(queue_depth)
        waiting_gauge = Gauge(
            "aiaas_queue_waiting",
            "Items of the requests waiting for room in the full queue (server.queue_wait_ms).",
            ["model"],
            registry=self.registry,
        )
        waiting_gauge.labels(model).set_function(waiting)
        door_gauge = Gauge(
            "aiaas_door_waiting",
            "Requests waiting, unread, for room in the server (server.queue_wait_ms).",
            ["model"],
            registry=self.registry,
        )
        door_gauge.labels(model).set_function(at_the_door)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        code = str(status)
        self.requests.labels(route, code).inc()
        self.latency.labels(route, code).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one forward pass."""
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
