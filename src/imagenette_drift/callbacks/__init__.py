"""Lightning callbacks of the project."""

from imagenette_drift.callbacks.prediction_writer import PredictionWriter

__all__ = ["PredictionWriter"]
