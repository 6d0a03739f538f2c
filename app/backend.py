"""What the app shows, whoever computes it: a prediction, the drift monitor's state, and friendly errors.

Plain Python only (no torch, no requests), so the REST client and the in-process model share these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


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
    """

    label: str
    confidence: float
    top_k: tuple[tuple[str, float], ...]
    round_trip_ms: float
    model_ms: float | None = None


@dataclass(frozen=True)
class DriftState:
    """The server's online drift monitor, as `GET /drift` reports it.

    Attributes:
        enabled: False when the checkpoint carries no online reference (see `reason`).
        images_seen: Images the monitor has seen since the server started.
        window_size: Images per sliding window (None when disabled).
        window_filled: Whether a full window exists yet; before that there is no statistic.
        statistic: MMD^2 of the latest window against the training reference.
        threshold: The calibrated threshold it was compared with.
        drifting: Whether the latest window is over its threshold.
        drifting_since: Image index where the current drifting run began.
        reason: Why monitoring is disabled.
    """

    enabled: bool
    images_seen: int
    window_size: int | None
    window_filled: bool
    statistic: float | None
    threshold: float | None
    drifting: bool
    drifting_since: int | None
    reason: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> DriftState:
        """Parse a `GET /drift` body; a malformed one raises `BackendError` naming what is missing."""
        required = ("enabled", "images_seen", "window_filled", "drifting")
        if not isinstance(data, dict) or any(key not in data for key in required):
            raise BackendError(
                "Unexpected drift status",
                f"expected a JSON object with {', '.join(required)}, got {str(data)[:200]!r}. "
                "Is API_URL pointing at an imagenette-drift server?",
            )
        return cls(
            enabled=bool(data["enabled"]),
            images_seen=int(data["images_seen"]),
            window_size=data.get("window_size"),
            window_filled=bool(data["window_filled"]),
            statistic=data.get("statistic"),
            threshold=data.get("threshold"),
            drifting=bool(data["drifting"]),
            drifting_since=data.get("drifting_since"),
            reason=data.get("reason"),
        )


class Backend(Protocol):
    """Where predictions come from: the REST API (`ApiClient`) or a model in this process (`LocalModel`)."""

    description: str

    def predict(self, image_path: str | Path) -> Prediction:
        """Classify one image file; raise `BackendError` with a message for the user on failure."""
        ...

    def drift(self) -> DriftState:
        """The current drift monitor state; raise `BackendError` on failure."""
        ...
