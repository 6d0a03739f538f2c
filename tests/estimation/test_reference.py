"""Label-free accuracy estimation: temperature scaling, ATC, AC, DoC, intervals and the harm alert."""

from __future__ import annotations

import io
import math

import pytest
import torch

from imagenette_drift.estimation import (
    EstimationReference,
    HarmAlert,
    apply_temperature,
    atc_threshold,
    confidence_scores,
    estimate_accuracy,
    fit_temperature,
)


def _calibrated(n: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is the true label distribution (labels drawn from it): perfectly calibrated."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * scale
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


def test_fit_temperature_recovers_an_overconfident_scale():
    logits, labels = _calibrated(4000, 2.0, seed=0)
    assert fit_temperature(logits * 3.0, labels) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)


def test_apply_temperature_equals_softmax_of_scaled_logits():
    logits, _ = _calibrated(50, 2.0, seed=1)
    torch.testing.assert_close(apply_temperature(logits.softmax(1), 2.5), (logits / 2.5).softmax(1))


def test_atc_threshold_keeps_the_heldout_accuracy_above_it():
    logits, labels = _calibrated(1001, 2.0, seed=2)
    probs = logits.softmax(1)
    correct = probs.argmax(1) == labels
    for score in ("max_confidence", "negative_entropy"):
        scores = confidence_scores(probs, score)
        t = atc_threshold(scores, correct)
        assert float((scores > t).float().mean()) == pytest.approx(float(correct.float().mean()), abs=1e-3)


def test_estimates_match_true_accuracy_on_new_data_from_the_heldout_distribution():
    reference = EstimationReference.fit(*_calibrated(3000, 2.0, seed=3))
    logits, labels = _calibrated(2000, 2.0, seed=11)
    true = float((logits.argmax(1) == labels).float().mean())
    for method, e in reference.estimate(logits.softmax(1)).items():
        assert e.lower <= true <= e.upper, (method, true, e)


def test_confidence_baselines_follow_a_calibrated_shift():
    """With calibration preserved (labels drawn from the softmax), AC and DoC stay right as accuracy moves."""
    reference = EstimationReference.fit(*_calibrated(3000, 2.0, seed=3))
    for scale in (1.0, 4.0):  # harder and easier windows
        logits, labels = _calibrated(2000, scale, seed=10 + int(scale))
        true = float((logits.argmax(1) == labels).float().mean())
        estimates = reference.estimate(logits.softmax(1))
        for method in ("ac", "doc"):
            assert abs(estimates[method].estimate - true) < 0.04, (method, scale, true, estimates[method])


def test_interval_includes_binomial_noise_of_the_window():
    reference = EstimationReference(1.0, 0.6, -1.0, 0.8, 0.8, n_heldout=10**9)
    probs = torch.tensor([[0.9, 0.1]] * 160 + [[0.45, 0.55]] * 40)
    e = reference.estimate(probs)["atc_mc"]
    assert e.estimate == pytest.approx(0.8)
    assert e.upper - e.estimate == pytest.approx(1.96 * math.sqrt(0.8 * 0.2 / 200), rel=1e-3)


def test_state_round_trips_through_a_weights_only_load():
    reference = EstimationReference.fit(*_calibrated(500, 2.0, seed=4))
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    loaded = EstimationReference.from_state_dict(state)
    assert loaded == reference and state["version"] == 3
    assert torch.equal(loaded.heldout_probs, reference.heldout_probs)
    assert torch.equal(loaded.heldout_labels, reference.heldout_labels)
    probs = _calibrated(100, 2.0, seed=5)[0].softmax(1)
    for method in ("atc_mc", "cot_ls"):
        assert (
            estimate_accuracy(state, probs)[method]["estimate"] == reference.estimate(probs)[method].estimate
        )
    with pytest.raises(ValueError, match="version"):
        EstimationReference.from_state_dict({**state, "version": 99})


def test_harm_alert_needs_k_consecutive_windows_below_the_line():
    alert = HarmAlert(0.9, drop_points=5, windows=2)
    assert [alert.update(a) for a in (0.80, 0.88, 0.80, 0.84, 0.70, 0.90)] == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]
    alert.update(0.5)
    assert HarmAlert.from_state_dict(alert.state_dict()).consecutive == 1
    with pytest.raises(ValueError, match="drop_points"):
        HarmAlert(0.9, drop_points=0)


def test_window_estimator_returns_the_chosen_estimate_of_a_numpy_window():
    from imagenette_drift.estimation import window_estimator

    reference = EstimationReference.fit(*_calibrated(500, 2.0, seed=6))
    probs = _calibrated(100, 2.0, seed=7)[0].softmax(1)
    for method in ("atc_mc", "doc"):
        estimator = window_estimator(reference.state_dict(), method)
        assert estimator(probs.numpy(), None) == reference.estimate(probs)[method].estimate
    with pytest.raises(ValueError, match="method must be one of"):
        window_estimator(reference.state_dict(), "oracle")


def _version_1(reference: EstimationReference) -> dict:
    """The `estimation` field as cards written before transport-based estimation stored it."""
    keys = ("temperature", "atc_threshold_mc", "atc_threshold_ne", "heldout_accuracy", "heldout_confidence")
    return {"version": 1, "n_heldout": reference.n_heldout} | {k: getattr(reference, k) for k in keys}


def test_a_version_1_card_loads_and_falls_back_to_atc_mc_with_a_note():
    from imagenette_drift.estimation import shared_method, window_estimator

    reference = EstimationReference.fit(*_calibrated(500, 2.0, seed=8))
    old = EstimationReference.from_state_dict(_version_1(reference))
    assert reference.primary == "cot_ls" and reference.note is None
    assert old.primary == "atc_mc" and "retrain" in old.note
    probs = _calibrated(100, 2.0, seed=9)[0].softmax(1)
    assert set(old.estimate(probs)) == {"atc_mc", "atc_ne", "ac", "doc"}
    assert old.estimate(probs)["atc_mc"] == reference.estimate(probs)["atc_mc"]
    assert window_estimator(_version_1(reference))(probs.numpy()) == old.estimate(probs)["atc_mc"].estimate
    with pytest.raises(ValueError, match="atc_mc, atc_ne, ac, doc for this card"):
        window_estimator(_version_1(reference), "cot")
    # Two models are compared on one estimator: the best both cards can compute.
    assert shared_method(reference.state_dict(), reference.state_dict()) == "cot_ls"
    assert shared_method(reference.state_dict(), _version_2(reference)) == "cot"
    assert shared_method(reference.state_dict(), _version_1(reference)) == "atc_mc"
    assert shared_method(None, reference.state_dict()) == "cot_ls"
    version_2 = EstimationReference.from_state_dict(_version_2(reference))
    assert version_2.primary == "cot" and "cot_ls" not in version_2.estimate(probs)
    assert version_2.estimate(probs)["cot"] == reference.estimate(probs)["cot"]


def _version_2(reference: EstimationReference) -> dict:
    """The `estimation` field as cards written before `cot_ls` stored it (no held-out rows)."""
    state = reference.state_dict()
    for key in ("heldout_probs", "heldout_labels", "label_shift_thresholds"):
        state.pop(key)
    return state | {"version": 2}


def _label_shifted(logits: torch.Tensor, labels: torch.Tensor, shares: list[float], n: int, seed: int):
    """`n` rows drawn (with replacement) class by class in the given shares: p(x | y) unchanged."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.multinomial(torch.tensor(shares), n, replacement=True, generator=g).bincount(minlength=10)
    idx = torch.cat(
        [
            torch.nonzero(labels == c).flatten()[
                torch.randint(0, int((labels == c).sum()), (int(k),), generator=g)
            ]
            for c, k in enumerate(counts)
            if k
        ]
    )
    return logits[idx], labels[idx]


def test_cot_ls_reads_a_pure_label_shift_as_one_and_a_collapse_as_cot_does():
    """Three classes make up 90% of a window of new images from the held-out distribution: accuracy is what
    those classes score, COT reads the missing classes as errors, `cot_ls` recognises the label shift. A window
    collapsed onto one class with full confidence is no label shift: `cot_ls` keeps COT's reading."""
    reference = EstimationReference.fit(*_calibrated(3000, 5.0, seed=3))
    logits, labels = _label_shifted(*_calibrated(6000, 5.0, seed=21), [0.3, 0.3, 0.3] + [0.1 / 7] * 7, 500, 5)
    true = float((logits.argmax(1) == labels).float().mean())
    shares, statistic, pure = reference.label_shift(
        apply_temperature(logits.softmax(1), reference.temperature)
    )
    assert pure and shares[:3].sum() > 0.8, (shares, statistic)
    estimates = reference.estimate(logits.softmax(1))
    error = abs(estimates["cot_ls"].estimate - true)
    assert error < 0.06 and abs(estimates["cot"].estimate - true) > 3 * error + 0.05, (true, estimates)
    collapsed = torch.full((200, 10), 1e-4)
    collapsed[:, 2] = 1.0
    collapsed = collapsed / collapsed.sum(1, keepdim=True)
    assert not reference.label_shift(apply_temperature(collapsed, reference.temperature))[2]
    assert reference.estimate(collapsed)["cot_ls"].estimate == reference.estimate(collapsed)["cot"].estimate


def test_cot_holds_on_a_calibrated_window_and_its_interval_widens_with_the_drop():
    reference = EstimationReference.fit(*_calibrated(3000, 2.0, seed=3))
    logits, labels = _calibrated(2000, 2.0, seed=12)
    true = float((logits.argmax(1) == labels).float().mean())
    estimates = reference.estimate(logits.softmax(1))
    for method in ("cot", "cott", "nuclear"):
        assert abs(estimates[method].estimate - true) < 0.04, (method, true, estimates[method])
    collapsed = torch.zeros(200, 10)
    collapsed[:, 2] = 1.0
    cot = reference.estimate(collapsed)["cot"]
    assert cot.estimate == pytest.approx(reference.class_shares[2], abs=0.01)
    binomial = 1.96 * math.sqrt(cot.estimate * (1 - cot.estimate) / 200)
    assert cot.upper - cot.estimate > binomial + 0.05  # the bias allowance of a large estimated drop


def test_a_heldout_split_missing_a_class_gets_cot_without_the_label_shift_test():
    logits, labels = _calibrated(500, 2.0, seed=13)
    keep = labels != 4  # no held-out image of class 4
    reference = EstimationReference.fit(logits[keep], labels[keep])
    assert not reference.has_label_shift and reference.primary == "cot"
    assert "cot_ls" not in reference.estimate(logits.softmax(1)) and reference.state_dict()["version"] == 2
