"""Telling a pure label shift from a model that breaks, from a window's softmax rows alone.

COT reads any change of predicted class shares as errors, so a window whose classes merely come in other
proportions (a label shift: the same kind of images, p(x | y) unchanged) looks like a collapse. Two pieces
separate them:

- BBSE (Lipton et al., "Detecting and Correcting for Label Shift with Black Box Predictors", ICML 2018), the
  soft variant: the window's mean softmax row is the held-out soft confusion matrix times the window's class
  shares; solved for the shares on the simplex (non-negative least squares).
- A weighted MMD (Gretton et al., JMLR 2012; Zhang et al., "Domain Adaptation under Target and Conditional
  Shift", ICML 2013): under a pure label shift the window's rows are distributed as the held-out rows weighted
  by ``q(y) / p(y)``. An MMD^2 above what simulated label shifts of the held-out split give says the rows
  themselves changed, so the shares cannot be trusted and the estimator keeps the held-out ones.

Features are temperature-scaled log-softmax rows clipped at -12 (so a near-zero probability cannot dominate),
with a Gaussian kernel whose bandwidth is the held-out median distance.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor

__all__ = [
    "LOG_PROB_FLOOR",
    "MIN_PER_CLASS",
    "bbse_shares",
    "label_shift_thresholds",
    "log_prob_features",
    "median_bandwidth",
    "soft_confusion",
    "threshold_at",
    "weighted_mmd2",
]

LOG_PROB_FLOOR = -12.0
# Held-out images each class needs for the label-shift test (one in each half of the threshold's simulation).
MIN_PER_CLASS = 2
# Window sizes at which the held-out threshold is simulated; other sizes interpolate on 1/n.
THRESHOLD_WINDOWS = (20, 50, 100, 200, 500)


def log_prob_features(probs: Tensor) -> Tensor:
    """(N, C) float32 log-softmax features, clipped at `LOG_PROB_FLOOR`, of (N, C) softmax rows."""
    return probs.detach().float().cpu().clamp_min(math.exp(LOG_PROB_FLOOR)).log()


def soft_confusion(probs: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) float64 matrix whose column j is the mean softmax row of the held-out images of class j.

    Raises:
        ValueError: a class without held-out images (its column is undefined: the held-out split must hold
            every class).
    """
    probs, labels = probs.detach().double().cpu(), labels.detach().long().cpu()
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(
            f"classes {missing} have no held-out image; BBSE needs every class in the held-out split."
        )
    columns = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    columns.index_add_(1, labels, probs.T)
    return columns / counts


def bbse_shares(probs: Tensor, confusion: Tensor) -> Tensor:
    """(C,) float32 class shares of a window of (N, C) softmax rows, by soft BBSE on the simplex.

    Solves ``confusion @ q = mean(probs)`` by non-negative least squares with ``sum(q) = 1`` as a heavily weighted
    extra row (Lipton et al. 2018 solve the unconstrained system and clip; NNLS keeps the shares valid).
    """
    mean = probs.detach().double().cpu().mean(0).numpy()
    c = confusion.shape[0]
    a = np.vstack([confusion.numpy(), 100.0 * np.ones((1, c))])
    q, _ = nnls(a, np.concatenate([mean, [100.0]]))
    total = q.sum()
    return torch.from_numpy(q / total if total > 0 else np.full(c, 1.0 / c)).float()


def median_bandwidth(features: Tensor, max_rows: int = 500) -> float:
    """The squared median pairwise distance of up to `max_rows` (N, D) rows: the Gaussian kernel's ``2 sigma^2``."""
    x = features[:max_rows].float()
    d = torch.cdist(x, x)
    positive = d[d > 0]
    return float(positive.median() ** 2) if len(positive) else 1.0


def weighted_mmd2(window: Tensor, reference: Tensor, weights: Tensor, bandwidth: float) -> float:
    """Unbiased MMD^2 between (n, D) `window` rows and (m, D) `reference` rows weighted by (m,) `weights`.

    The kernel is ``exp(-|x - y|^2 / bandwidth)``; weights are normalised to sum to 1 and the reference's
    within term drops the diagonal (its normalisation ``1 - sum(w^2)`` keeps it unbiased). A float, near 0 when
    the window is distributed as the weighted reference.
    """
    x, y = window.float(), reference.float()
    w = weights.float() / weights.float().sum()
    n = len(x)
    k_xx = torch.exp(-torch.cdist(x, x).pow(2) / bandwidth)
    k_yy = torch.exp(-torch.cdist(y, y).pow(2) / bandwidth)
    k_xy = torch.exp(-torch.cdist(x, y).pow(2) / bandwidth)
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / max(n * (n - 1), 1)
    yy = (w @ k_yy @ w - (w * w * k_yy.diagonal()).sum()) / max(1 - float((w * w).sum()), 1e-12)
    return float(xx + yy - 2 * (k_xy @ w).mean())


def label_shift_thresholds(
    probs: Tensor, labels: Tensor, quantile: float = 0.99, n_windows: int = 100, seed: int = 0
) -> dict[int, float]:
    """The weighted MMD^2 that pure label shifts of the held-out split stay below, per window size.

    The held-out split is halved class by class (seeded; every class needs 2 images, see `MIN_PER_CLASS`): one
    half is the reference, and `n_windows` windows per size in
    `THRESHOLD_WINDOWS` are drawn from the other with Dirichlet(0.5) class shares (with replacement within a
    class), each scored as `EstimationReference` scores a window. Returns ``{window size: quantile}``.
    """
    probs, labels = probs.detach().float().cpu(), labels.detach().long().cpu()
    c = probs.shape[1]
    g = torch.Generator().manual_seed(seed)
    halves = [torch.nonzero(labels == k).flatten() for k in range(c)]  # stratified: each class in both halves
    halves = [m[torch.randperm(len(m), generator=g)] for m in halves]
    ref = torch.cat([m[: len(m) // 2] for m in halves])
    pool = torch.cat([m[len(m) // 2 :] for m in halves])
    confusion = soft_confusion(probs[ref], labels[ref], c)
    features = log_prob_features(probs[ref])
    bandwidth = median_bandwidth(features)
    p_ref = torch.bincount(labels[ref], minlength=c).float() / len(ref)
    by_class = [pool[labels[pool] == k] for k in range(c)]
    present = torch.tensor([len(m) > 0 for m in by_class], dtype=torch.float32)
    with torch.random.fork_rng():  # Dirichlet draws from the global generator: seed it without leaking
        torch.manual_seed(seed)
        draws = torch.distributions.Dirichlet(torch.full((c,), 0.5)).sample(
            (len(THRESHOLD_WINDOWS), n_windows)
        )
    thresholds = {}
    for size, size_draws in zip(THRESHOLD_WINDOWS, draws, strict=True):
        stats = []
        for shares in size_draws:
            shares = shares * present
            counts = torch.multinomial(shares / shares.sum(), size, replacement=True, generator=g)
            counts = counts.bincount(minlength=c)
            idx = torch.cat(
                [
                    m[torch.randint(0, len(m), (int(k),), generator=g)]
                    for m, k in zip(by_class, counts, strict=True)
                    if k
                ]
            )
            q = bbse_shares(probs[idx], confusion)
            weights = (q / p_ref.clamp_min(1e-12))[labels[ref]]
            stats.append(weighted_mmd2(log_prob_features(probs[idx]), features, weights, bandwidth))
        thresholds[size] = float(torch.tensor(stats).quantile(quantile))
    return thresholds


def threshold_at(thresholds: dict[int, float], window: int) -> float:
    """The threshold for a window of `window` rows: linear in 1/n between the simulated sizes, clamped outside."""
    sizes = sorted(thresholds)
    if window <= sizes[0]:
        return thresholds[sizes[0]]
    if window >= sizes[-1]:
        return thresholds[sizes[-1]]
    for lo, hi in itertools.pairwise(sizes):
        if lo <= window <= hi:
            t = (1 / lo - 1 / window) / (1 / lo - 1 / hi)
            return thresholds[lo] + t * (thresholds[hi] - thresholds[lo])
    return thresholds[sizes[-1]]
