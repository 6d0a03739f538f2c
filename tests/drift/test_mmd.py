"""MMDDriftDetector: statistic against a direct double loop, exact permutation p-values, null calibration."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
import torch
from scipy import stats

from imagenette_drift.drift import DriftResult, MMDDriftDetector, detector_from_state_dict
from imagenette_drift.drift.functional import mmd2_unbiased, random_groups


def _gaussian(
    n: int, d: int, seed: int, shift: float = 0.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=generator, dtype=torch.float64) + shift).to(dtype)


def _double_loop_mmd2(x: list[list[float]], y: list[list[float]], bandwidth: float) -> float:
    def k(a: list[float], b: list[float]) -> float:
        return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True)) / (2 * bandwidth**2))

    n, m = len(x), len(y)
    k_xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    k_yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    k_xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return k_xx + k_yy - 2 * k_xy


def test_statistic_and_bandwidth_match_direct_computation() -> None:
    reference, x = _gaussian(7, 3, seed=0, dtype=torch.float64), _gaussian(5, 3, seed=1, shift=0.5)
    detector = MMDDriftDetector(reference, n_permutations=20)
    ref_rows = reference.tolist()
    sq_dists = [
        sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) for p, q in itertools.combinations(ref_rows, 2)
    ]
    expected_bandwidth = math.sqrt(statistics.median(sq_dists) / 2)
    assert detector.bandwidth == pytest.approx(expected_bandwidth, rel=1e-12)
    expected = _double_loop_mmd2(ref_rows, x.double().tolist(), expected_bandwidth)
    assert detector.test(x).statistic == pytest.approx(expected, rel=1e-9)


def test_float32_statistic_matches_float64_in_high_dimension() -> None:
    reference, x = _gaussian(300, 512, seed=2), _gaussian(60, 512, seed=3)
    detector = MMDDriftDetector(reference, n_permutations=10)
    expected = mmd2_unbiased(reference.double(), x.double(), detector.bandwidth)
    assert detector.test(x).statistic == pytest.approx(expected, abs=1e-8)


def test_p_value_equals_explicit_permutation_count() -> None:
    reference, x = _gaussian(30, 4, seed=4, dtype=torch.float64), _gaussian(12, 4, seed=5, shift=0.3)
    detector = MMDDriftDetector(reference, n_permutations=199, seed=7)
    result = detector.test(x)
    pooled = torch.cat([reference, x.double()])
    groups = random_groups(42, 12, 199, seed=7, device="cpu").bool()
    permuted = [mmd2_unbiased(pooled[~g], pooled[g], detector.bandwidth) for g in groups]
    n_extreme = sum(s >= result.statistic for s in permuted)
    assert result.p_value == (n_extreme + 1) / 200
    assert result.drift == (result.p_value < 0.05)


def test_p_values_are_uniform_without_drift() -> None:
    p_values = []
    for rep in range(100):
        detector = MMDDriftDetector(_gaussian(40, 5, seed=1000 + rep), n_permutations=99, seed=rep)
        p_values.append(detector.test(_gaussian(20, 5, seed=2000 + rep)).p_value)
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert 0.0 <= np.mean(np.array(p_values) < 0.05) <= 0.12


def test_detects_mean_shift_and_p_value_never_zero() -> None:
    detector = MMDDriftDetector(_gaussian(200, 16, seed=6), n_permutations=100)
    result = detector.test(_gaussian(100, 16, seed=7, shift=1.0))
    assert result == DriftResult(
        statistic=result.statistic, p_value=1 / 101, drift=True, method="mmd", alpha=0.05
    )
    assert result.statistic > 0.1


def test_same_input_gives_same_result_and_numpy_is_accepted() -> None:
    detector = MMDDriftDetector(_gaussian(50, 8, seed=8), n_permutations=50)
    x = _gaussian(20, 8, seed=9)
    assert detector.test(x) == detector.test(x.numpy())


def test_float16_reference_is_kept_and_computed_in_float32() -> None:
    reference = _gaussian(50, 8, seed=10, dtype=torch.float16)
    x = _gaussian(20, 8, seed=11, dtype=torch.float16)
    detector = MMDDriftDetector(reference)
    assert detector.state_dict()["reference"].dtype == torch.float16
    expected = mmd2_unbiased(reference.double(), x.double(), detector.bandwidth)
    assert detector.test(x).statistic == pytest.approx(expected, abs=1e-6)


def test_state_dict_round_trip_through_weights_only_load(tmp_path) -> None:
    detector = MMDDriftDetector(
        _gaussian(60, 8, seed=12, dtype=torch.float16), n_permutations=30, alpha=0.1, seed=3
    )
    torch.save(detector.state_dict(), tmp_path / "mmd.pt")
    state = torch.load(tmp_path / "mmd.pt", weights_only=True)
    for loaded in (MMDDriftDetector.from_state_dict(state), detector_from_state_dict(state)):
        assert isinstance(loaded, MMDDriftDetector)
        for seed in (13, 14):
            x = _gaussian(25, 8, seed=seed, shift=0.2)
            assert loaded.test(x) == detector.test(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reference_runs_on_cuda_and_matches_cpu_statistic() -> None:
    reference, x = _gaussian(200, 32, seed=15), _gaussian(50, 32, seed=16, shift=0.1)
    cpu, cuda = MMDDriftDetector(reference), MMDDriftDetector(reference.cuda())
    assert cuda.device.type == "cuda"
    assert cuda.test(x).statistic == pytest.approx(cpu.test(x).statistic, abs=1e-6)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(8), "must be 2-D"),
        (torch.zeros(5, 3), "has 3 features but the reference has 4"),
        (torch.zeros(1, 4), "at least 2 rows"),
        (torch.tensor([[0.0, 1.0, float("nan"), 0.0]] * 3), "NaN or infinite"),
        ([[0.0] * 4] * 3, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_bad_test_input_is_rejected(x, match: str) -> None:
    detector = MMDDriftDetector(_gaussian(10, 4, seed=17))
    with pytest.raises((ValueError, TypeError), match=match):
        detector.test(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, "`alpha` must be a float in \\(0, 1\\)"),
        ({"n_permutations": 0}, "`n_permutations` must be an integer >= 1"),
        ({"bandwidth": -1.0}, "`bandwidth` must be a positive float"),
    ],
)
def test_bad_constructor_arguments_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MMDDriftDetector(_gaussian(10, 4, seed=18), **kwargs)


def test_constant_reference_asks_for_explicit_bandwidth() -> None:
    with pytest.raises(ValueError, match="pass `bandwidth` explicitly"):
        MMDDriftDetector(torch.ones(10, 4))


def test_state_dict_of_another_class_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"format 'imagenette_drift\.KSDriftDetector'"):
        MMDDriftDetector.from_state_dict({"format": "imagenette_drift.KSDriftDetector"})
