"""The server's Prometheus metrics (prometheus_client, one registry per server): requests, latency, batch sizes,
drift gauges and the inference log's record counters.

Everything is observed in the one API-server process (the inference workers report batches through the drift
hub's queue, and log records travel back with their responses), so a plain per-server registry is exact and
no multiprocess collector is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what `render` writes


class ServerMetrics:
    """Counters and histograms of one API-server process, rendered as Prometheus text by `render`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # scrape-time collectors are not called on register
        self.requests = Counter(
            "imagenette_requests",
            "HTTP requests by method, route and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "imagenette_request_duration_seconds",
            "Time from request start to response end.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "imagenette_batch_size",
            "Images per model forward pass (dynamic batching).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def add_drift(self, status: Callable[[], dict[str, Any]]) -> None:
        """Expose the `/drift` JSON that `status()` returns as gauges, read at every scrape."""
        self.registry.register(_DriftCollector(status))

    def add_log(self, stats: Callable[[], Any]) -> None:
        """Expose an `InferenceLogWriter.stats()`-like callable's counts, read at every scrape."""
        self.registry.register(_LogCollector(stats))

    def render(self) -> bytes:
        """The whole exposition text (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry)


class _DriftCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        drift = self.status()
        gauges = {
            "imagenette_drift_enabled": ("1 if the checkpoint carries an online drift reference.", "enabled"),
            "imagenette_drift_images_seen": ("Images fed to the online drift monitor.", "images_seen"),
            "imagenette_drift_statistic": (
                "MMD^2 of the latest full window (NaN until filled).",
                "statistic",
            ),
            "imagenette_drift_threshold": (
                "Alarm threshold of the latest window (NaN until filled).",
                "threshold",
            ),
            "imagenette_drift_drifting": ("1 while the latest window is over its threshold.", "drifting"),
        }
        for name, (help_text, key) in gauges.items():
            yield GaugeMetricFamily(name, help_text, value=_number(drift[key]))


class _LogCollector(Collector):
    def __init__(self, stats: Callable[[], Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        counters = {
            "imagenette_log_records_written": ("Inference-log records published to the log.", stats.written),
            "imagenette_log_records_dropped": (
                "Inference-log records lost: queue full, or the sink and the spill folder both failed.",
                stats.dropped,
            ),
            "imagenette_log_records_spilled": (
                "Inference-log records the sink refused, kept in the local spill folder for a retry.",
                stats.spilled,
            ),
        }
        for name, (help_text, by_kind) in counters.items():
            family = CounterMetricFamily(name, help_text, labels=("kind",))
            for kind, value in sorted(by_kind.items()):
                family.add_metric((kind,), value)
            yield family
        yield GaugeMetricFamily(
            "imagenette_log_records_pending",
            "Inference-log records queued or buffered, not yet in a file.",
            value=stats.pending,
        )


def _number(value: float | bool | None) -> float:
    """A gauge value (`NaN` for missing)."""
    return math.nan if value is None else float(value)
