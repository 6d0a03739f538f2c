"""What the app shows, whoever computes it: a prediction, the drift monitor's state, and friendly errors.

Plain Python and the REST contract (pydantic; no torch, no requests), so the REST client and the in-process
model share these types. On a Space, `imagenette_drift/serve_contract.py` and `monitor_contract.py` are shipped beside the app
(`scripts/stage_space.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imagenette_drift.serve_contract import DriftStatus, FamiliarityAnswer


class BackendError(RuntimeError):
    """A failure the user should read: the message says what happened and what to do, never a traceback."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail


@dataclass(frozen=True)
class Prediction:
    """The top classes for one image and how long it took.

    Attributes:
        label: Predicted class name.
        confidence: Its softmax probability.
        top_k: (class name, probability) pairs, most likely first.
        round_trip_ms: Wall time the app waited for the answer (network included in API mode).
        model_ms: Time the model itself reported, when it did.
        familiarity: How familiar the image is, when the checkpoint carries a familiarity bank.
    """

    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    round_trip_ms: float
    model_ms: float | None = None
    familiarity: FamiliarityAnswer | None = None


DriftState = DriftStatus  # the `GET /drift` answer, as the server's contract defines it
Familiarity = FamiliarityAnswer  # the `familiarity` of a `/predict` answer


class Backend(Protocol):
    """Where predictions come from: the REST API (`ApiClient`) or a model in this process (`LocalModel`)."""

    description: str

    def predict(self, image_path: str | Path) -> Prediction:
        """Classify one image file; raise `BackendError` with a message for the user on failure."""
        ...

    def drift(self) -> DriftState:
        """The current drift monitor state; raise `BackendError` on failure."""
        ...
