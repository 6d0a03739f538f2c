"""Models: the network (normalisation + timm backbone), its LightningModule, and batch mixing for training.

Names are re-exported lazily (PEP 562): `from imagenette_drift.models import ImagenetteNet` loads the network
only, never Lightning or torchmetrics (which `ImagenetteClassifier` needs).
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

_EXPORTS = {
    "BatchMixer": "mixing",
    "ImagenetteClassifier": "classifier",
    "ImagenetteNet": "net",
    "create_backbone": "net",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
