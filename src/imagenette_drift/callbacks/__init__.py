"""Lightning callbacks of the project."""

from imagenette_drift.callbacks.prediction_writer import PredictionWriter
from imagenette_drift.drift.callback import DriftCallback

__all__ = ["DriftCallback", "PredictionWriter"]
