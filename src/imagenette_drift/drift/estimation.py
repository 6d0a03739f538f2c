"""Accuracy without labels: temperature scaling, ATC, average confidence and DoC, with sampling intervals.

Everything here is pure torch on softmax outputs, so it runs wherever the serving runtime gives probabilities
(ONNX included). Methods:

- temperature scaling (Guo et al., ICML 2017): one scalar T fitted by NLL on the held-out split;
  probabilities are rescaled as ``softmax(log p / T)``, which equals ``softmax(logits / T)``.
- ATC, average thresholded confidence (Garg et al., ICLR 2022): a threshold ``t`` on a confidence score is set
  on the held-out split so that the fraction of scores above ``t`` equals the held-out accuracy; a window's
  estimated accuracy is its fraction above ``t``. Two scores: max confidence (ATC-MC) and negative entropy
  (ATC-NE).
- AC, average confidence (Hendrycks & Gimpel, ICLR 2017): the mean max-softmax probability.
- DoC, difference of confidences (Guillory et al., ICCV 2021): held-out accuracy minus the drop of average
  confidence from the held-out split to the window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "METHODS",
    "AccuracyEstimate",
    "EstimationReference",
    "HarmAlert",
    "apply_temperature",
    "atc_threshold",
    "confidence_scores",
    "estimate_accuracy",
    "fit_temperature",
    "window_estimator",
]

Score = Literal["max_confidence", "negative_entropy"]
Method = Literal["atc_mc", "atc_ne", "ac", "doc"]
METHODS: tuple[str, ...] = ("atc_mc", "atc_ne", "ac", "doc")
ESTIMATION_VERSION = 1


def _check_probs(probs: Tensor) -> Tensor:
    if not isinstance(probs, Tensor) or probs.ndim != 2 or probs.shape[0] < 1:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a (N, C) tensor of softmax rows with N >= 1, got {shape}.")
    return probs.detach().float().cpu()


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100) -> float:
    """Temperature T > 0 minimising the NLL of ``softmax(logits / T)`` on labelled held-out data (Guo et al. 2017).

    Args:
        logits: (N, C) float logits (or log-probabilities: the same up to a per-row shift).
        labels: (N,) int64 class indices.
        max_iter: L-BFGS iterations on log T.

    Raises ValueError when shapes disagree or N < 2.
    """
    logits = logits.detach().float().cpu()
    labels = labels.detach().long().cpu()
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] < 2:
        raise ValueError(
            f"fit_temperature needs (N, C) logits and (N,) labels with N >= 2, got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}."
        )
    # Works even when called under inference mode (Lightning's eval loops) or on inference tensors.
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.clone(), labels.clone()
        log_t = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def apply_temperature(probs: Tensor, temperature: float) -> Tensor:
    """(N, C) softmax rows -> ``softmax(log(probs) / T)``: the temperature-scaled probabilities, float32."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    log_p = _check_probs(probs).clamp_min(1e-30).log()
    return (log_p / temperature).softmax(dim=1)


def confidence_scores(probs: Tensor, score: Score) -> Tensor:
    """(N,) ATC scores of softmax rows: the max probability, or the negative entropy (in nats, <= 0)."""
    probs = _check_probs(probs)
    if score == "max_confidence":
        return probs.amax(dim=1)
    if score == "negative_entropy":
        return (probs * probs.clamp_min(1e-30).log()).sum(dim=1)
    raise ValueError(f"score must be 'max_confidence' or 'negative_entropy', got {score!r}.")


def atc_threshold(scores: Tensor, correct: Tensor) -> float:
    """The ATC threshold t: the fraction of held-out ``scores`` above t equals the held-out accuracy.

    Args:
        scores: (N,) confidence scores of the held-out split (see `confidence_scores`).
        correct: (N,) bool, whether each prediction was right.
    """
    if scores.shape != correct.shape or scores.ndim != 1 or len(scores) < 1:
        raise ValueError(
            f"scores and correct must be (N,) of the same length, got {tuple(scores.shape)} and "
            f"{tuple(correct.shape)}."
        )
    accuracy = float(correct.float().mean())
    ordered = scores.float().sort(descending=True).values
    n_above = round(accuracy * len(ordered))
    if n_above <= 0:
        return float(ordered[0]) + 1e-6
    if n_above >= len(ordered):
        return float(ordered[-1]) - 1e-6
    return float((ordered[n_above - 1] + ordered[n_above]) / 2)  # between the last kept and the first dropped


@dataclass(frozen=True)
class AccuracyEstimate:
    """A window's estimated top-1 accuracy (fraction in [0, 1]) with a two-sided interval.

    The interval adds, in quadrature, the binomial noise of a window of `n` images around the estimate
    (``sqrt(p (1 - p) / n)``: the true accuracy of a finite window varies that much even when the estimator is
    exact) and the noise of the held-out values the method was calibrated on (``sqrt(a (1 - a) / n_heldout)``).
    It does not include the estimator's bias under a shift it cannot see (see the benchmark for that).
    """

    method: str
    estimate: float
    lower: float
    upper: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interval(method: str, estimate: float, n: int, calibration_var: float, z: float) -> AccuracyEstimate:
    p = min(max(estimate, 0.0), 1.0)
    half = z * math.sqrt(p * (1 - p) / n + calibration_var)
    return AccuracyEstimate(method, p, max(0.0, p - half), min(1.0, p + half), n)


@dataclass(frozen=True)
class EstimationReference:
    """What label-free accuracy estimation needs from the held-out split, as the model card stores it.

    Fit once at the end of training with `fit` (held-out logits and labels), then call `estimate` once per
    window of softmax outputs. Pitfall: the estimates assume the shift changes inputs, not the meaning of the
    classes; a label shift moves them too (see BBSE in `explain` for that case).
    """

    temperature: float
    atc_threshold_mc: float
    atc_threshold_ne: float
    heldout_accuracy: float
    heldout_confidence: float
    n_heldout: int

    @classmethod
    def fit(cls, logits: Tensor, labels: Tensor) -> EstimationReference:
        """Fit temperature scaling, then the ATC thresholds and average confidence on the scaled probabilities.

        Args:
            logits: (N, C) held-out logits (or log-probabilities).
            labels: (N,) held-out class indices.
        """
        temperature = fit_temperature(logits, labels)
        probs = (logits.detach().float().cpu() / temperature).softmax(dim=1)
        correct = probs.argmax(dim=1) == labels.detach().cpu()
        return cls(
            temperature=temperature,
            atc_threshold_mc=atc_threshold(confidence_scores(probs, "max_confidence"), correct),
            atc_threshold_ne=atc_threshold(confidence_scores(probs, "negative_entropy"), correct),
            heldout_accuracy=float(correct.float().mean()),
            heldout_confidence=float(probs.amax(dim=1).mean()),
            n_heldout=len(labels),
        )

    def estimate(self, probs: Tensor, z: float = 1.96) -> dict[str, AccuracyEstimate]:
        """ATC-MC, ATC-NE, AC and DoC estimates for one window of (N, C) softmax rows (unscaled, as served).

        `z` sets the interval's width (1.96: about 95%).
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
        return {m: _interval(m, v, n, calibration_var, z) for m, v in values.items()}

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers, for `torch.load(weights_only=True)`."""
        return {"version": ESTIMATION_VERSION} | asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EstimationReference:
        if state.get("version") != ESTIMATION_VERSION:
            raise ValueError(
                f"Estimation reference version {state.get('version')} is not supported "
                f"(expected {ESTIMATION_VERSION}); retrain to store a current one."
            )
        return cls(**{k: v for k, v in state.items() if k != "version"})


def estimate_accuracy(state: dict[str, Any], probs: Tensor, z: float = 1.96) -> dict[str, dict[str, Any]]:
    """One call per window: every method's estimate as plain dicts, from the card's `estimation` state."""
    reference = EstimationReference.from_state_dict(state)
    return {m: e.to_dict() for m, e in reference.estimate(probs, z).items()}


class HarmAlert:
    """Alert when estimated accuracy stays more than `drop_points` below the held-out accuracy for `windows`
    consecutive windows: harm, as opposed to a (possibly harmless) change in distribution.

    Feed one estimate per window with `update`; it returns whether the alert is on. A window back above the
    line resets the count. State is plain numbers (`state_dict`), so a restarted monitor resumes it.
    """

    def __init__(self, heldout_accuracy: float, drop_points: float = 5.0, windows: int = 2) -> None:
        """Args:
        heldout_accuracy: accuracy on the held-out split, a fraction in [0, 1].
        drop_points: alert when the estimate is more than this many percentage points below it.
        windows: consecutive windows the drop must last.
        """
        if not 0.0 <= heldout_accuracy <= 1.0:
            raise ValueError(f"heldout_accuracy must be a fraction in [0, 1], got {heldout_accuracy}.")
        if drop_points <= 0:
            raise ValueError(f"drop_points must be > 0 (percentage points), got {drop_points}.")
        if windows < 1:
            raise ValueError(f"windows must be >= 1, got {windows}.")
        self.heldout_accuracy = heldout_accuracy
        self.drop_points = drop_points
        self.windows = windows
        self.consecutive = 0

    def drop(self, estimate: float) -> float:
        """Percentage points below the held-out accuracy (negative when above)."""
        return 100.0 * (self.heldout_accuracy - estimate)

    def update(self, estimate: float) -> bool:
        """Record one window's estimated accuracy (a fraction); True while the alert is on."""
        self.consecutive = self.consecutive + 1 if self.drop(estimate) > self.drop_points else 0
        return self.alerting

    @property
    def alerting(self) -> bool:
        return self.consecutive >= self.windows

    def state_dict(self) -> dict[str, Any]:
        return {
            "heldout_accuracy": self.heldout_accuracy,
            "drop_points": self.drop_points,
            "windows": self.windows,
            "consecutive": self.consecutive,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> HarmAlert:
        alert = cls(state["heldout_accuracy"], state["drop_points"], state["windows"])
        alert.consecutive = int(state["consecutive"])
        return alert


def window_estimator(state: dict[str, Any], method: Method = "atc_mc") -> Callable[..., float]:
    """A per-window estimator for a fleet monitor: `(probs (n, C) array, *context) -> estimated top-1`.

    Args:
        state: the model card's `estimation` field.
        method: which estimate to return (ATC-MC by default; see `EstimationReference.estimate`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    reference = EstimationReference.from_state_dict(state)

    def estimate(probs: Any, *_: Any) -> float:
        return reference.estimate(torch.as_tensor(probs, dtype=torch.float32))[method].estimate

    return estimate
