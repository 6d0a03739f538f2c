"""Drift detection statistics: batch two-sample tests and a streaming monitor, free of Lightning.

The Lightning callback that fits the reference in training lives with the other callbacks
(`imagenette_drift.callbacks.DriftCallback`); what the card keeps beside the drift reference has its own
package (`estimation`, `familiarity`, `explanation`). Names are re-exported lazily (PEP 562).
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
        "format_assessment": "assessment",
        "image_statistics": "image_stats",
        "KSDriftDetector": "univariate",
        "MMDDriftDetector": "mmd",
        "OnlineDriftMonitor": "online",
        "OnlineDriftStatus": "result",
        "ReferenceSettings": "reference",
        "run_window_tests": "windows",
        "WindowAssessor": "assessment",
    },
)
