"""`APP_CHECKPOINT` mode: the checkpoint runs inside the app, with its own drift monitor, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from backend import DriftState
from display import drift_badge
from gradio_client import Client, handle_file

from app import EXAMPLES_DIR, create_backend, parse_config
from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.data import read_image
from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.estimation.reference import EstimationReference
from imagenette_drift.familiarity.reference import FamiliarityReference
from tests.app.conftest import launched

pytestmark = pytest.mark.slow  # needs the session's trained checkpoint

IMAGES = [EXAMPLES_DIR / "church.jpg", EXAMPLES_DIR / "parachute-defocus_blur-5.jpg"]


def test_in_process_predictions_and_drift_equal_a_direct_computation(trained_checkpoint: Path) -> None:
    backend = create_backend(parse_config([], {"APP_CHECKPOINT": str(trained_checkpoint)}))
    model = load_for_inference(trained_checkpoint)
    monitor = DriftReference.from_state_dict(model.card.drift).online
    familiarity_reference = FamiliarityReference.from_state_dict(model.card.familiarity)
    estimation = EstimationReference.from_state_dict(model.card.estimation)
    images = [IMAGES[i % 2] for i in range(monitor.window_size + 1)]
    seen_probs = []
    with launched(backend) as url:
        client = Client(url, verbose=False)
        for image in images:
            label, latency, badge, message, familiarity = client.predict(
                handle_file(str(image)), api_name="/classify"
            )
            features, probs = model.embed_and_predict(model.transform(read_image(image))[None])
            status = monitor.update(features.float())
            seen_probs.append(probs)
            top = probs[0].topk(5)
            expected = [
                (model.card.class_names[i], p)
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
            assert label["label"] == expected[0][0] and message == ""
            assert [(c["label"], c["confidence"]) for c in label["confidences"]] == [
                (name, pytest.approx(p, abs=1e-5)) for name, p in expected
            ]
            assert latency.startswith("Latency: ") and "ms in the model" in latency
            expected_familiarity = familiarity_reference.score_json(features)[0]
            assert f"k-NN distance {expected_familiarity['knn_distance']:.3f}" in familiarity
    # Label-free estimates over the latest images (fewer than the reference's window of 20: all of them).
    estimates = estimation.estimate(torch.cat(seen_probs))
    state = DriftState(
        enabled=True,
        window_size=monitor.window_size,
        **status.to_dict(),
        accuracy={m: e.to_dict() for m, e in estimates.items()},
        heldout_accuracy=estimation.heldout_accuracy,
        estimate_method=estimation.primary,  # the card's primary estimate, as the app shows it
        estimate_note=estimation.note,
        harm=False,  # no full window of 20 yet
        explanation=backend.drift().explanation,  # checked against a server in test_app_explanation.py
    )
    assert state.images_seen == len(images)
    assert (state.explanation is not None) == state.drifting
    assert status.window_filled and badge == drift_badge(state)
