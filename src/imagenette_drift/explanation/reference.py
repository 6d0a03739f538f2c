"""An explanation for a drifting window: which classes moved, what the shift looks like, which images drive it.

- Class shares: the window's predicted class shares against the held-out split's, with Pearson chi-squared
  residuals ``(observed - expected) / sqrt(expected)``, and BBSE (Lipton et al., ICML 2018, "Detecting and
  Correcting for Label Shift with Black Box Predictors"): the true class shares ``q`` solve ``C q = mu``, where
  ``C[i, j] = P(predicted i | true j)`` is the held-out confusion matrix and ``mu`` the window's predicted shares.
- Corruption signatures: the shift that each of the 19 ImageNet-C corruptions causes in the input statistics
  (`image_stats`) and in the mean embedding, standardised by the held-out spread, computed once per checkpoint
  on held-out images; a window's shift is matched to them by cosine similarity (the mean of the two parts).
- Witness images: the window's images with the largest MMD witness value
  ``w(x) = mean_{j != x} k(x, window_j) - mean_i k(x, reference_i)`` (Gretton et al., JMLR 2012, Sec. 2.3), each with
  its nearest reference embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from imagenette_drift.card import check_field_version
from imagenette_drift.drift.functional import gaussian_kernel, squared_distances

__all__ = [
    "ExplanationReference",
    "bbse_shares",
    "class_shift",
    "compute_signatures",
    "match_signatures",
    "shift_vector",
    "witness_images",
]

EXPLANATION_VERSION = 1
MIN_SIMILARITY = 0.6  # below this, a window's shift is "no known signature"


def bbse_shares(predicted_shares: Tensor, confusion: Tensor) -> Tensor:
    """BBSE estimate (C,) of the true class shares of a window (Lipton et al. 2018).

    Args:
        predicted_shares: (C,) fraction of the window predicted as each class.
        confusion: (C, C) held-out counts, ``confusion[i, j]`` = images of true class j predicted as i.

    The linear system is solved by least squares (a singular matrix, e.g. a class never predicted, still
    gives an answer); negative shares are clipped to 0 and the result renormalised to sum to 1.
    """
    counts = confusion.double()
    column = counts.sum(dim=0, keepdim=True).clamp_min(1.0)
    conditional = counts / column  # P(pred i | true j)
    q = torch.linalg.lstsq(conditional, predicted_shares.double().unsqueeze(1)).solution.squeeze(1)
    q = q.clamp_min(0.0)
    return (q / q.sum().clamp_min(1e-12)).float()


def class_shift(predicted: Tensor, reference_shares: Tensor, confusion: Tensor | None = None) -> list[dict]:
    """Per class: window share, reference share, chi-squared residual and (with `confusion`) the BBSE share.

    Args:
        predicted: (N,) int64 predicted classes of the window.
        reference_shares: (C,) predicted class shares on the held-out split.
        confusion: (C, C) held-out confusion counts (rows predicted, columns true), or None.
    Returns one dict per class, in class order: {"class", "share", "reference_share", "residual",
    "bbse_share"} (bbse_share None without a confusion matrix). The residual is ``(observed - expected) /
    sqrt(expected)`` of the window's count; with `confusion`, expected from the pooled held-out and window
    counts (the chi-squared homogeneity test's table; 0 for a class neither predicts), else from
    `reference_shares`.
    """
    num_classes = len(reference_shares)
    n = len(predicted)
    counts = torch.bincount(predicted.long().cpu(), minlength=num_classes).double()
    shares = counts / max(n, 1)
    if confusion is not None:
        # The window's Pearson residuals in the 2 x C homogeneity table of the label-shift test: expected counts
        # from the pooled shares, so a class the held-out split never predicted has a finite residual.
        reference_counts = confusion.cpu().double().sum(dim=1)
        pooled = (reference_counts + counts) / (reference_counts.sum() + n)
        expected = pooled * n
    else:
        expected = (reference_shares.double().cpu() * n).clamp_min(1e-9)
    residual = torch.where(expected > 0, (counts - expected) / expected.clamp_min(1e-12).sqrt(), 0.0)
    bbse = None if confusion is None else bbse_shares(shares, confusion.cpu())
    return [
        {
            "class": c,
            "share": float(shares[c]),
            "reference_share": float(reference_shares[c]),
            "residual": float(residual[c]),
            "bbse_share": None if bbse is None else float(bbse[c]),
        }
        for c in range(num_classes)
    ]


def shift_vector(stats: Tensor, embeddings: Tensor, reference: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """A sample's standardised mean shift from the held-out split: (input-statistics part, embedding part).

    Args:
        stats: (N, 12) input statistics (`image_statistics`).
        embeddings: (N, D) embeddings.
        reference: {"stats_mean", "stats_std", "emb_mean", "emb_std"} of the held-out split.
    """
    d_stats = (stats.float().mean(0) - reference["stats_mean"].float()) / reference["stats_std"].float()
    d_emb = (embeddings.float().mean(0) - reference["emb_mean"].float()) / reference["emb_std"].float()
    return d_stats, d_emb


def match_signatures(
    shift: tuple[Tensor, Tensor], signatures: dict[str, dict[str, Tensor]], top: int = 3
) -> list[dict[str, Any]]:
    """The `top` corruptions whose signature is most similar to `shift`: [{"corruption", "similarity"}].

    Similarity is the mean of the cosine similarities of the two parts (input statistics, embedding), in [-1, 1].
    """
    d_stats, d_emb = shift
    scored = []
    for name, sig in signatures.items():
        cos_stats = torch.nn.functional.cosine_similarity(d_stats, sig["stats"].float(), dim=0)
        cos_emb = torch.nn.functional.cosine_similarity(d_emb, sig["emb"].float(), dim=0)
        scored.append({"corruption": name, "similarity": float((cos_stats + cos_emb) / 2)})
    return sorted(scored, key=lambda s: -s["similarity"])[:top]


def witness_images(window: Tensor, reference: Tensor, bandwidth: float, top: int = 3) -> list[dict[str, Any]]:
    """The window rows with the largest MMD witness values, each with its nearest reference row.

    Args:
        window: (N, D) window embeddings.
        reference: (M, D) reference embeddings of the MMD detector.
        bandwidth: the detector's Gaussian kernel bandwidth.
    Returns [{"index", "witness", "nearest_reference"}], largest witness first (index into the window).
    """
    window = window.float()
    reference = reference.float()
    k_ww = gaussian_kernel(window, window, bandwidth).fill_diagonal_(0.0)  # each row's own term left out
    k_wr = gaussian_kernel(window, reference, bandwidth)
    witness = k_ww.sum(dim=1) / max(len(window) - 1, 1) - k_wr.mean(dim=1)
    nearest = squared_distances(window, reference).argmin(dim=1)
    order = witness.argsort(descending=True)[: min(top, len(window))]
    return [
        {"index": int(i), "witness": float(witness[i]), "nearest_reference": int(nearest[i])} for i in order
    ]


@dataclass
class ExplanationReference:
    """What explanations need from the held-out split, as the model card stores it.

    `confusion` (C, C) counts (rows predicted, columns true); `predicted_shares` (C,); standardisation of input
    statistics and embeddings; `signatures` {corruption: {"stats": (12,), "emb": (D,)}} (empty when the
    corruptions extra was missing or signatures were disabled); `severity` the signatures were computed at.
    """

    confusion: Tensor
    predicted_shares: Tensor
    stats_mean: Tensor
    stats_std: Tensor
    emb_mean: Tensor
    emb_std: Tensor
    signatures: dict[str, dict[str, Tensor]]
    severity: int = 3

    @classmethod
    def fit(
        cls, probs: Tensor, labels: Tensor, image_stats: Tensor, embeddings: Tensor
    ) -> ExplanationReference:
        """Held-out confusion matrix, predicted shares and standardisation; signatures come later."""
        num_classes = probs.shape[1]
        predicted = probs.argmax(dim=1).cpu()
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        confusion.index_put_(
            (predicted, labels.long().cpu()), torch.ones(len(predicted), dtype=torch.int64), accumulate=True
        )
        emb = embeddings.float().cpu()
        stats = image_stats.float().cpu()
        return cls(
            confusion=confusion,
            predicted_shares=torch.bincount(predicted, minlength=num_classes).float() / len(predicted),
            stats_mean=stats.mean(0),
            stats_std=stats.std(0).clamp_min(1e-6),
            emb_mean=emb.mean(0),
            emb_std=emb.std(0).clamp_min(1e-6),
            signatures={},
        )

    @property
    def standardisation(self) -> dict[str, Tensor]:
        return {
            "stats_mean": self.stats_mean,
            "stats_std": self.stats_std,
            "emb_mean": self.emb_mean,
            "emb_std": self.emb_std,
        }

    def add_signature(
        self, name: str, stats: Tensor, embeddings: Tensor, clean: tuple[Tensor, Tensor]
    ) -> None:
        """Store corruption `name`'s signature: its shift minus the shift of the same images uncorrupted."""
        d_stats, d_emb = shift_vector(stats, embeddings, self.standardisation)
        self.signatures[name] = {"stats": d_stats - clean[0], "emb": (d_emb - clean[1]).half()}

    def explain(
        self, probs: Tensor, image_stats: Tensor | None, embeddings: Tensor, top: int = 3
    ) -> dict[str, Any]:
        """{"classes": class_shift rows, "signatures": top matches or [], "known_signature": bool} of one window."""
        out: dict[str, Any] = {
            "classes": class_shift(probs.argmax(dim=1), self.predicted_shares, self.confusion),
            "signatures": [],
            "known_signature": False,
        }
        if image_stats is not None and self.signatures:
            matches = match_signatures(
                shift_vector(image_stats, embeddings, self.standardisation), self.signatures, top
            )
            out["signatures"] = matches
            out["known_signature"] = bool(matches) and matches[0]["similarity"] >= MIN_SIMILARITY
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": EXPLANATION_VERSION,
            "confusion": self.confusion,
            "predicted_shares": self.predicted_shares,
            "stats_mean": self.stats_mean,
            "stats_std": self.stats_std,
            "emb_mean": self.emb_mean,
            "emb_std": self.emb_std,
            "signatures": {k: dict(v) for k, v in self.signatures.items()},
            "severity": self.severity,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ExplanationReference:
        check_field_version(state, "Explanation", {EXPLANATION_VERSION})
        return cls(**{k: v for k, v in state.items() if k != "version"})


def compute_signatures(
    reference: ExplanationReference,
    images: Tensor,
    embed: Callable[[Tensor], Tensor],
    severity: int = 3,
    corruptions: Sequence[str] | None = None,
    batch_size: int = 64,
) -> ExplanationReference:
    """Fill `reference.signatures` from held-out images: each corruption's shift minus the clean images' shift.

    Args:
        images: (N, 3, S, S) uint8 held-out images after the eval transform.
        embed: maps a uint8 batch to (B, D) embeddings (the checkpoint's network, in eval mode).
        severity: corruption severity of the signatures (1-5).
        corruptions: names to compute (default: all 19 of `corruptions.CORRUPTIONS`; needs the extra).
    Returns `reference`, updated in place.
    """
    from imagenette_drift.corruptions import CORRUPTIONS, CorruptionTransform
    from imagenette_drift.drift.image_stats import image_statistics

    def stats_and_embeddings(batch: Tensor) -> tuple[Tensor, Tensor]:
        parts = [(image_statistics(b), embed(b).float().cpu()) for b in batch.split(batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    clean = shift_vector(*stats_and_embeddings(images), reference.standardisation)
    for name in corruptions or CORRUPTIONS:
        transform = CorruptionTransform(name, severity)
        corrupted = torch.stack([transform(image) for image in images])
        reference.add_signature(name, *stats_and_embeddings(corrupted), clean=clean)
    reference.severity = severity
    return reference
