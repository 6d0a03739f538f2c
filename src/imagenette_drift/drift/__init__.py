"""Drift detection statistics: batch two-sample tests and a streaming monitor (no Lightning here; the callback lives in drift/callback.py)."""

from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.drift.loading import detector_from_state_dict
from imagenette_drift.drift.mmd import MMDDriftDetector
from imagenette_drift.drift.online import OnlineDriftMonitor
from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.drift.result import DriftResult, OnlineDriftStatus
from imagenette_drift.drift.univariate import ChiSquaredDriftDetector, KSDriftDetector
from imagenette_drift.drift.windows import format_table, run_window_tests, write_report

__all__ = [
    "ChiSquaredDriftDetector",
    "DriftReference",
    "DriftResult",
    "KSDriftDetector",
    "MMDDriftDetector",
    "OnlineDriftMonitor",
    "OnlineDriftStatus",
    "detector_from_state_dict",
    "format_table",
    "image_statistics",
    "run_window_tests",
    "write_report",
]
