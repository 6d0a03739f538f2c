"""Safe releases and retraining: the champion/challenger gate, the Cloud Run canary (its gcloud steps, the
records of each revision, the decision) and the serving metrics it judges; the production window a candidate
is gated on, and the labelled images a retraining takes from the inference log. Imports are lazy (PEP 562):
the decisions pull in torch and scipy only when used.
"""

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    "imagenette_drift.release",
    {
        "CanaryDecision": "canary",
        "CanaryPolicy": "canary",
        "RevisionStats": "canary",
        "decide": "canary",
        "revision_stats": "canary",
        "RevisionSelector": "canary_log",
        "read_window": "canary_log",
        "Service": "cloud_run",
        "run_gcloud": "cloud_run",
        "ServingMetrics": "serving_metrics",
        "read_metrics": "serving_metrics",
        "ProductionWindow": "window",
        "WindowChoice": "window",
        "select_window": "window",
        "WindowComparison": "production",
        "compare_on_window": "production",
        "format_window_table": "production",
        "Evaluation": "gate",
        "GateDecision": "gate",
        "ExportSummary": "labelled",
        "export_labelled": "labelled",
    },
)
