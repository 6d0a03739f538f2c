"""Models: the network (normalisation + timm backbone) and its LightningModule."""

from imagenette_drift.models.classifier import ImagenetteClassifier
from imagenette_drift.models.net import ImagenetteNet, create_backbone

__all__ = ["ImagenetteClassifier", "ImagenetteNet", "create_backbone"]
