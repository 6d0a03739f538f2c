"""Per-request familiarity: energy score and k-NN distance against a bank stored in the model card.

Names are re-exported lazily (PEP 562).
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "FAMILIARITY_VERSION": "reference",
        "FamiliarityReference": "reference",
        "energy_score": "reference",
        "knn_distance": "reference",
    },
)
