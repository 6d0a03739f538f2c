"""Drift detection statistics: batch two-sample tests and a streaming monitor, free of Lightning.

The Lightning callback that fits the reference in training lives with the other callbacks
(`imagenette_drift.callbacks.DriftCallback`). Names are re-exported lazily (PEP 562).
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "assess_windows": "assessment",
        "ChiSquaredDriftDetector": "univariate",
        "detector_from_state_dict": "loading",
        "DriftReference": "reference",
        "DriftResult": "result",
        "EstimationReference": "imagenette_drift.estimation.reference",
        "ExplanationReference": "explain",
        "FamiliarityReference": "familiarity",
        "format_assessment": "assessment",
        "format_table": "windows",
        "HarmAlert": "imagenette_drift.estimation.harm",
        "image_statistics": "image_stats",
        "KSDriftDetector": "univariate",
        "MMDDriftDetector": "mmd",
        "OnlineDriftMonitor": "online",
        "OnlineDriftStatus": "result",
        "ReferenceSettings": "reference",
        "run_window_tests": "windows",
        "WindowAssessor": "assessment",
        "write_report": "windows",
    },
)
