"""``dupstream_serve_*`` metrics of the lookup server (its own registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("dupstream_serve_requests_total",
                                "requests answered, by route and status", ["route", "status"],
                                registry=r)
        self.errors = Counter("dupstream_serve_errors_total",
                              "requests answered with an error, by reason", ["reason"],
                              registry=r)
        self.latency = Histogram("dupstream_serve_request_duration_seconds",
                                 "request latency, by route", ["route"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("dupstream_serve_batch_size_requests",
                               "requests per model micro-batch", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue = Gauge("dupstream_serve_queue_depth_requests",
                           "requests waiting for the model", registry=r)
        self.images = Gauge("dupstream_serve_index_images", "uploads in the replica's index",
                            registry=r)
        self.feed_applied = Gauge("dupstream_serve_feed_applied_updates",
                                  "index updates applied from the feed since start", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
