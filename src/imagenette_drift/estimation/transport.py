"""Accuracy from the shape of a window's predictions: confidence optimal transport and the nuclear norm.

Confidence-based estimators (ATC, AC, DoC) fail when a shift makes the model wrong while it stays confident:
under heavy noise a classifier sends most images to one or two classes, each with high confidence. What it
cannot hide is that the predicted classes no longer match the label distribution. These estimators use it:

- COT, confidence optimal transport (Lu et al., "Characterizing Out-of-Distribution Error via Optimal
  Transport", NeurIPS 2023): the Wasserstein-1 cost of moving the window's softmax rows onto one-hot labels
  drawn from the held-out label distribution, with cost ``0.5 * ||p - e_y||_1 = 1 - p_y``. The cost is the
  estimated error. COTT thresholds each transported pair's cost (as ATC thresholds confidence): the estimated
  error is the transported mass whose cost is above a threshold set on the held-out split.
- Nuclear norm (Deng et al., "Confidence and Dispersity Speak", ICML 2023): ``||P||_* / sqrt(N min(N, C))`` of
  the (N, C) prediction matrix is high when predictions are both confident and spread over the classes.

Pitfall: both read a change of predicted class shares as errors, so a pure label shift (the same images, other
class proportions) lowers them although accuracy is unchanged. Everything is pure torch on float32 softmax rows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "cott_threshold",
    "frechet_distance",
    "nuclear_score",
    "transport_cost",
    "transport_plan",
]


def _check(probs: Tensor, shares: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    if not isinstance(probs, Tensor) or probs.ndim != 2 or probs.shape[0] < 1:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a (N, C) tensor of softmax rows with N >= 1, got {shape}.")
    probs = probs.detach().float().cpu()
    if shares is None:
        return probs, None
    shares = torch.as_tensor(shares, dtype=torch.float32).flatten()
    if (
        shares.shape != (probs.shape[1],)
        or (shares < 0).any()
        or not math.isclose(float(shares.sum()), 1, abs_tol=1e-3)
    ):
        raise ValueError(
            f"class_shares must be {probs.shape[1]} non-negative fractions summing to 1 (one per class), "
            f"got {shares.tolist()}."
        )
    return probs, shares


def transport_plan(
    probs: Tensor,
    class_shares: Tensor,
    epsilon: float = 0.005,
    iterations: int = 300,
    tolerance: float = 1e-4,
) -> Tensor:
    """The optimal transport plan from a window's softmax rows to the classes, cost ``1 - p_ic`` (Lu et al. 2023).

    Entropic OT solved by log-domain Sinkhorn iterations (Cuturi, NeurIPS 2013); with costs in [0, 1] and
    ``epsilon = 0.005`` the plan's cost is within about 0.01 of the exact optimum.

    Args:
        probs: (N, C) float softmax rows; each row carries mass 1 / N.
        class_shares: (C,) the label distribution the rows are moved onto (the held-out class shares).
        epsilon: entropic regularisation, in cost units.
        iterations: most Sinkhorn iterations per step of the epsilon schedule; they stop earlier once the class marginals are within
            `tolerance` (L1) of `class_shares`.

    Returns:
        (N, C) float32 plan whose rows sum to 1 / N and whose columns sum to ``class_shares``.
    """
    probs, shares = _check(probs, class_shares)
    cost = 1.0 - probs
    log_a = torch.full((len(probs),), -math.log(len(probs)))
    log_b = shares.clamp_min(1e-12).log()
    f, g = torch.zeros(len(probs)), torch.zeros(len(shares))
    # Epsilon scaling (Schmitzer, 2019): solve coarser problems first, warm-starting the dual potential g.
    schedule = [e for e in (0.1, 0.03, 0.01) if e > epsilon] + [epsilon]
    for eps in schedule:
        scaled_cost = cost / eps
        for i in range(iterations):
            f = eps * (log_a - torch.logsumexp(g[None, :] / eps - scaled_cost, dim=1))
            log_plan = (f[:, None] + g[None, :]) / eps - scaled_cost
            g = g + eps * (log_b - torch.logsumexp(log_plan, dim=0))
            if i % 5 == 4 and float((log_plan.exp().sum(0) - shares).abs().sum()) < tolerance:
                break
    f = epsilon * (log_a - torch.logsumexp(g[None, :] / epsilon - scaled_cost, dim=1))
    return ((f[:, None] + g[None, :]) / epsilon - scaled_cost).exp()


def transport_cost(probs: Tensor, class_shares: Tensor, threshold: float | None = None) -> float:
    """COT's estimated error of a window: the transport cost (``threshold=None``), or COTT's mass of pairs whose
    cost ``1 - p_ic`` exceeds `threshold`. A fraction in [0, 1]; see `transport_plan` for the arguments."""
    plan = transport_plan(probs, class_shares)
    cost = 1.0 - probs.detach().float().cpu()
    if threshold is None:
        return float((plan * cost).sum())
    return float(plan[cost > threshold].sum())


def cott_threshold(probs: Tensor, class_shares: Tensor, error: float) -> float:
    """COTT's threshold t on a held-out split: the transported mass with cost above t equals its `error`.

    Args:
        probs: (N, C) held-out softmax rows (temperature-scaled, as they will be at estimation time).
        class_shares: (C,) held-out class shares.
        error: held-out top-1 error, a fraction.
    """
    plan = transport_plan(probs, class_shares).flatten()
    cost = (1.0 - probs.detach().float().cpu()).flatten()
    order = cost.argsort(descending=True)
    above = plan[order].cumsum(0)  # mass of the pairs at least as costly
    i = int(torch.searchsorted(above, torch.tensor(error)).clamp(max=len(order) - 1))
    return float(cost[order[i]])


def nuclear_score(probs: Tensor) -> float:
    """``||P||_* / sqrt(N * min(N, C))`` of the (N, C) softmax rows, in [0, 1] (Deng et al., ICML 2023)."""
    probs, _ = _check(probs)
    n, c = probs.shape
    return float(torch.linalg.matrix_norm(probs, ord="nuc") / math.sqrt(n * min(n, c)))


def frechet_distance(x: Tensor, mean: Tensor, cov: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to (N, D) features `x` and a reference (D,) `mean`, (D, D) `cov`:
    ``|mu_x - mean|^2 + tr(S_x + cov - 2 (cov^1/2 S_x cov^1/2)^1/2)`` (the distance of Deng & Zheng, CVPR 2021)."""
    x = x.detach().double()
    mu, centred = x.mean(0), x - x.mean(0)
    s = centred.T @ centred / max(len(x) - 1, 1)
    vals, vecs = torch.linalg.eigh(cov.double())
    root = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root @ s @ root).clamp_min(0).sqrt().sum()
    return float((mu - mean.double()).pow(2).sum() + s.trace() + cov.double().trace() - 2 * cross)
