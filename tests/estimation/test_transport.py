"""Transport-based estimation (COT, COTT), the nuclear score and the Fréchet distance, against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from imagenette_drift.estimation import (
    EstimationReference,
    cott_threshold,
    frechet_distance,
    nuclear_score,
    transport_cost,
    transport_plan,
)
from tests._estimates import exact_transport_cost


def _rows(n: int, classes: int, scale: float, seed: int) -> torch.Tensor:
    return (torch.randn(n, classes, generator=torch.Generator().manual_seed(seed)) * scale).softmax(1)


def test_plan_has_the_marginals_and_the_cost_of_the_exact_optimum() -> None:
    probs = _rows(40, 5, 2.0, seed=0)
    shares = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15])
    plan = transport_plan(probs, shares)
    torch.testing.assert_close(plan.sum(1), torch.full((40,), 1 / 40), atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(0), shares, atol=1e-4, rtol=0)
    assert transport_cost(probs, shares) == pytest.approx(exact_transport_cost(probs, shares), abs=0.01)


def test_a_confident_collapse_onto_one_class_costs_all_other_classes() -> None:
    """Every image confidently called class 0: COT's accuracy is class 0's share, whatever the confidence says."""
    probs = torch.zeros(200, 10)
    probs[:, 0] = 1.0
    shares = torch.full((10,), 0.1)
    assert 1 - transport_cost(probs, shares) == pytest.approx(0.1, abs=0.01)
    reference = EstimationReference(1.0, 0.5, -1.0, 0.9, 0.9, 1000, tuple(shares.tolist()), 0.5, 0.1, 0.9)
    estimates = reference.estimate(probs)
    assert estimates["atc_mc"].estimate == pytest.approx(1.0)  # confidence is fooled
    assert estimates["cot"].estimate == pytest.approx(0.1, abs=0.01)
    assert estimates["cott"].estimate == pytest.approx(0.1, abs=0.01)


def test_cott_threshold_reproduces_the_heldout_error() -> None:
    probs = _rows(500, 10, 3.0, seed=1)
    shares = torch.full((10,), 0.1)
    t = cott_threshold(probs, shares, error=0.2)
    assert transport_cost(probs, shares, threshold=t) == pytest.approx(0.2, abs=0.01)


def test_nuclear_score_of_spread_and_collapsed_one_hot_rows() -> None:
    spread = torch.eye(10).repeat(30, 1)  # 300 confident rows, 30 per class
    collapsed = torch.zeros(300, 10)
    collapsed[:, 3] = 1.0
    assert nuclear_score(spread) == pytest.approx(1.0)
    assert nuclear_score(collapsed) == pytest.approx(1 / math.sqrt(10))


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 6, generator=g) * 1.5 + 0.5
    ref = torch.randn(400, 6, generator=g)
    mean, cov = ref.mean(0), torch.cov(ref.T)
    s = np.cov(x.double().numpy().T)
    expected = ((x.double().mean(0) - mean.double()) ** 2).sum().item() + np.trace(
        s + cov.double().numpy() - 2 * linalg.sqrtm(s @ cov.double().numpy()).real
    )
    assert frechet_distance(x, mean, cov) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("shares", "match"),
    [
        ([0.5, 0.5], "one per class"),
        ([0.2] * 4 + [0.3] * 2, "summing to 1"),
        ([-0.1, 1.1, 0, 0, 0, 0], "non-negative"),
    ],
)
def test_bad_class_shares_are_rejected(shares, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        transport_plan(_rows(5, 6, 1.0, seed=3), torch.tensor(shares))
