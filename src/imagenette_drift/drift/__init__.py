"""Drift detection statistics: batch two-sample tests and a streaming monitor (no Lightning here)."""

from imagenette_drift.drift.loading import detector_from_state_dict
from imagenette_drift.drift.mmd import MMDDriftDetector
from imagenette_drift.drift.online import OnlineDriftMonitor
from imagenette_drift.drift.result import DriftResult, OnlineDriftStatus
from imagenette_drift.drift.univariate import ChiSquaredDriftDetector, KSDriftDetector

__all__ = [
    "ChiSquaredDriftDetector",
    "DriftResult",
    "KSDriftDetector",
    "MMDDriftDetector",
    "OnlineDriftMonitor",
    "OnlineDriftStatus",
    "detector_from_state_dict",
]
