"""KSDriftDetector and ChiSquaredDriftDetector against scipy.stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from imagenette_drift.drift import ChiSquaredDriftDetector, KSDriftDetector, detector_from_state_dict


def _softmax(n: int, num_classes: int = 10, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(n, num_classes)) / temperature
    return torch.softmax(torch.from_numpy(logits), dim=1).float()


def test_ks_per_class_matches_scipy_asymptotic() -> None:
    reference, window = _softmax(300, seed=1), _softmax(100, seed=2, temperature=0.8)
    statistics, p_values = KSDriftDetector(reference).per_class(window)
    for c in range(10):
        expected = stats.ks_2samp(reference[:, c].numpy(), window[:, c].numpy(), method="asymp")
        assert statistics[c].item() == expected.statistic
        assert p_values[c].item() == pytest.approx(expected.pvalue, rel=1e-12)
        exact = stats.ks_2samp(reference[:, c].numpy(), window[:, c].numpy(), method="exact")
        assert p_values[c].item() == pytest.approx(exact.pvalue, abs=0.03)


def test_ks_result_is_max_statistic_with_bonferroni_p_value() -> None:
    reference, window = _softmax(200, seed=3), _softmax(80, seed=4, temperature=0.7)
    result = KSDriftDetector(reference, alpha=0.01).test(window)
    scipy_results = [stats.ks_2samp(reference[:, c], window[:, c], method="asymp") for c in range(10)]
    assert result.statistic == max(r.statistic for r in scipy_results)
    assert result.p_value == pytest.approx(min(1.0, 10 * min(r.pvalue for r in scipy_results)), rel=1e-12)
    assert result.drift == (result.p_value < 0.01)
    assert result.method == "ks_bonferroni"


def test_ks_no_drift_on_same_distribution_and_drift_on_sharper_softmax() -> None:
    detector = KSDriftDetector(_softmax(500, seed=5))
    assert not detector.test(_softmax(200, seed=6)).drift
    shifted = detector.test(_softmax(200, seed=7, temperature=0.4))
    assert shifted.drift
    assert shifted.p_value > 0.0


def test_chi2_matches_scipy_chi2_contingency_on_the_two_sample_table() -> None:
    reference_labels = torch.tensor([0] * 250 + [1] * 150 + [2] * 100)
    window = torch.tensor([0] * 30 + [1] * 40 + [2] * 30)
    result = ChiSquaredDriftDetector(reference_labels, num_classes=3).test(window)
    expected = stats.chi2_contingency([[250, 150, 100], [30, 40, 30]], correction=False)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert result.drift
    assert result.method == "chi2"


def test_chi2_drops_classes_seen_in_neither_sample() -> None:
    reference_labels = torch.tensor([0] * 200 + [1] * 120 + [2] * 80)
    window = torch.tensor([0] * 40 + [1] * 40 + [2] * 20)
    result = ChiSquaredDriftDetector(reference_labels, num_classes=10).test(window)
    expected = stats.chi2_contingency([[200, 120, 80], [40, 40, 20]], correction=False)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)  # 2 degrees of freedom, not 9


def test_chi2_small_window_gets_the_exact_conditional_p_value() -> None:
    # Expected window counts of 1-2 per class: the chi-squared tail is unreliable, so the detector uses a
    # Monte Carlo exact test. Check it against an independent permutation test of the pooled labels.
    rng = np.random.default_rng(0)
    reference = rng.choice(5, size=300, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    window = np.array([0, 0, 1, 2, 3, 3, 3, 3, 4, 4, 4, 4])
    result = ChiSquaredDriftDetector(torch.from_numpy(reference), num_classes=5, n_resamples=4000).test(
        window
    )

    def pearson(ref_labels: np.ndarray, win_labels: np.ndarray) -> float:
        table = np.stack([np.bincount(ref_labels, minlength=5), np.bincount(win_labels, minlength=5)])
        return stats.chi2_contingency(table, correction=False).statistic

    pooled, observed = np.concatenate([reference, window]), pearson(reference, window)
    permuted = [rng.permutation(pooled) for _ in range(4000)]
    p_permutation = np.mean([pearson(p[: len(reference)], p[len(reference) :]) >= observed for p in permuted])
    assert result.statistic == pytest.approx(observed, rel=1e-12)
    assert result.p_value == pytest.approx(p_permutation, abs=0.02)
    assert 0.0 < result.p_value < 0.05  # the rare classes 3 and 4 are over-represented
    assert ChiSquaredDriftDetector(torch.from_numpy(reference), 5, n_resamples=4000).test(window) == result


def test_chi2_accepts_scores_as_argmax_labels() -> None:
    reference, window = _softmax(300, seed=8), _softmax(60, seed=9)
    from_scores = ChiSquaredDriftDetector(reference, num_classes=10).test(window)
    from_labels = ChiSquaredDriftDetector(reference.argmax(dim=1), num_classes=10).test(
        window.argmax(dim=1).numpy()
    )
    assert from_scores == from_labels
    assert not from_scores.drift


def test_chi2_class_missing_from_reference_is_detected() -> None:
    detector = ChiSquaredDriftDetector(torch.tensor([0, 1, 2] * 100), num_classes=4)
    assert detector.reference_proportions.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
    result = detector.test(torch.tensor([0, 1, 2, 3] * 10))
    assert np.isfinite(result.statistic)
    assert result.drift


def test_chi2_state_dict_of_version_1_still_loads() -> None:
    # Checkpoints written before the two-sample test store the same counts, without the resampling keys.
    reference = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    old = {
        "format": "imagenette_drift.ChiSquaredDriftDetector",
        "version": 1,
        "num_classes": 3,
        "alpha": 0.05,
    }
    loaded = ChiSquaredDriftDetector.from_state_dict({**old, "reference_counts": torch.tensor([60, 30, 10])})
    window = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)
    assert loaded.test(window) == ChiSquaredDriftDetector(reference, num_classes=3).test(window)
    with pytest.raises(ValueError, match="must have shape \\(3,\\)"):
        ChiSquaredDriftDetector.from_state_dict({**old, "reference_counts": torch.tensor([0.6, 0.4])})


@pytest.mark.parametrize(
    ("window", "match"),
    [
        (torch.tensor([0, 1, 4]), "labels must lie in \\[0, 3\\]"),
        (torch.tensor([0.0, 1.0]), "integer labels of shape \\(n,\\) or scores of shape \\(n, 4\\)"),
        (torch.zeros(3, 5), "has 5 features but the reference has 4"),
    ],
)
def test_chi2_bad_window_is_rejected(window: torch.Tensor, match: str) -> None:
    detector = ChiSquaredDriftDetector(torch.tensor([0, 1, 2, 3]), num_classes=4)
    with pytest.raises(ValueError, match=match):
        detector.test(window)


def test_ks_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="`alpha` must be a float in"):
        KSDriftDetector(_softmax(10), alpha=0.0)
    with pytest.raises(ValueError, match="has 3 features but the reference has 10"):
        KSDriftDetector(_softmax(10)).test(torch.rand(4, 3))


def test_state_dict_round_trips_through_weights_only_load(tmp_path) -> None:
    reference, window = _softmax(200, seed=10), _softmax(50, seed=11, temperature=0.9)
    detectors = [
        KSDriftDetector(reference.half(), alpha=0.1),
        ChiSquaredDriftDetector(reference, 10, alpha=0.2),
    ]
    for detector in detectors:
        torch.save(detector.state_dict(), tmp_path / "state.pt")
        state = torch.load(tmp_path / "state.pt", weights_only=True)
        for loaded in (type(detector).from_state_dict(state), detector_from_state_dict(state)):
            assert type(loaded) is type(detector)
            assert loaded.test(window) == detector.test(window)
