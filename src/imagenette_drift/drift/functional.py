"""Stateless drift statistics: Gaussian kernels, MMD^2, per-column Kolmogorov-Smirnov and a chi-squared homogeneity test.

Kernel convention (Gretton et al., JMLR 2012): ``k(x, y) = exp(-||x - y||^2 / (2 * sigma^2))`` where
``sigma`` is the *bandwidth*. The median heuristic sets ``2 * sigma^2`` to the median of the pairwise
squared distances between distinct reference points, i.e. ``k(x, y) = exp(-||x - y||^2 / median)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "chi2_homogeneity",
    "gaussian_kernel",
    "ks_2samp_columns",
    "ks_pvalues",
    "median_heuristic_bandwidth",
    "mmd2_unbiased",
    "random_groups",
    "squared_distances",
]


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``(n, m)`` via ``|x|^2 + |y|^2 - 2 x.y``, clamped at 0."""
    x_sq = (x * x).sum(dim=1, keepdim=True)
    y_sq = (y * y).sum(dim=1, keepdim=True)
    return torch.addmm(x_sq + y_sq.T, x, y.T, alpha=-2.0).clamp_min_(0.0)


def median_heuristic_bandwidth(x: Tensor, max_samples: int = 2000) -> float:
    """Median-heuristic bandwidth ``sigma = sqrt(median_{i<j} ||x_i - x_j||^2 / 2)`` of the rows of ``x``.

    Above ``max_samples`` rows the median is taken over ``max_samples`` evenly spaced rows, which bounds
    memory while estimating the median to well under 1%.
    """
    if x.shape[0] > max_samples:
        x = x[torch.linspace(0, x.shape[0] - 1, max_samples, device=x.device).long()]
    d2 = squared_distances(x, x)
    rows, cols = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    median = float(d2[rows, cols].median())
    if not median > 0.0:
        raise ValueError(
            "The median pairwise squared distance of the reference is 0 (mostly duplicate rows), so the "
            "median heuristic fails; pass `bandwidth` explicitly or use a more varied reference."
        )
    return (median / 2.0) ** 0.5


def gaussian_kernel(x: Tensor, y: Tensor, bandwidth: float) -> Tensor:
    """Gaussian (RBF) kernel matrix ``exp(-||x_i - y_j||^2 / (2 * bandwidth^2))`` of shape ``(n, m)``."""
    return squared_distances(x, y).mul_(-0.5 / bandwidth**2).exp_()


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, Eq. 3): kernel diagonals excluded; may be slightly negative."""
    n, m = x.shape[0], y.shape[0]
    k_xx = gaussian_kernel(x, x, bandwidth).fill_diagonal_(0.0)
    k_yy = gaussian_kernel(y, y, bandwidth).fill_diagonal_(0.0)
    k_xy = gaussian_kernel(x, y, bandwidth)
    s_xx, s_yy, s_xy = (float(k.sum(dtype=torch.float64)) for k in (k_xx, k_yy, k_xy))
    return s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)


def ks_2samp_columns(sorted_reference: Tensor, x: Tensor) -> Tensor:
    """Two-sided two-sample KS statistic per column, as ``scipy.stats.ks_2samp`` computes it.

    Args:
        sorted_reference: ``(n, C)`` reference sample with every column sorted ascending.
        x: ``(m, C)`` test sample.

    Returns:
        ``(C,)`` float64 tensor of ``sup_t |F_ref(t) - F_x(t)|`` over the pooled sample points.
    """
    ref_t = sorted_reference.T.contiguous()
    x_t = torch.sort(x.T.to(ref_t.dtype), dim=1).values.contiguous()
    pooled = torch.cat([ref_t, x_t], dim=1)
    cdf_ref = torch.searchsorted(ref_t, pooled, right=True).to(torch.float64) / ref_t.shape[1]
    cdf_x = torch.searchsorted(x_t, pooled, right=True).to(torch.float64) / x_t.shape[1]
    return (cdf_ref - cdf_x).abs().amax(dim=1)


def ks_pvalues(statistic: Tensor, n: int, m: int) -> np.ndarray:
    """Asymptotic two-sided KS p-values, identical to ``scipy.stats.ks_2samp(..., method="asymp")``."""
    big, small = max(n, m), min(n, m)
    effective_n = np.round(big * small / (big + small))
    from scipy import stats  # here, not at import: the online monitor (serving) never needs scipy

    return stats.kstwo.sf(statistic.detach().cpu().numpy(), effective_n)


def chi2_homogeneity(
    reference_counts: Tensor, window_counts: Tensor, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Pearson chi-squared test of homogeneity of two count vectors (a ``2 x C`` contingency table).

    Classes with no count in either sample are dropped. With every expected count at least 5 the p-value is
    the chi-squared tail with ``C' - 1`` degrees of freedom (``C'`` classes kept), equal to
    ``scipy.stats.chi2_contingency(table, correction=False)``; otherwise it is a Monte Carlo exact
    conditional p-value ``(1 + #{X^2_b >= X^2}) / (n_resamples + 1)``, the window's counts redrawn from the
    pooled counts without replacement (multivariate hypergeometric) with a ``seed``-ed generator.

    Args:
        reference_counts: ``(C,)`` non-negative integer counts of the reference, with a positive sum.
        window_counts: ``(C,)`` non-negative integer counts of the window, with a positive sum.
        n_resamples: Monte Carlo tables for the small-count p-value.
        seed: Seed of those tables.

    Returns:
        ``(statistic, p_value)``: Pearson's ``X^2`` and its p-value; ``(0.0, 1.0)`` when one class holds everything.
    """
    ref = reference_counts.detach().cpu().to(torch.int64).numpy()
    win = window_counts.detach().cpu().to(torch.int64).numpy()
    keep = (ref + win) > 0
    ref, win = ref[keep], win[keep]
    if ref.size < 2:
        return 0.0, 1.0
    pooled = ref + win
    n_ref, n_win = int(ref.sum()), int(win.sum())
    share = pooled / (n_ref + n_win)  # expected counts are n_ref * share and n_win * share

    def pearson(window: np.ndarray) -> np.ndarray:
        """X^2 of the tables with window row(s) ``window`` and the fixed margins, ``(..., C')`` -> ``(...)``."""
        e_win, e_ref = n_win * share, n_ref * share
        return (((window - e_win) ** 2 / e_win) + ((pooled - window - e_ref) ** 2 / e_ref)).sum(axis=-1)

    statistic = float(pearson(win.astype(np.float64)))
    if min(n_ref, n_win) * share.min() >= 5.0:
        from scipy import stats

        return statistic, float(stats.chi2.sf(statistic, ref.size - 1))
    rng = np.random.default_rng(seed)
    tables = rng.multivariate_hypergeometric(pooled, n_win, size=n_resamples).astype(np.float64)
    # A relative tolerance so that tables tied with the observed one count as at least as extreme.
    n_extreme = int((pearson(tables) >= statistic * (1.0 - 1e-9)).sum())
    return statistic, (n_extreme + 1) / (n_resamples + 1)


def random_groups(n_total: int, n_group: int, n_draws: int, seed: int, device: torch.device | str) -> Tensor:
    """Seeded uniform random subsets as a ``(n_draws, n_total)`` float 0/1 matrix with ``n_group`` ones per row.

    Row ``b`` marks which pooled samples form the size-``n_group`` group in permutation ``b``; the same
    arguments always give the same matrix on a given device.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    scores = torch.rand(n_draws, n_total, generator=generator, device=device)
    members = scores.topk(n_group, dim=1, sorted=False).indices
    return torch.zeros(n_draws, n_total, device=device).scatter_(1, members, 1.0)
