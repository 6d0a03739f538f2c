"""A model card's label-free accuracy estimation: every method's estimate of a window, with an interval.

Methods (all pure torch on the window's softmax rows, so they run wherever the serving runtime gives
probabilities, ONNX included); the held-out values they need are fitted once at the end of training:

- ``atc_mc``, ``atc_ne``: ATC on max confidence or negative entropy (Garg et al., ICLR 2022; `confidence`).
- ``ac``: average confidence (Hendrycks & Gimpel, ICLR 2017), the mean max-softmax probability.
- ``doc``: difference of confidences (Guillory et al., ICCV 2021): held-out accuracy minus the drop of average
  confidence from the held-out split to the window.
- ``cot``, ``cott``: confidence optimal transport and its thresholded variant (Lu et al., NeurIPS 2023;
  `transport`), against the held-out class shares.
- ``cot_ls``: COT that tells a pure label shift from a breaking model (`label_shift`): BBSE estimates the
  window's class shares; when the window's rows match the held-out rows reweighted to those shares (a weighted
  MMD below the held-out label-shift threshold), the rows are transported onto the estimated shares, else onto
  the held-out ones (plain COT).
- ``nuclear``: held-out accuracy plus the change of the normalised nuclear norm of the prediction matrix from
  the held-out split to the window (Deng et al., ICML 2023).

`EstimationReference.primary` names the estimate that decisions read (the harm alert, the gate, the canary,
the monitor's table): ``cot_ls`` when the card stores the held-out rows, ``cot`` on cards that store only the
class shares, else ``atc_mc`` (cards written before COT; see `benchmarks/results/accuracy_estimation.md` for why
ATC misses a collapse under corruption and COT misreads a label shift).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any, Literal

import torch
from torch import Tensor

from imagenette_drift.card import check_field_version
from imagenette_drift.estimation.confidence import (
    apply_temperature,
    atc_threshold,
    confidence_scores,
    fit_temperature,
)
from imagenette_drift.estimation.label_shift import (
    MIN_PER_CLASS,
    bbse_shares,
    label_shift_thresholds,
    log_prob_features,
    median_bandwidth,
    soft_confusion,
    threshold_at,
    weighted_mmd2,
)
from imagenette_drift.estimation.transport import (
    cott_threshold,
    nuclear_score,
    transport_cost,
    transport_plan,
)

__all__ = [
    "METHODS",
    "AccuracyEstimate",
    "EstimationReference",
    "estimate_accuracy",
    "shared_method",
    "window_estimator",
]

Method = Literal["atc_mc", "atc_ne", "ac", "doc", "cot", "cott", "cot_ls", "nuclear"]
METHODS: tuple[str, ...] = ("atc_mc", "atc_ne", "ac", "doc", "cot", "cott", "cot_ls", "nuclear")
CONFIDENCE_METHODS: tuple[str, ...] = ("atc_mc", "atc_ne", "ac", "doc")
TRANSPORT_METHODS: tuple[str, ...] = (*CONFIDENCE_METHODS, "cot", "cott", "nuclear")
# Version 2 adds the transport fields (class shares, COTT threshold, held-out nuclear score); version 3 the
# held-out rows and label-shift thresholds of `cot_ls`. Older cards still load and estimate with fewer methods.
ESTIMATION_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)
FALLBACK_NOTE = (
    "this model card predates transport-based estimation (no held-out class shares); decisions read ATC-MC, "
    "which stays high when a corrupted input makes the model confidently wrong: retrain to store them"
)


def label_shift_fields(probs: Tensor, labels: Tensor) -> dict[str, Any]:
    """`EstimationReference`'s version-3 fields from (N, C) scaled held-out softmax rows and (N,) labels."""
    return {
        "heldout_probs": probs.contiguous(),
        "heldout_labels": labels.contiguous(),
        "label_shift_thresholds": label_shift_thresholds(probs, labels),
    }


@dataclass(frozen=True)
class AccuracyEstimate:
    """A window's estimated top-1 accuracy (fraction in [0, 1]) with a two-sided interval.

    The interval adds, in quadrature, the binomial noise of a window of `n` images around the estimate
    (``sqrt(p (1 - p) / n)``: the true accuracy of a finite window varies that much even when the estimator is
    exact), the noise of the held-out values the method was calibrated on (``sqrt(a (1 - a) / n_heldout)``)
    and an allowance for the estimator's own bias under shift: `EstimationReference.bias_fraction` times the
    estimated drop below the held-out accuracy, as a standard deviation (zero on cards without it).
    """

    method: str
    estimate: float
    lower: float
    upper: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interval(
    method: str, estimate: float, n: int, calibration_var: float, bias: float, z: float
) -> AccuracyEstimate:
    p = min(max(estimate, 0.0), 1.0)
    half = z * math.sqrt(p * (1 - p) / n + calibration_var + bias**2)
    return AccuracyEstimate(method, p, max(0.0, p - half), min(1.0, p + half), n)


@dataclass(frozen=True)
class EstimationReference:
    """What label-free accuracy estimation needs from the held-out split, as the model card stores it.

    Fit once at the end of training with `fit` (held-out logits and labels), then call `estimate` once per
    window of softmax outputs; `primary` names the estimate that decisions read. Pitfalls: the confidence
    methods miss a model that is confidently wrong on corrupted inputs; the transport methods (COT, COTT,
    nuclear) read a pure label shift (other class proportions, same images) as errors.
    """

    temperature: float
    atc_threshold_mc: float
    atc_threshold_ne: float
    heldout_accuracy: float
    heldout_confidence: float
    n_heldout: int
    # Version 2 (None on cards written before it):
    class_shares: tuple[float, ...] | None = None  # (C,) held-out label distribution
    cott_threshold: float | None = None
    heldout_cot_error: float | None = None  # COT's estimated error on the held-out split itself
    heldout_nuclear: float | None = None
    # Version 3 (None before): (N, C) float32 temperature-scaled held-out softmax rows, (N,) int64 labels, and
    # the weighted MMD^2 that pure label shifts stay below, per window size (`label_shift_thresholds`).
    heldout_probs: Tensor | None = field(default=None, compare=False, repr=False)
    heldout_labels: Tensor | None = field(default=None, compare=False, repr=False)
    label_shift_thresholds: dict[int, float] | None = None
    # The interval's allowance for the estimator's own bias: this fraction of the estimated drop from the
    # held-out accuracy, as a standard deviation (set from the benchmark's leave-one-family-out residuals).
    bias_fraction: float = 0.0

    @classmethod
    def fit(cls, logits: Tensor, labels: Tensor, bias_fraction: float = 0.3) -> EstimationReference:
        """Fit temperature scaling, then each method's held-out values on the scaled probabilities.

        Args:
            logits: (N, C) held-out logits (or log-probabilities).
            labels: (N,) held-out class indices.
            bias_fraction: see the field of that name; the benchmark fits 0.12 on meta-sets of all four
                corruption families on the 4-epoch model and 0.44 on a 1-epoch one (`benchmarks/results/`); 0.3 lies between.

        A held-out split with fewer than `label_shift.MIN_PER_CLASS` images of some class gets no `cot_ls` (its
        primary is COT): the label-shift test needs every class's held-out rows.
        """
        temperature = fit_temperature(logits, labels)
        probs = (logits.detach().float().cpu() / temperature).softmax(dim=1)
        labels = labels.detach().long().cpu()
        correct = probs.argmax(dim=1) == labels
        accuracy = float(correct.float().mean())
        counts = torch.bincount(labels, minlength=probs.shape[1])
        shares = counts.float() / len(labels)
        # cot_ls needs every class in both halves of its threshold simulation; a smaller split gets COT only.
        label_shift_ready = bool((counts >= MIN_PER_CLASS).all())
        return cls(
            temperature=temperature,
            atc_threshold_mc=atc_threshold(confidence_scores(probs, "max_confidence"), correct),
            atc_threshold_ne=atc_threshold(confidence_scores(probs, "negative_entropy"), correct),
            heldout_accuracy=accuracy,
            heldout_confidence=float(probs.amax(dim=1).mean()),
            n_heldout=len(labels),
            class_shares=tuple(float(s) for s in shares),
            cott_threshold=cott_threshold(probs, shares, 1.0 - accuracy),
            heldout_cot_error=transport_cost(probs, shares),
            heldout_nuclear=nuclear_score(probs),
            **(label_shift_fields(probs, labels) if label_shift_ready else {}),
            bias_fraction=bias_fraction,
        )

    @property
    def has_transport(self) -> bool:
        """Whether the card stores what COT, COTT and the nuclear norm need (version 2)."""
        return self.class_shares is not None

    @property
    def has_label_shift(self) -> bool:
        """Whether the card stores what `cot_ls` needs (version 3)."""
        return self.has_transport and self.heldout_probs is not None and bool(self.label_shift_thresholds)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this card can compute."""
        if self.has_label_shift:
            return METHODS
        return TRANSPORT_METHODS if self.has_transport else CONFIDENCE_METHODS

    @property
    def primary(self) -> str:
        """The method decisions read: ``cot_ls``; ``cot`` on a version-2 card, ``atc_mc`` on a version-1 card."""
        if self.has_label_shift:
            return "cot_ls"
        return "cot" if self.has_transport else "atc_mc"

    @cached_property
    def _label_shift_state(self) -> tuple[Tensor, Tensor, float, Tensor]:
        probs, labels = self.heldout_probs.float(), self.heldout_labels.long()
        shares = torch.bincount(labels, minlength=probs.shape[1]).float() / len(labels)
        features = log_prob_features(probs)
        return soft_confusion(probs, labels, probs.shape[1]), features, median_bandwidth(features), shares

    def label_shift(self, scaled: Tensor) -> tuple[Tensor, float, bool]:
        """A window's BBSE class shares (C,), its weighted MMD^2 against the held-out rows reweighted to them,
        and whether that stays below the card's threshold for the window's size (a pure label shift).

        `scaled`: (N, C) temperature-scaled softmax rows. Needs a version-3 card (`has_label_shift`).
        """
        confusion, features, bandwidth, heldout_shares = self._label_shift_state
        shares = bbse_shares(scaled, confusion)
        weights = (shares / heldout_shares.clamp_min(1e-12))[self.heldout_labels.long()]
        statistic = weighted_mmd2(log_prob_features(scaled), features, weights, bandwidth)
        return shares, statistic, statistic <= threshold_at(self.label_shift_thresholds, len(scaled))

    @property
    def note(self) -> str | None:
        """Why the primary method is a fallback (None when it is not)."""
        return None if self.has_transport else FALLBACK_NOTE

    def estimate(self, probs: Tensor, z: float = 1.96) -> dict[str, AccuracyEstimate]:
        """Every method's estimate for one window of (N, C) softmax rows (unscaled, as served).

        Methods needing version-2 fields are left out on older cards. `z` sets the interval's width (1.96:
        about 95%).
        """
        scaled = apply_temperature(probs, self.temperature)
        n = len(scaled)
        a = self.heldout_accuracy
        calibration_var = a * (1 - a) / max(self.n_heldout, 1)
        confidence = float(scaled.amax(dim=1).mean())
        values = {
            "atc_mc": float(
                (confidence_scores(scaled, "max_confidence") > self.atc_threshold_mc).float().mean()
            ),
            "atc_ne": float(
                (confidence_scores(scaled, "negative_entropy") > self.atc_threshold_ne).float().mean()
            ),
            "ac": confidence,
            "doc": a - (self.heldout_confidence - confidence),
        }
        if self.has_transport:
            shares = torch.tensor(self.class_shares)
            plan = transport_plan(scaled, shares)
            cost = 1.0 - scaled
            values["cot"] = 1.0 - float((plan * cost).sum())
            values["cott"] = 1.0 - float(plan[cost > self.cott_threshold].sum())
            values["nuclear"] = a + nuclear_score(scaled) - self.heldout_nuclear
        if self.has_label_shift:
            label_shares, _, pure_label_shift = self.label_shift(scaled)
            values["cot_ls"] = values["cot"]
            if pure_label_shift:
                shifted = transport_plan(scaled, label_shares)
                values["cot_ls"] = 1.0 - float((shifted * (1.0 - scaled)).sum())
        return {
            m: _interval(m, v, n, calibration_var, self.bias_fraction * max(0.0, a - v), z)
            for m, v in values.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and lists, for `torch.load(weights_only=True)`."""
        state = asdict(self)
        if self.class_shares is not None:
            state["class_shares"] = list(self.class_shares)
        version = 3 if self.has_label_shift else 2 if self.has_transport else 1
        return {"version": version} | state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EstimationReference:
        """Load a card's `estimation` field, of this version or an older one (estimating with fewer methods)."""
        check_field_version(state, "Estimation", SUPPORTED_VERSIONS)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in state.items() if k in known}
        if values.get("class_shares") is not None:
            values["class_shares"] = tuple(float(s) for s in values["class_shares"])
        if values.get("label_shift_thresholds") is not None:
            values["label_shift_thresholds"] = {
                int(k): float(v) for k, v in values["label_shift_thresholds"].items()
            }
        return cls(**values)


def estimate_accuracy(state: dict[str, Any], probs: Tensor, z: float = 1.96) -> dict[str, dict[str, Any]]:
    """One call per window: every method's estimate as plain dicts, from the card's `estimation` state."""
    reference = EstimationReference.from_state_dict(state)
    return {m: e.to_dict() for m, e in reference.estimate(probs, z).items()}


def shared_method(*states: dict[str, Any] | None) -> str:
    """The primary method every given card's `estimation` state can compute, so two models are compared on one
    estimator: ``cot_ls`` when all store the held-out rows, ``cot`` when all store the class shares, else
    ``atc_mc`` (None states are skipped)."""
    references = [EstimationReference.from_state_dict(s) for s in states if s]
    if references and all(r.has_label_shift for r in references):
        return "cot_ls"
    return "cot" if references and all(r.has_transport for r in references) else "atc_mc"


def window_estimator(state: dict[str, Any], method: Method | None = None) -> Callable[..., float]:
    """A per-window estimator for a fleet monitor: `(probs (n, C) array, *context) -> estimated top-1`.

    Args:
        state: the model card's `estimation` field.
        method: which estimate to return (default: the card's `EstimationReference.primary`).
    """
    reference = EstimationReference.from_state_dict(state)
    method = method or reference.primary
    available = reference.methods
    if method not in available:
        raise ValueError(f"method must be one of {', '.join(available)} for this card; got {method!r}.")

    def estimate(probs: Any, *_: Any) -> float:
        return reference.estimate(torch.as_tensor(probs, dtype=torch.float32))[method].estimate

    return estimate
