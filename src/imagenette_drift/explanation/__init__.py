"""Why a window drifts: class shares that moved, the corruption signature it matches, the images that drive it,
and that explanation rendered in a Markdown report. Names are re-exported lazily (PEP 562).
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "EXPLANATION_VERSION": "reference",
        "ExplanationReference": "reference",
        "add_thumbnails": "report",
        "bbse_shares": "reference",
        "class_shift": "reference",
        "compute_signatures": "reference",
        "explanation_markdown": "report",
        "witness_images": "reference",
        "write_drift_markdown": "report",
        "write_thumbnail": "report",
    },
)
