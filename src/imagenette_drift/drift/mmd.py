"""Kernel MMD two-sample drift test with a vectorised permutation p-value."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from imagenette_drift.drift._checks import (
    ArrayLike,
    check_bandwidth,
    check_matrix,
    check_positive_int,
    check_probability,
    check_state,
    compute_dtype,
)
from imagenette_drift.drift.functional import gaussian_kernel, median_heuristic_bandwidth, random_groups
from imagenette_drift.drift.result import DriftResult

__all__ = ["MMDDriftDetector"]

_FORMAT = "imagenette_drift.MMDDriftDetector"
_STATE_KEYS = ("reference", "n_permutations", "alpha", "seed", "bandwidth")


@dataclass
class _PermutationPlan:
    """Seeded permutations for one test-sample size, with everything that depends only on the reference."""

    n_test: int
    in_ref: Tensor  # (B, n_ref) 1 where a reference row joins the permuted test group
    in_test: Tensor  # (B, n_test) 1 where a test row stays in the permuted test group
    quad_ref: Tensor  # (B,) float64: in_ref^T K_rr in_ref
    lin_ref: Tensor  # (B,) float64: in_ref^T (K_rr 1)


def _mmd2_from_sums(total: Tensor, quad: Tensor, lin: Tensor, n_x: int, n_y: int) -> Tensor:
    """Unbiased MMD^2 from ``1^T K 1``, ``a^T K a`` and ``a^T K 1`` where ``a`` marks the y group.

    ``K`` is the pooled kernel with a zero diagonal, so the block sums are ``S_yy = a^T K a``,
    ``S_xy = a^T K 1 - S_yy`` and ``S_xx = 1^T K 1 - 2 a^T K 1 + S_yy``.
    """
    s_yy = quad
    s_xy = lin - quad
    s_xx = total - 2.0 * lin + quad
    return s_xx / (n_x * (n_x - 1)) + s_yy / (n_y * (n_y - 1)) - 2.0 * s_xy / (n_x * n_y)


class MMDDriftDetector:
    """Kernel two-sample test between a fixed reference sample and a batch of features.

    The statistic is the *unbiased* MMD^2 (Gretton et al. 2012, Eq. 3) with a Gaussian kernel
    ``exp(-||x - y||^2 / (2 * bandwidth^2))``; by default ``2 * bandwidth^2`` is the median of the pairwise
    squared distances within the reference. The p-value is ``(1 + #{permuted >= observed}) / (B + 1)``
    over ``B = n_permutations`` random relabellings of the pooled sample, so it is never 0.

    Use it to test a whole batch (e.g. a day of traffic, a corrupted validation set). For a stream of
    single images use `OnlineDriftMonitor`.

    Pitfalls:
        - The reference-reference kernel block is cached, so memory and construction time grow as
          ``n_ref^2`` (1000 rows: 4 MB; 5000 rows: 100 MB).
        - Permutations are seeded and drawn once per test-sample size, then reused: the same ``x`` always
          gets the same p-value, and repeated tests of the same size are fast. Each single test is still
          an exact permutation test.
        - Everything runs on the reference's device and in float32 (float64 if the reference is float64);
          ``x`` is moved there. A float16 reference is stored as float16 (half the checkpoint size).
    """

    def __init__(
        self,
        reference: ArrayLike,
        n_permutations: int = 100,
        alpha: float = 0.05,
        seed: int = 0,
        bandwidth: float | None = None,
    ) -> None:
        """Fit the kernel bandwidth and cache the reference kernel.

        Args:
            reference: ``(n_ref, n_features)`` features of in-distribution data, ``n_ref >= 2``.
            n_permutations: Number of random permutations for the p-value (1,000 gives p-values to ~0.001).
            alpha: Significance level; ``drift`` is ``p_value < alpha``.
            seed: Seed of the permutations, so results are reproducible.
            bandwidth: Gaussian kernel bandwidth ``sigma``; ``None`` uses the median heuristic on the reference.
        """
        reference = check_matrix("reference", reference)
        if not reference.is_floating_point():
            reference = reference.float()
        self.reference = reference
        self.n_permutations = check_positive_int("n_permutations", n_permutations)
        self.alpha = check_probability("alpha", alpha)
        self.seed = int(seed)
        self._dtype = compute_dtype(reference)
        ref = reference.to(self._dtype)
        bandwidth = check_bandwidth(bandwidth)
        self.bandwidth = median_heuristic_bandwidth(ref) if bandwidth is None else bandwidth
        self._ref = ref
        k_ref = gaussian_kernel(ref, ref, self.bandwidth).fill_diagonal_(0.0)
        n = ref.shape[0]
        # MMD^2 is unchanged when a constant is subtracted from every off-diagonal kernel entry; centring
        # the entries near zero keeps the float32 block sums of the permutations accurate.
        self._shift = float(k_ref.sum(dtype=torch.float64)) / (n * (n - 1))
        self._k_ref = k_ref.sub_(self._shift).fill_diagonal_(0.0)
        self._ref_rowsum = self._k_ref.sum(dim=1)
        self._ref_total = self._k_ref.sum(dtype=torch.float64)
        self._plan: _PermutationPlan | None = None

    @property
    def device(self) -> torch.device:
        """Device of the reference, where every test runs."""
        return self.reference.device

    @property
    def n_features(self) -> int:
        """Feature dimension the detector expects."""
        return self.reference.shape[1]

    def test(self, x: ArrayLike) -> DriftResult:
        """Test whether the rows of ``x`` (``(n_test, n_features)``, ``n_test >= 2``) come from the reference distribution."""
        x = check_matrix("x", x, n_features=self.n_features).to(device=self.device, dtype=self._dtype)
        observed, permuted = self._statistics(x)
        n_extreme = int((permuted >= observed).sum())
        p_value = (n_extreme + 1) / (self.n_permutations + 1)
        return DriftResult(
            statistic=float(observed),
            p_value=p_value,
            drift=p_value < self.alpha,
            method="mmd",
            alpha=self.alpha,
        )

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Observed unbiased MMD^2 and its ``(B,)`` permutation statistics, all from one pooled kernel."""
        n, m = self._ref.shape[0], x.shape[0]
        k_rt = gaussian_kernel(self._ref, x, self.bandwidth).sub_(self._shift)
        k_tt = gaussian_kernel(x, x, self.bandwidth).sub_(self._shift).fill_diagonal_(0.0)
        plan = self._permutation_plan(m)
        k_tt_sum = k_tt.sum(dtype=torch.float64)
        k_rt_sum = k_rt.sum(dtype=torch.float64)
        total = self._ref_total + 2.0 * k_rt_sum + k_tt_sum
        observed = _mmd2_from_sums(total, k_tt_sum, k_rt_sum + k_tt_sum, n, m)

        cross = ((plan.in_ref @ k_rt) * plan.in_test).sum(dim=1, dtype=torch.float64)
        quad_test = ((plan.in_test @ k_tt) * plan.in_test).sum(dim=1, dtype=torch.float64)
        quad = plan.quad_ref + 2.0 * cross + quad_test
        lin = (
            plan.lin_ref
            + (plan.in_ref @ k_rt.sum(dim=1)).double()
            + (plan.in_test @ (k_rt.sum(dim=0) + k_tt.sum(dim=1))).double()
        )
        return observed, _mmd2_from_sums(total, quad, lin, n, m)

    def _permutation_plan(self, n_test: int) -> _PermutationPlan:
        """Return the cached permutations for ``n_test`` rows, drawing them on first use of that size."""
        if self._plan is not None and self._plan.n_test == n_test:
            return self._plan
        n = self._ref.shape[0]
        groups = random_groups(n + n_test, n_test, self.n_permutations, self.seed, self.device)
        groups = groups.to(self._dtype)
        in_ref, in_test = groups[:, :n].contiguous(), groups[:, n:].contiguous()
        self._plan = _PermutationPlan(
            n_test=n_test,
            in_ref=in_ref,
            in_test=in_test,
            quad_ref=((in_ref @ self._k_ref) * in_ref).sum(dim=1, dtype=torch.float64),
            lin_ref=(in_ref @ self._ref_rowsum).double(),
        )
        return self._plan

    def state_dict(self) -> dict[str, Tensor | int | float | str]:
        """Plain dict of tensors and primitives, loadable with ``torch.load(weights_only=True)``."""
        return {
            "format": _FORMAT,
            "version": 1,
            "reference": self.reference.cpu().clone(),
            "n_permutations": self.n_permutations,
            "alpha": self.alpha,
            "seed": self.seed,
            "bandwidth": self.bandwidth,
        }

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str | None = None) -> MMDDriftDetector:
        """Rebuild a detector from `state_dict` output, optionally moving the reference to ``device``."""
        check_state(state, _FORMAT, _STATE_KEYS)
        reference = state["reference"] if device is None else state["reference"].to(device)
        return cls(
            reference,
            n_permutations=state["n_permutations"],
            alpha=state["alpha"],
            seed=state["seed"],
            bandwidth=state["bandwidth"],
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_ref={self.reference.shape[0]}, n_features={self.n_features}, "
            f"n_permutations={self.n_permutations}, alpha={self.alpha}, bandwidth={self.bandwidth:.4g})"
        )
