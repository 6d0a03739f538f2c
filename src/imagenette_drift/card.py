"""The model card: what a checkpoint carries besides weights, as plain data a weights-only load can read."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

CHECKPOINT_KEY = "imagenette_drift"
FORMAT_VERSION = 1
# Card fields the DriftCallback writes (plain dicts of tensors and numbers), kept by the module's own save hook.
CALLBACK_FIELDS = ("drift", "estimation", "familiarity", "explanation")


@dataclass(frozen=True)
class ModelCard:
    """Everything besides weights that serving and monitoring need, as stored in the checkpoint."""

    model_name: str
    class_names: tuple[str, ...]
    wnids: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    tta_flip: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    drift: dict[str, Any] | None = None
    estimation: dict[str, Any] | None = None
    familiarity: dict[str, Any] | None = None
    explanation: dict[str, Any] | None = None
    training: dict[str, Any] | None = (
        None  # how it was trained: {"precision": "32-true", "reason": "auto: ..."}
    )
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples) that `torch.load(weights_only=True)` reads back."""
        return {
            "format_version": self.format_version,
            "model_name": self.model_name,
            "class_names": list(self.class_names),
            "wnids": list(self.wnids),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "timm_kwargs": dict(self.timm_kwargs),
            "tta_flip": self.tta_flip,
            "metrics": dict(self.metrics),
            "drift": self.drift,
            "estimation": self.estimation,
            "familiarity": self.familiarity,
            "explanation": self.explanation,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"Checkpoint format version {version} is not supported (this version reads {FORMAT_VERSION}); "
                "retrain or upgrade imagenette-drift."
            )
        return cls(
            model_name=data["model_name"],
            class_names=tuple(data["class_names"]),
            wnids=tuple(data["wnids"]),
            image_size=int(data["image_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            timm_kwargs=dict(data.get("timm_kwargs") or {}),
            tta_flip=bool(data.get("tta_flip", False)),
            metrics=dict(data.get("metrics") or {}),
            drift=data.get("drift"),
            estimation=data.get("estimation"),
            familiarity=data.get("familiarity"),
            explanation=data.get("explanation"),
            training=data.get("training"),
        )


def check_field_version(state: dict[str, Any], field_name: str, supported: Collection[int]) -> int:
    """The `version` of a card field's state (`drift`, `estimation`, ...), checked against what this code reads.

    Raises:
        ValueError: a version outside `supported`, naming the field and the fix (retrain to store a current one).
    """
    version = state.get("version")
    if version not in supported:
        expected = ", ".join(map(str, sorted(supported)))
        raise ValueError(
            f"{field_name} reference version {version} is not supported (expected {expected}); retrain to store "
            "a current one."
        )
    return version
