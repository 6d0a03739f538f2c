"""Safe releases: the Cloud Run canary (its gcloud steps, the records of each revision, the decision) and the
serving metrics it judges. Imports are lazy (PEP 562): the decision pulls in torch and scipy only when used.
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
    },
)
