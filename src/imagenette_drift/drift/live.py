"""The latest window of a live stream (a server, the app): accuracy estimates, harm alert and an explanation.

`LiveWindow` keeps the softmax rows, embeddings and input statistics of the latest `window` images and answers
the label-free fields of `/drift` (`serve_contract.DriftStatus`): estimated accuracy by method, held-out accuracy, the
harm alert over consecutive full, non-overlapping windows, and, while the drift monitor says drifting, the
window's explanation (`assessment.WindowAssessor.explain`). The server's drift hub and the app's in-process
model both use it, so both answer the same.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from imagenette_drift.card import ModelCard
from imagenette_drift.drift.assessment import WindowAssessor
from imagenette_drift.serve_contract import AccuracyEstimateAnswer, DriftExplanation

__all__ = ["LiveWindow"]


class LiveWindow:
    """Label-free accuracy and explanations of the latest `window` images of a stream (not thread-safe).

    Pitfall: corruption signatures need each image's input statistics (`image_statistics` of the model input);
    without them (`stats=None` in `add`), an explanation says "no known signature".
    """

    def __init__(
        self,
        card: ModelCard,
        window: int | None = None,
        harm_drop: float = 5.0,
        harm_windows: int = 2,
    ) -> None:
        """Args:
        card: the checkpoint's model card (its `estimation`, `familiarity`, `explanation` and `drift` fields;
            each one missing only leaves its answers null).
        window: images per window (default: the drift reference's window size, else 200).
        harm_drop, harm_windows: the harm alert fires after `harm_windows` consecutive full windows whose
            estimate (the card's primary method: COT, or ATC-MC on older cards) is more than `harm_drop` points
            below the held-out accuracy.
        """
        self.assessor = WindowAssessor.from_card(card, harm_drop, harm_windows)
        self.window = int(window or (card.drift or {}).get("window_size") or 200)
        self._probs: deque[np.ndarray] = deque(maxlen=self.window)
        self._features: deque[np.ndarray] = deque(maxlen=self.window)
        self._stats: deque[np.ndarray | None] = deque(maxlen=self.window)
        self.n_seen = 0
        self._cached: tuple[int, DriftExplanation | None] | None = None

    @property
    def wants_image_stats(self) -> bool:
        """Whether the card has corruption signatures to match (then feed `add` the input statistics)."""
        return self.assessor.explanation is not None and bool(self.assessor.explanation.signatures)

    def add(self, probs: np.ndarray, features: np.ndarray, stats: np.ndarray | None = None) -> None:
        """Append a batch: (B, C) softmax rows, (B, D) embeddings, (B, 12) input statistics or None."""
        for i in range(len(probs)):
            self._probs.append(np.asarray(probs[i], dtype=np.float32))
            self._features.append(np.asarray(features[i], dtype=np.float32))
            self._stats.append(None if stats is None else np.asarray(stats[i], dtype=np.float32))
            self.n_seen += 1
            harm = self.assessor.harm
            if harm is not None and self.n_seen % self.window == 0:
                estimate = self.assessor.estimation.estimate(self._tensor(self._probs))
                harm.update(estimate[self.assessor.harm_method].estimate)

    @staticmethod
    def _tensor(rows: deque[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(rows))

    def accuracy(self) -> dict[str, Any]:
        """{"accuracy": {method: AccuracyEstimateAnswer} or None, "heldout_accuracy", "harm", "estimate_method",
        "estimate_note"} of the window."""
        estimation = self.assessor.estimation
        if estimation is None:
            return {"accuracy": None, "heldout_accuracy": None, "harm": None}
        method = {"estimate_method": self.assessor.harm_method, "estimate_note": estimation.note}
        if not self._probs:
            return {"accuracy": None, "heldout_accuracy": estimation.heldout_accuracy, "harm": None} | method
        estimates = estimation.estimate(self._tensor(self._probs))
        return {
            "accuracy": {m: AccuracyEstimateAnswer(**e.to_dict()) for m, e in estimates.items()},
            "heldout_accuracy": estimation.heldout_accuracy,
            "harm": self.assessor.harm.alerting,
        } | method

    def explanation(self) -> DriftExplanation | None:
        """The latest window's explanation (None without an explanation reference or before 2 images).

        Witnesses carry `image`, the 1-based number of the image in the stream. Cached until the next `add`.
        """
        if self._cached is not None and self._cached[0] == self.n_seen:
            return self._cached[1]
        answer = None
        if self.assessor.explanation is not None and len(self._probs) >= 2:
            stats = None if any(s is None for s in self._stats) else self._tensor(self._stats)
            raw = self.assessor.explain(self._tensor(self._probs), self._tensor(self._features), stats)
            first = self.n_seen - len(self._probs) + 1
            for witness in raw["witnesses"]:
                witness["image"] = first + witness.pop("index")
            answer = DriftExplanation(**raw)
        self._cached = (self.n_seen, answer)
        return answer

    def answer(self, drifting: bool) -> dict[str, Any]:
        """The `/drift` fields of this window: accuracy, held-out accuracy, harm and (when drifting) explanation."""
        return self.accuracy() | {"explanation": self.explanation() if drifting else None}
