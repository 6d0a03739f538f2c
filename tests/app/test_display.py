"""What the page shows for each drift state, prediction and error."""

from __future__ import annotations

import pytest
from backend import BackendError, DriftState, Prediction
from display import drift_badge, error_message, familiarity_text, label_value, latency_text

FILLED = dict(enabled=True, images_seen=250, window_size=200, window_filled=True, threshold=0.0045)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            DriftState(**FILLED, statistic=0.0012, drifting=False, drifting_since=None),
            '<div class="badge ok" data-state="ok">Drift: OK'
            "<small>statistic 0.0012 &lt;= threshold 0.0045; 250 images seen</small></div>",
        ),
        (
            DriftState(**FILLED, statistic=0.0123, drifting=True, drifting_since=240),
            '<div class="badge drifting" data-state="drifting">DRIFTING since image 240'
            "<small>statistic 0.0123 &gt; threshold 0.0045; 250 images seen</small></div>",
        ),
        (
            DriftState(
                enabled=True,
                images_seen=12,
                window_size=200,
                window_filled=False,
                statistic=None,
                threshold=None,
                drifting=False,
                drifting_since=None,
            ),
            '<div class="badge warming_up" data-state="warming_up">Drift: collecting images'
            "<small>12 of 200 images needed for the first window</small></div>",
        ),
        (
            DriftState.disabled("no <reference> in checkpoint", images_seen=3),
            '<div class="badge off" data-state="off">Drift monitoring off'
            "<small>no &lt;reference&gt; in checkpoint</small></div>",
        ),
    ],
    ids=["ok", "drifting", "warming-up", "off"],
)
def test_the_drift_badge_says_the_state_with_statistic_and_threshold(
    state: DriftState, expected: str
) -> None:
    assert drift_badge(state) == expected


def test_the_label_latency_and_error_texts() -> None:
    prediction = Prediction(
        "church", 0.6, (("church", 0.6), ("tench", 0.3)), round_trip_ms=41.6, model_ms=9.04
    )
    assert label_value(prediction) == {"church": 0.6, "tench": 0.3}
    assert latency_text(prediction) == "Latency: 42 ms round trip (9.0 ms in the model)"
    assert latency_text(Prediction("church", 0.6, (), 41.6)) == "Latency: 42 ms round trip"
    error = BackendError("Cannot reach the model API", "no connection to http://x.")
    assert error_message(error) == "**Cannot reach the model API.** no connection to http://x."


def test_familiarity_text_says_familiar_or_not_with_the_scores() -> None:
    from backend import Familiarity

    seen = Familiarity(knn_distance=0.4123, energy=-7.25, unfamiliar=False)
    assert familiarity_text(Prediction("church", 0.6, (), 41.6, familiarity=seen)) == (
        "Familiar image (k-NN distance 0.412, energy -7.25)"
    )
    odd = familiarity_text(
        Prediction(
            "church", 0.6, (), 41.6, familiarity=Familiarity(knn_distance=1.2, energy=None, unfamiliar=True)
        )
    )
    assert odd.startswith("**Unfamiliar image**") and "k-NN distance 1.200)" in odd
    assert "not available" in familiarity_text(Prediction("church", 0.6, (), 41.6))


def test_the_badge_shows_the_estimated_accuracy_and_harm() -> None:
    from imagenette_drift.serve_contract import AccuracyEstimateAnswer

    estimate = AccuracyEstimateAnswer(method="atc_mc", estimate=0.61, lower=0.55, upper=0.67, n=200)
    state = DriftState(
        **FILLED,
        statistic=0.01,
        drifting=True,
        drifting_since=3,
        accuracy={"atc_mc": estimate, "cot": estimate.model_copy(update={"method": "cot", "estimate": 0.31})},
        estimate_method="cot",
        heldout_accuracy=0.88,
        harm=True,
    )
    badge = drift_badge(state)
    assert "estimated accuracy 31% (held-out 88%): HARM" in badge and 'data-state="drifting"' in badge
    # An older card (no class shares) falls back to ATC-MC, which the badge then shows.
    older = state.model_copy(update={"estimate_method": "atc_mc"})
    assert "estimated accuracy 61% (held-out 88%)" in drift_badge(older)
    assert "estimated accuracy" not in drift_badge(state.model_copy(update={"accuracy": None}))
