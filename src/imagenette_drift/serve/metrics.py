"""Prometheus text exposition for the server: request counts, latency and batch-size histograms, drift gauges."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    """Cumulative-bucket histogram as Prometheus expects (`le` upper bounds plus `+Inf`)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        """Exposition lines: `_bucket` per bound, `_sum` and `_count`."""
        sep = "," if labels else ""
        out, cumulative = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cumulative}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {self.n}"]
        return out


class ServerMetrics:
    """Thread-safe counters for one API-server process, rendered with `render`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch_size.observe(size)

    def render(self, drift: dict) -> str:
        """The whole exposition text; `drift` is the `/drift` JSON."""
        with self._lock:
            lines = [
                "# HELP imagenette_requests_total HTTP requests by method, route and status code.",
                "# TYPE imagenette_requests_total counter",
            ]
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(
                    f'imagenette_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP imagenette_request_duration_seconds Time from request start to response end.",
                "# TYPE imagenette_request_duration_seconds histogram",
            ]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("imagenette_request_duration_seconds", f'route="{route}"')
            lines += [
                "# HELP imagenette_batch_size Images per model forward pass (dynamic batching).",
                "# TYPE imagenette_batch_size histogram",
                *self.batch_size.lines("imagenette_batch_size"),
            ]
        lines += _drift_lines(drift)
        return "\n".join(lines) + "\n"


def _drift_lines(drift: dict) -> list[str]:
    gauges = {
        "imagenette_drift_enabled": (
            "1 if the checkpoint carries an online drift reference.",
            drift["enabled"],
        ),
        "imagenette_drift_images_seen": ("Images fed to the online drift monitor.", drift["images_seen"]),
        "imagenette_drift_statistic": (
            "MMD^2 of the latest full window (NaN until filled).",
            drift["statistic"],
        ),
        "imagenette_drift_threshold": (
            "Alarm threshold of the latest window (NaN until filled).",
            drift["threshold"],
        ),
        "imagenette_drift_drifting": ("1 while the latest window is over its threshold.", drift["drifting"]),
    }
    lines = []
    for name, (help_text, value) in gauges.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
    return lines


def _number(value: float | bool | None) -> str:
    """A sample value as Prometheus writes it (`NaN` for missing)."""
    if value is None or value != value:
        return "NaN"
    return repr(float(value))
