"""Lightning callbacks of the project: drift monitoring in training and the prediction CSV writer.

YAML configs name them by these short paths (`imagenette_drift.callbacks.DriftCallback`), so moving their
modules never breaks a config. Re-exported lazily (PEP 562), like every package of the project.
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"DriftCallback": "drift", "PredictionWriter": "prediction_writer"}
)
