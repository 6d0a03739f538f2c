"""Rebuild any drift detector or monitor from its ``state_dict`` (as stored in a checkpoint)."""

from __future__ import annotations

import torch

from imagenette_drift.drift.mmd import MMDDriftDetector
from imagenette_drift.drift.online import OnlineDriftMonitor
from imagenette_drift.drift.univariate import ChiSquaredDriftDetector, KSDriftDetector

__all__ = ["detector_from_state_dict"]

_Detector = MMDDriftDetector | KSDriftDetector | ChiSquaredDriftDetector | OnlineDriftMonitor
_CLASSES: dict[str, type] = {
    "imagenette_drift.MMDDriftDetector": MMDDriftDetector,
    "imagenette_drift.KSDriftDetector": KSDriftDetector,
    "imagenette_drift.ChiSquaredDriftDetector": ChiSquaredDriftDetector,
    "imagenette_drift.OnlineDriftMonitor": OnlineDriftMonitor,
}


def detector_from_state_dict(state: dict, device: torch.device | str | None = None) -> _Detector:
    """Rebuild the detector that wrote ``state``; ``device`` moves MMD/online references (others stay on CPU)."""
    if not isinstance(state, dict) or state.get("format") not in _CLASSES:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"`state` is not a drift detector state dict (format {found!r}); expected one of {sorted(_CLASSES)}, "
            "as written by a detector's `state_dict()`."
        )
    cls = _CLASSES[state["format"]]
    if cls in (MMDDriftDetector, OnlineDriftMonitor):
        return cls.from_state_dict(state, device=device)
    return cls.from_state_dict(state)
