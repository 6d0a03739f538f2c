"""Label-free accuracy estimation: what a window of predictions is likely to score, without its labels.

`EstimationReference` (fitted on the held-out split at the end of training, stored in the model card) gives
every method's estimate of a window; `HarmAlert` watches one of them. Names are re-exported lazily (PEP 562).
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "AccuracyEstimate": "reference",
        "EstimationReference": "reference",
        "HarmAlert": "harm",
        "METHODS": "reference",
        "apply_temperature": "confidence",
        "atc_threshold": "confidence",
        "confidence_scores": "confidence",
        "cott_threshold": "transport",
        "estimate_accuracy": "reference",
        "fit_temperature": "confidence",
        "frechet_distance": "transport",
        "nuclear_score": "transport",
        "shared_method": "reference",
        "transport_cost": "transport",
        "transport_plan": "transport",
        "window_estimator": "reference",
    },
)
