"""Reports a reader opens: a training run's metrics.json and report.md (for CML), and a drift summary's table,
JSON and plot. The explanation's Markdown lives with the explanation (`imagenette_drift.explanation`), the
monitor's outputs with the monitor. Names are re-exported lazily (PEP 562).
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "format_table": "drift",
        "write_report": "drift",
        "drift_metrics": "training",
        "flatten": "training",
        "metrics_table": "training",
        "stage_metrics": "training",
    },
)
