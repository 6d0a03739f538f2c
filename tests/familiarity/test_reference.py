"""Per-request familiarity: k-NN distance and energy against a stored bank, thresholds at 95% of held-out."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from imagenette_drift.familiarity.reference import FamiliarityReference, energy_score, knn_distance


def _clusters(n: int, seed: int, first_dim: int = 0) -> torch.Tensor:
    """Ten Gaussian clusters on axes first_dim..first_dim+9 of a 64-d space."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(64)[first_dim : first_dim + 10] * 6.0
    return centres[torch.randint(0, 10, (n,), generator=g)] + torch.randn(n, 64, generator=g)


def _head() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.eye(10, 64) * 2.0, torch.zeros(10)


def test_knn_distance_is_the_kth_neighbour_of_normalised_rows():
    x = torch.randn(7, 5)
    bank = F.normalize(torch.randn(20, 5), dim=1)
    expected = torch.cdist(F.normalize(x, dim=1), bank).sort(dim=1).values[:, 2]
    torch.testing.assert_close(knn_distance(x, bank, k=3), expected, atol=1e-5, rtol=1e-5)
    own = knn_distance(bank, bank, k=1, exclude_self=True)
    torch.testing.assert_close(own, torch.cdist(bank, bank).fill_diagonal_(9).amin(1), atol=1e-5, rtol=1e-5)


def test_energy_is_negative_logsumexp():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    torch.testing.assert_close(energy_score(logits), -torch.logsumexp(logits, dim=1))


def test_thresholds_keep_95_percent_of_new_in_distribution_images_familiar_and_flag_outliers():
    reference = FamiliarityReference.fit(_clusters(1000, 0), *_head(), bank_size=600, k=5)
    assert reference.bank.dtype == torch.float16 and reference.bank.shape == (600, 64)
    inside = reference.score(_clusters(2000, 1))
    assert 0.02 < float(inside["unfamiliar"].float().mean()) < 0.09
    outside = reference.score(_clusters(200, 3, first_dim=30))  # classes the bank has never seen
    assert float(outside["unfamiliar"].float().mean()) > 0.9
    assert float(outside["energy"].mean()) > float(inside["energy"].mean())


def test_rules_and_json_rows():
    reference = FamiliarityReference.fit(_clusters(300, 0), *_head(), rule="either")
    rows = reference.score_json(_clusters(3, 2))
    assert set(rows[0]) == {"knn_distance", "energy", "unfamiliar"} and isinstance(
        rows[0]["unfamiliar"], bool
    )
    no_head = FamiliarityReference.fit(_clusters(300, 0), None, None)
    assert no_head.score_json(_clusters(2, 2))[0]["energy"] is None
    with pytest.raises(ValueError, match="needs the classifier head"):
        FamiliarityReference.fit(_clusters(300, 0), None, None, rule="energy")
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        reference.score(torch.zeros(2, 3))


def test_state_round_trips_through_a_weights_only_load():
    reference = FamiliarityReference.fit(_clusters(300, 0), *_head())
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    buffer.seek(0)
    loaded = FamiliarityReference.from_state_dict(torch.load(buffer, weights_only=True))
    x = _clusters(10, 3)
    torch.testing.assert_close(loaded.score(x)["knn_distance"], reference.score(x)["knn_distance"])
