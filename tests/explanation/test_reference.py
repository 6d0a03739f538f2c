"""Explanations: chi-squared residuals, BBSE shares, signature matching and MMD witness images."""

from __future__ import annotations

import pytest
import torch

from imagenette_drift.drift.functional import median_heuristic_bandwidth
from imagenette_drift.explanation.reference import (
    ExplanationReference,
    bbse_shares,
    class_shift,
    match_signatures,
    witness_images,
)


def test_bbse_inverts_the_confusion_matrix():
    confusion = torch.tensor([[80, 10, 5], [15, 85, 5], [5, 5, 90]])
    true_shares = torch.tensor([0.6, 0.3, 0.1])
    conditional = confusion.double() / confusion.sum(0, keepdim=True)
    predicted = (conditional @ true_shares.double()).float()
    torch.testing.assert_close(bbse_shares(predicted, confusion), true_shares, atol=1e-5, rtol=0)


def test_class_shift_residuals_match_pearson():
    predicted = torch.tensor([0] * 30 + [1] * 10)
    rows = class_shift(predicted, torch.tensor([0.5, 0.5]))
    assert rows[0]["share"] == 0.75 and rows[0]["reference_share"] == 0.5
    assert rows[0]["residual"] == pytest.approx((30 - 20) / 20**0.5)
    assert rows[1]["residual"] == pytest.approx((10 - 20) / 20**0.5)
    assert rows[0]["bbse_share"] is None


def test_class_shift_residuals_with_a_confusion_matrix_are_the_homogeneity_tables():
    """With the held-out counts the residuals are those of the label-shift test's 2 x C table (scipy's expected
    counts), finite for a class the held-out split never predicted."""
    from scipy.stats.contingency import expected_freq

    confusion = torch.tensor([[40, 5, 0], [10, 45, 0], [0, 0, 0]])  # class 2 never predicted on held-out
    predicted = torch.tensor([0] * 10 + [1] * 20 + [2] * 10)
    rows = class_shift(predicted, confusion.sum(1).float() / confusion.sum(), confusion)
    table = [confusion.sum(1).tolist(), [10, 20, 10]]
    expected = expected_freq(table)[1]
    for c, row in enumerate(rows):
        assert row["residual"] == pytest.approx((table[1][c] - expected[c]) / expected[c] ** 0.5)
    assert 0 < rows[2]["residual"] < 10 and rows[2]["reference_share"] == 0.0


def test_signatures_rank_the_matching_direction_first():
    signatures = {
        "a": {"stats": torch.tensor([1.0, 0.0]), "emb": torch.tensor([1.0, 0.0, 0.0])},
        "b": {"stats": torch.tensor([0.0, 1.0]), "emb": torch.tensor([0.0, 1.0, 0.0])},
        "c": {"stats": torch.tensor([-1.0, 0.0]), "emb": torch.tensor([0.0, 0.0, 1.0])},
    }
    top = match_signatures((torch.tensor([0.1, 2.0]), torch.tensor([0.0, 3.0, 0.1])), signatures, top=2)
    assert [m["corruption"] for m in top] == ["b", "a"] and top[0]["similarity"] > 0.9


def test_witness_picks_the_shifted_rows():
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(200, 8, generator=g)
    window = torch.randn(50, 8, generator=g)
    shifted = torch.arange(10, 25)
    window[shifted] += 1.5  # a 30% share of the window moved away together
    top = witness_images(window, reference, bandwidth=median_heuristic_bandwidth(reference), top=5)
    assert all(10 <= t["index"] < 25 for t in top), top
    assert all(0 <= t["nearest_reference"] < 200 for t in top)


def test_reference_fit_counts_the_confusion_and_says_nothing_without_signatures():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1, 1])
    reference = ExplanationReference.fit(probs, labels, torch.rand(4, 12), torch.rand(4, 6))
    assert reference.confusion.tolist() == [[1, 1], [0, 2]]
    out = reference.explain(probs, torch.rand(4, 12), torch.rand(4, 6))
    assert out["signatures"] == [] and out["known_signature"] is False
    assert len(out["classes"]) == 2
