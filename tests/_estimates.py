"""Label-free estimates computed directly (scipy's exact transport), to check what the commands report."""

from __future__ import annotations

import numpy as np
import torch
from scipy import optimize


def exact_transport_cost(probs: torch.Tensor, shares: torch.Tensor) -> float:
    """Optimal transport of the rows (1 / N each) onto the classes (`shares`), cost 1 - p_ic, as a linear
    programme (HiGHS): the exact optimum that the estimators' Sinkhorn iterations approximate."""
    n, c = probs.shape
    cost = (1 - probs).double().numpy().ravel()
    rows = np.kron(np.eye(n), np.ones(c))
    cols = np.kron(np.ones(n), np.eye(c))
    b_eq = np.concatenate([np.full(n, 1 / n), np.asarray(shares, dtype=np.float64)])
    return float(optimize.linprog(cost, A_eq=np.vstack([rows, cols]), b_eq=b_eq).fun)


def cot_estimate(probs: torch.Tensor, estimation: dict) -> float:
    """COT's estimated accuracy of served softmax rows with a card's `estimation` state (temperature-scaled)."""
    scaled = (probs.float().clamp_min(1e-30).log() / estimation["temperature"]).softmax(dim=1)
    return 1.0 - exact_transport_cost(scaled, torch.tensor(estimation["class_shares"]))
