"""Prometheus metrics (``dupstream_<area>_<what>_<unit>``) and the /metrics, /healthz, /readyz
HTTP endpoints."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("dupstream_stream_events_total",
                              "Events consumed, by outcome (verdict, dlq)", ["outcome"],
                              registry=r)
        self.verdicts = Counter("dupstream_stream_verdicts_total", "Verdicts published, by kind",
                                ["verdict"], registry=r)
        self.dlq = Counter("dupstream_stream_dlq_records_total",
                           "Dead-letter records published, by reason", ["reason"], registry=r)
        self.batch_size = Histogram("dupstream_stream_batch_size_events",
                                    "Events per micro-batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.stage = Histogram("dupstream_pipeline_stage_latency_seconds",
                               "Latency per pipeline stage, per image or per batch",
                               ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.cascade = Counter("dupstream_engine_cascade_stage_images_total",
                               "Images that went through each stage of the cascade (exact, "
                               "embed, search, verify, objects)", ["stage"], registry=r)
        self.lag = Gauge("dupstream_stream_consumer_lag_messages",
                         "Consumer lag from librdkafka statistics", ["topic", "partition"],
                         registry=r)
        self.index_size = Gauge("dupstream_state_index_size_vectors",
                                "Vectors in the local index", registry=r)
        self.replication_lag = Gauge("dupstream_state_replication_lag_seconds",
                                     "Age of the newest index update applied from the feed",
                                     registry=r)
        self.inflight = Gauge("dupstream_stream_inflight_events",
                              "Events polled and not yet committed", registry=r)
        self.ready = Gauge("dupstream_stream_ready", "1 when the consumer is ready", registry=r)
        self.commits = Counter("dupstream_stream_commits_total", "Offset commits", registry=r)
        self.record_queue = Gauge("dupstream_state_record_queue_depth_records",
                                  "Records waiting to be written to the record store", registry=r)
        self.record_write_failures = Counter(
            "dupstream_state_record_write_failures_total",
            "Failed record-store writes, by kind (transient: retried; permanent: given up)",
            ["kind"], registry=r)

    def observe_stats(self, stats_json: str) -> None:
        """librdkafka statistics callback: per-partition consumer lag."""
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        for topic, t in (stats.get("topics") or {}).items():
            for pid, p in (t.get("partitions") or {}).items():
                if pid == "-1":
                    continue
                lag = p.get("consumer_lag_stored", p.get("consumer_lag", -1))
                if lag is not None and lag >= 0:
                    self.lag.labels(topic=topic, partition=pid).set(lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves /metrics, /healthz and /readyz on a background thread."""

    def __init__(self, *, metrics: Metrics, ready, port: int, host: str = "0.0.0.0") -> None:
        metrics_ref, ready_ref = metrics, ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/metrics"):
                    self._send(200, metrics_ref.render(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    self._send(200, b"ok\n", "text/plain")
                elif self.path.startswith("/readyz"):
                    ok, detail = ready_ref()
                    self._send(200 if ok else 503, json.dumps(detail).encode(),
                               "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="dupstream-health")

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
