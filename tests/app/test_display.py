"""What the page shows for each drift state, prediction and error."""

from __future__ import annotations

import pytest
from backend import BackendError, DriftState, Prediction
from display import drift_badge, error_message, label_value, latency_text

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
