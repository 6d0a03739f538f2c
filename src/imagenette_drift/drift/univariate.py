"""Drift tests on a classifier's outputs: per-class Kolmogorov-Smirnov (BBSD) and a label-histogram chi-squared homogeneity test."""

from __future__ import annotations

import torch
from torch import Tensor

from imagenette_drift.drift._checks import (
    ArrayLike,
    as_tensor,
    check_matrix,
    check_positive_int,
    check_probability,
    check_state,
)
from imagenette_drift.drift.functional import chi2_homogeneity, ks_2samp_columns, ks_pvalues
from imagenette_drift.drift.result import DriftResult

__all__ = ["ChiSquaredDriftDetector", "KSDriftDetector"]

_KS_FORMAT = "imagenette_drift.KSDriftDetector"
_CHI2_FORMAT = "imagenette_drift.ChiSquaredDriftDetector"


class KSDriftDetector:
    """Black-box shift detection: a two-sample KS test per softmax column with a Bonferroni correction.

    This is the "BBSD" test of Rabanser et al., *Failing Loudly* (NeurIPS 2019). The statistic is the largest
    per-class KS distance and the p-value is ``min(1, C * min_c p_c)``. Per-class p-values are Smirnov's
    asymptotic ones, identical to ``scipy.stats.ks_2samp(..., method="asymp")``; for windows of about 100
    they lie within ~0.02 of scipy's default exact p-values (slightly smaller).

    Pitfalls: it sees only marginal distributions of the outputs, so it misses shifts that leave every
    class's score distribution unchanged; ties (e.g. saturated probabilities of exactly 1.0) make KS
    conservative.
    """

    def __init__(self, reference_probs: ArrayLike, alpha: float = 0.05) -> None:
        """Sort and keep the reference outputs.

        Args:
            reference_probs: ``(n_ref, num_classes)`` softmax outputs (or any per-class scores) on reference data.
            alpha: Significance level applied to the Bonferroni-corrected p-value.
        """
        reference = check_matrix("reference_probs", reference_probs, min_rows=1)
        if not reference.is_floating_point():
            reference = reference.float()
        self.reference_probs = reference
        self.alpha = check_probability("alpha", alpha)
        self._sorted_reference = torch.sort(reference, dim=0).values

    @property
    def num_classes(self) -> int:
        """Number of output columns tested."""
        return self.reference_probs.shape[1]

    def per_class(self, probs: ArrayLike) -> tuple[Tensor, Tensor]:
        """Per-class KS statistics and uncorrected p-values, both ``(num_classes,)`` float64 on the CPU."""
        probs = check_matrix("probs", probs, min_rows=1, n_features=self.num_classes)
        probs = probs.to(self._sorted_reference.device)
        statistics = ks_2samp_columns(self._sorted_reference, probs).cpu()
        p_values = ks_pvalues(statistics, self.reference_probs.shape[0], probs.shape[0])
        return statistics, torch.from_numpy(p_values)

    def test(self, probs: ArrayLike) -> DriftResult:
        """Test a window of ``(n, num_classes)`` softmax outputs against the reference."""
        statistics, p_values = self.per_class(probs)
        p_value = min(1.0, float(p_values.min()) * self.num_classes)
        return DriftResult(
            statistic=float(statistics.max()),
            p_value=p_value,
            drift=p_value < self.alpha,
            method="ks_bonferroni",
            alpha=self.alpha,
        )

    def state_dict(self) -> dict[str, Tensor | int | float | str]:
        """Plain dict of tensors and primitives, loadable with ``torch.load(weights_only=True)``."""
        return {
            "format": _KS_FORMAT,
            "version": 1,
            "reference_probs": self.reference_probs.cpu().clone(),
            "alpha": self.alpha,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> KSDriftDetector:
        """Rebuild a detector from `state_dict` output."""
        check_state(state, _KS_FORMAT, ("reference_probs", "alpha"))
        return cls(state["reference_probs"], alpha=state["alpha"])

    def __repr__(self) -> str:
        n_ref = self.reference_probs.shape[0]
        return f"{type(self).__name__}(n_ref={n_ref}, num_classes={self.num_classes}, alpha={self.alpha})"


def _predicted_labels(name: str, values: ArrayLike, num_classes: int) -> Tensor:
    """Turn ``(n,)`` integer labels or ``(n, num_classes)`` scores into validated ``(n,)`` int64 labels."""
    values = as_tensor(name, values)
    if values.ndim == 2:
        scores = check_matrix(name, values, min_rows=1, n_features=num_classes)
        return scores.argmax(dim=1)
    if values.ndim != 1 or values.is_floating_point() or values.dtype == torch.bool or values.numel() == 0:
        raise ValueError(
            f"`{name}` must be non-empty integer labels of shape (n,) or scores of shape (n, {num_classes}); "
            f"got dtype {values.dtype} and shape {tuple(values.shape)}."
        )
    if int(values.min()) < 0 or int(values.max()) >= num_classes:
        raise ValueError(
            f"`{name}` holds labels in [{int(values.min())}, {int(values.max())}] but `num_classes` is "
            f"{num_classes}; labels must lie in [0, {num_classes - 1}]."
        )
    return values.long()


class ChiSquaredDriftDetector:
    """Label-shift test: chi-squared test of homogeneity between the reference's and a window's predicted labels.

    Both samples are random, so the test is two-sample: Pearson's chi-squared on the ``2 x C`` contingency
    table of reference and window class counts (classes seen in neither are dropped), ``C' - 1`` degrees of
    freedom for the ``C'`` classes kept, as ``scipy.stats.chi2_contingency(table, correction=False)``. A
    goodness-of-fit test against the reference's proportions would treat them as exact and flag ~12% of
    drift-free windows of 200 against 1,000 reference labels at alpha 0.05.

    When an expected count is below 5 (Cochran's rule; windows under about ``5 * num_classes``, or rare
    classes) the chi-squared approximation is unreliable, so the p-value is a seeded Monte Carlo version of
    the exact conditional test instead: ``(1 + #{X^2_b >= X^2}) / (B + 1)`` over ``B = n_resamples`` windows
    drawn from the pooled labels without replacement (multivariate hypergeometric, margins fixed; Agresti,
    *Categorical Data Analysis*, 3rd ed., 3.5). The same window always gets the same p-value.

    Pitfall: it sees only the predicted-label histogram, so it misses shifts that keep the class mix.
    """

    def __init__(
        self,
        reference: ArrayLike,
        num_classes: int,
        alpha: float = 0.05,
        n_resamples: int = 1000,
        seed: int = 0,
    ) -> None:
        """Count the reference's predicted labels.

        Args:
            reference: ``(n_ref,)`` integer predicted labels, or ``(n_ref, num_classes)`` scores (argmax is used).
            num_classes: Number of classes of the model.
            alpha: Significance level; ``drift`` is ``p_value < alpha``.
            n_resamples: Monte Carlo tables for the exact p-value used when an expected count is below 5.
            seed: Seed of those tables.
        """
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.alpha = check_probability("alpha", alpha)
        self.n_resamples = check_positive_int("n_resamples", n_resamples)
        self.seed = int(seed)
        labels = _predicted_labels("reference", reference, self.num_classes)
        self.reference_counts = torch.bincount(labels.cpu(), minlength=self.num_classes)

    @property
    def reference_proportions(self) -> Tensor:
        """Reference class proportions, ``(num_classes,)`` float64 summing to 1."""
        counts = self.reference_counts.to(torch.float64)
        return counts / counts.sum()

    def test(self, predictions: ArrayLike) -> DriftResult:
        """Test a window of ``(n,)`` predicted labels or ``(n, num_classes)`` scores against the reference."""
        labels = _predicted_labels("predictions", predictions, self.num_classes)
        observed = torch.bincount(labels.cpu(), minlength=self.num_classes)
        statistic, p_value = chi2_homogeneity(
            self.reference_counts, observed, n_resamples=self.n_resamples, seed=self.seed
        )
        return DriftResult(
            statistic=statistic, p_value=p_value, drift=p_value < self.alpha, method="chi2", alpha=self.alpha
        )

    def state_dict(self) -> dict[str, Tensor | int | float | str]:
        """Plain dict of tensors and primitives, loadable with ``torch.load(weights_only=True)``."""
        return {
            "format": _CHI2_FORMAT,
            "version": 2,
            "reference_counts": self.reference_counts.clone(),
            "num_classes": self.num_classes,
            "alpha": self.alpha,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> ChiSquaredDriftDetector:
        """Rebuild a detector from `state_dict` output (version 1 states, without resampling keys, get the defaults)."""
        check_state(state, _CHI2_FORMAT, ("reference_counts", "num_classes", "alpha"))
        detector = cls.__new__(cls)
        detector.num_classes = check_positive_int("num_classes", state["num_classes"], minimum=2)
        detector.alpha = check_probability("alpha", state["alpha"])
        detector.n_resamples = check_positive_int("n_resamples", state.get("n_resamples", 1000))
        detector.seed = int(state.get("seed", 0))
        counts = state["reference_counts"]
        if not isinstance(counts, Tensor) or counts.shape != (detector.num_classes,):
            shape = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
            raise ValueError(f"`reference_counts` must have shape ({detector.num_classes},), got {shape}.")
        detector.reference_counts = counts.long().cpu()
        return detector

    def __repr__(self) -> str:
        n_ref = int(self.reference_counts.sum())
        return f"{type(self).__name__}(n_ref={n_ref}, num_classes={self.num_classes}, alpha={self.alpha})"
