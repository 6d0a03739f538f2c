"""Models: the network (normalisation + timm backbone), its LightningModule, and batch mixing for training."""

from imagenette_drift.models.classifier import ImagenetteClassifier
from imagenette_drift.models.mixing import BatchMixer
from imagenette_drift.models.net import ImagenetteNet, create_backbone

__all__ = ["BatchMixer", "ImagenetteClassifier", "ImagenetteNet", "create_backbone"]
