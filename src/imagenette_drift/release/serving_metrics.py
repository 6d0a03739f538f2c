"""A revision's 5xx rate and latency from the server's Prometheus `/metrics` text, scraped or from a file.

The text is parsed with prometheus_client's own parser; the series are the server's (`serve/metrics.py`):
`imagenette_requests_total{method,route,status}` and the histogram
`imagenette_request_duration_seconds{route}`.
Counters are cumulative since each instance started, so a canary's numbers cover its baking period; several
sources (one per instance, or scrapes saved to files) are summed.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from imagenette_drift.errors import UserError

REQUESTS = "imagenette_requests"
DURATION = "imagenette_request_duration_seconds"
DEFAULT_ROUTE = "/predict"


class MetricsError(UserError, ValueError):
    """A `/metrics` source cannot be read or holds none of the server's series; the message names it."""


@dataclass(frozen=True)
class ServingMetrics:
    """Requests to one route, how many answered 5xx, and latency (seconds) from the duration histogram.

    `latency_p95_s` is interpolated inside the histogram's buckets as Prometheus' `histogram_quantile` does
    (so its resolution is the bucket width); None when the route saw no request.
    """

    route: str
    requests: int
    errors_5xx: int
    latency_p95_s: float | None
    latency_mean_s: float | None
    sources: int

    @property
    def error_rate(self) -> float | None:
        """5xx answers / requests, or None without requests."""
        return self.errors_5xx / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"error_rate": self.error_rate}


def fetch_text(source: str, timeout: float = 10.0) -> str:
    """The exposition text at an http(s) URL (a GET) or in a file; raise `MetricsError` naming `source`."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as reply:
                return reply.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise MetricsError(
                f"scraping {source} answered HTTP {e.code}; pass the server's /metrics URL."
            ) from None
        except (OSError, ValueError) as e:
            raise MetricsError(f"cannot scrape {source}: {e}; is the revision's URL reachable?") from None
    try:
        return Path(source).read_text()
    except OSError as e:
        raise MetricsError(f"cannot read metrics file {source}: {e.strerror or e}.") from None


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The `q` quantile of a cumulative histogram `[(upper bound, count <= bound), ...]` (ending at +Inf), by
    linear interpolation inside the bucket it falls in, as Prometheus' `histogram_quantile`."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):  # in the open last bucket: the highest finite bound, as Prometheus answers
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def parse_metrics(
    texts: Sequence[str], route: str = DEFAULT_ROUTE, names: Sequence[str] = ()
) -> ServingMetrics:
    """Sum requests, 5xx answers and the latency histogram of `route` over several exposition texts.

    `names` label the texts in errors (URLs or paths). Raises `MetricsError` when a text is not Prometheus
    text or carries none of the server's request series.
    """
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    duration_sum = duration_count = 0.0
    for i, text in enumerate(texts):
        name = names[i] if i < len(names) else f"source {i + 1}"
        seen = False
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as e:
            raise MetricsError(f"{name} is not Prometheus text format: {e}") from None
        for family in families:
            for sample in family.samples:
                if sample.labels.get("route") != route:
                    continue
                if sample.name == f"{REQUESTS}_total":
                    seen = True
                    requests += sample.value
                    errors += sample.value if sample.labels.get("status", "").startswith("5") else 0.0
                elif sample.name == f"{DURATION}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name == f"{DURATION}_sum":
                    duration_sum += sample.value
                elif sample.name == f"{DURATION}_count":
                    duration_count += sample.value
        if not seen and not any(f.name == REQUESTS for f in families):
            raise MetricsError(
                f"{name} has no {REQUESTS}_total series: is it the /metrics of `imagenette serve`?"
            )
    return ServingMetrics(
        route=route,
        requests=round(requests),
        errors_5xx=round(errors),
        latency_p95_s=histogram_quantile(0.95, list(buckets.items())),
        latency_mean_s=duration_sum / duration_count if duration_count else None,
        sources=len(texts),
    )


def read_metrics(sources: Sequence[str], route: str = DEFAULT_ROUTE, timeout: float = 10.0) -> ServingMetrics:
    """`parse_metrics` of every source (URL or file), fetched with `fetch_text`."""
    return parse_metrics([fetch_text(s, timeout) for s in sources], route, list(sources))
