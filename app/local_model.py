"""In-process backend (`APP_CHECKPOINT`): the checkpoint's model and online drift monitor in the app itself.

For a Space without a REST server. Imports torch and imagenette_drift, so the app imports this module only
when `APP_CHECKPOINT` is set; API mode stays torch-free.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from backend import BackendError, DriftState, Prediction

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.data.images import read_image
from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.drift.live import LiveWindow
from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.familiarity.reference import FamiliarityReference
from imagenette_drift.serve_contract import FamiliarityAnswer, PredictionAnswer


class LocalModel:
    """Classify with the checkpoint's network and feed its online drift monitor, as the server does.

    The monitor is the one the checkpoint's drift reference carries (None without one: drift shows "off");
    accuracy estimates, the harm alert and the explanation of a drifting window come from the server's own
    `LiveWindow`, so the drift view reads the same fields as from `GET /drift`.
    Prediction and the monitor update run under one lock: the monitor is not thread-safe and gradio calls
    handlers from worker threads.
    """

    def __init__(self, checkpoint: str | Path, threads: int | None = None) -> None:
        """Load the model; errors say what is wrong with the file.

        Args:
            checkpoint: A `.ckpt` written by `imagenette fit` (the ``APP_CHECKPOINT`` setting).
            threads: torch CPU threads; None keeps torch's default.
        """
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = load_for_inference(checkpoint)
        self.description = f"in-process model from {Path(checkpoint).name}"
        drift = self.model.card.drift
        self._monitor = None if drift is None else DriftReference.from_state_dict(drift).online
        familiarity = self.model.card.familiarity
        self._familiarity = None if familiarity is None else FamiliarityReference.from_state_dict(familiarity)
        card = self.model.card
        self._live = LiveWindow(card) if card.estimation or card.explanation else None
        self._lock = threading.Lock()
        self._images_seen = 0

    def predict(self, image_path: str | Path) -> Prediction:
        """Decode, apply the eval transform, predict, and update the drift monitor with the embedding."""
        start = time.perf_counter()
        try:
            image = read_image(image_path)
        except RuntimeError as e:
            raise BackendError("Cannot read this image", f"{e.__cause__ or e}. Try a JPEG or PNG.") from e
        batch = self.model.transform(image)[None]
        with self._lock:
            model_start = time.perf_counter()
            features, probs = self.model.embed_and_predict(batch)
            model_ms = (time.perf_counter() - model_start) * 1000.0
            if self._monitor is not None:
                self._monitor.update(features.float())
            if self._live is not None:
                stats = image_statistics(batch).numpy() if self._live.wants_image_stats else None
                self._live.add(probs.float().numpy(), features.float().numpy(), stats)
            self._images_seen += 1
        card = self.model.card
        answer = PredictionAnswer.from_probs(probs[0].tolist(), card.class_names, card.wnids)
        return Prediction(
            label=answer.label,
            confidence=answer.confidence,
            top_k=tuple((c.label, c.probability) for c in answer.top_k),
            round_trip_ms=(time.perf_counter() - start) * 1000.0,
            model_ms=model_ms,
            familiarity=None
            if self._familiarity is None
            else FamiliarityAnswer(**self._familiarity.score_json(features)[0]),
        )

    def drift(self) -> DriftState:
        """The monitor's state, as `GET /drift` answers it."""
        with self._lock:
            if self._monitor is None:
                state = DriftState.disabled(
                    "the checkpoint carries no online drift reference", images_seen=self._images_seen
                )
                return state.model_copy(update=self._window_fields(drifting=False))
            online = self._monitor.status.to_dict()
            return DriftState(
                enabled=True,
                window_size=self._monitor.window_size,
                **online,
                **self._window_fields(bool(online["drifting"])),
            )

    def _window_fields(self, drifting: bool) -> dict:
        """Accuracy estimates, harm and (drifting) the explanation of the latest window, as `/drift` has them."""
        return {} if self._live is None else self._live.answer(drifting)
