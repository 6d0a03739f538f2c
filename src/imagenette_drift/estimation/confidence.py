"""Accuracy from confidence: temperature scaling and ATC's thresholds, pure torch on softmax rows.

- temperature scaling (Guo et al., ICML 2017): one scalar T fitted by NLL on the held-out split;
  probabilities are rescaled as ``softmax(log p / T)``, which equals ``softmax(logits / T)``.
- ATC, average thresholded confidence (Garg et al., ICLR 2022): a threshold ``t`` on a confidence score is set
  on the held-out split so that the fraction of scores above ``t`` equals the held-out accuracy; a window's
  estimated accuracy is its fraction above ``t``. Two scores: max confidence (ATC-MC) and negative entropy
  (ATC-NE).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["apply_temperature", "atc_threshold", "confidence_scores", "fit_temperature"]

Score = Literal["max_confidence", "negative_entropy"]


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
