"""imagenette-drift: train, serve and monitor an Imagenette classifier for data drift."""

from imagenette_drift.classes import CLASS_NAMES, IMAGENETTE_CLASSES, NUM_CLASSES, WNIDS

__all__ = ["CLASS_NAMES", "IMAGENETTE_CLASSES", "NUM_CLASSES", "WNIDS"]
__version__ = "0.1.0"
