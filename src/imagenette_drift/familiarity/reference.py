"""Per-request familiarity: energy score and k-NN distance against a reference bank stored in the model card.

- Energy (Liu et al., NeurIPS 2020, "Energy-based Out-of-distribution Detection"): ``E(x) = -T logsumexp(f(x) / T)``
  of the logits, T = 1; higher means less familiar.
- k-NN distance (Sun et al., ICML 2022, "Out-of-Distribution Detection with Deep Nearest Neighbors"): Euclidean
  distance from the L2-normalised embedding to its k-th nearest L2-normalised reference embedding; higher means
  less familiar.

Logits are recomputed from the embedding with the classifier head stored beside the bank, so only the
embedding is needed (every serving runtime gives it). Thresholds are the 95th percentiles of the held-out
split's scores (95% of in-distribution images are "familiar"); held-out k-NN distances are leave-one-out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from imagenette_drift.card import check_field_version

__all__ = ["FamiliarityReference", "energy_score", "knn_distance"]

Rule = Literal["knn", "energy", "either"]
FAMILIARITY_VERSION = 1


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """(N, C) logits -> (N,) energies ``-T logsumexp(logits / T)`` (Liu et al. 2020); higher = less familiar."""
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=1)


def knn_distance(embeddings: Tensor, bank: Tensor, k: int = 1, exclude_self: bool = False) -> Tensor:
    """(N,) distance from each L2-normalised embedding to its k-th nearest row of an L2-normalised bank.

    Args:
        embeddings: (N, D) float embeddings (normalised here).
        bank: (M, D) reference embeddings, already L2-normalised.
        k: which neighbour (1 = nearest), k <= M (k < M with exclude_self).
        exclude_self: `embeddings` are the bank's own rows (leave-one-out: row i ignores bank row i).
    """
    if not 1 <= k <= len(bank) - int(exclude_self):
        raise ValueError(
            f"k must be in [1, {len(bank) - int(exclude_self)}] for a bank of {len(bank)}, got {k}."
        )
    z = F.normalize(embeddings.float(), dim=1)
    similarity = z @ bank.float().T  # cosine similarity; ||a - b||^2 = 2 - 2 cos for unit vectors
    if exclude_self:
        similarity.fill_diagonal_(-2.0)
    kth = similarity.topk(k, dim=1).values[:, -1]
    return (2.0 - 2.0 * kth).clamp_min(0.0).sqrt()


@dataclass
class FamiliarityReference:
    """The bank, classifier head and thresholds that score a request's familiarity, as the card stores them.

    Fit with `fit` on held-out embeddings; `score` maps (N, D) embeddings to per-image scores. The bank is kept
    in float16 in the card (a 1000 x 512 bank is 1 MB) and used in float32.
    """

    bank: Tensor  # (M, D) L2-normalised
    head_weight: Tensor | None  # (C, D) of a linear classifier head, or None (no energy)
    head_bias: Tensor | None  # (C,)
    k: int
    knn_threshold: float
    energy_threshold: float | None
    rule: Rule = "knn"
    quantile: float = 0.95
    bank_paths: list[str] | None = None  # the image of each bank row (relative to the data root), if known
    _bank32: Tensor | None = field(default=None, init=False, repr=False, compare=False)  # float32 copy

    @classmethod
    def fit(
        cls,
        embeddings: Tensor,
        head_weight: Tensor | None,
        head_bias: Tensor | None,
        bank_size: int = 1000,
        k: int = 5,
        quantile: float = 0.95,
        rule: Rule = "knn",
        seed: int = 0,
        paths: Sequence[str] | None = None,
    ) -> FamiliarityReference:
        """Keep up to `bank_size` held-out embeddings (seeded) as the bank; set thresholds at `quantile`.

        Args:
            embeddings: (N, D) held-out embeddings, N >= 2.
            head_weight, head_bias: the linear classifier head (None: energy is not computed).
            bank_size: most embeddings kept in the bank.
            k: the neighbour whose distance is the score (capped at bank size - 1).
            quantile: fraction of held-out images scored as familiar.
            rule: which score(s) decide `unfamiliar`: k-NN distance, energy, or either one.
            paths: (N,) the image of each embedding, stored for the bank rows kept (to show them later).
        """
        if len(embeddings) < 2:
            raise ValueError(
                f"A familiarity bank needs at least 2 held-out embeddings, got {len(embeddings)}."
            )
        if not 0.5 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}.")
        if rule != "knn" and head_weight is None:
            raise ValueError(f"rule={rule!r} needs the classifier head for energy; use rule='knn'.")
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(embeddings), generator=generator)[:bank_size]
        emb = embeddings[keep].detach().float().cpu()
        bank = F.normalize(emb, dim=1).half()
        k = max(1, min(k, len(bank) - 1))
        knn = knn_distance(emb, bank, k, exclude_self=True)
        reference = cls(
            bank=bank,
            head_weight=None if head_weight is None else head_weight.detach().float().cpu(),
            head_bias=None if head_bias is None else head_bias.detach().float().cpu(),
            k=k,
            knn_threshold=float(knn.quantile(quantile)),
            energy_threshold=None,
            rule=rule,
            quantile=quantile,
            bank_paths=None
            if paths is None or len(paths) != len(embeddings)
            else [str(paths[i]) for i in keep],
        )
        if reference.head_weight is not None:
            energy = energy_score(reference.logits(embeddings.detach().float().cpu()))
            reference.energy_threshold = float(energy.quantile(quantile))
        return reference

    def logits(self, embeddings: Tensor) -> Tensor:
        """(N, D) embeddings -> (N, C) logits of the stored linear head."""
        if self.head_weight is None:
            raise ValueError("This familiarity reference has no classifier head; energy is unavailable.")
        return torch.addmm(self.head_bias, embeddings.float(), self.head_weight.T)

    def score(self, embeddings: Tensor | np.ndarray) -> dict[str, Tensor]:
        """(N, D) embeddings -> {"knn_distance": (N,), "energy": (N,) or absent, "unfamiliar": (N,) bool}."""
        emb = torch.as_tensor(embeddings).float()
        if emb.ndim != 2 or emb.shape[1] != self.bank.shape[1]:
            raise ValueError(
                f"embeddings must be (N, {self.bank.shape[1]}) from the card's model, got {tuple(emb.shape)}."
            )
        if self._bank32 is None:
            self._bank32 = self.bank.float()
        out = {"knn_distance": knn_distance(emb, self._bank32, self.k)}
        knn_out = out["knn_distance"] > self.knn_threshold
        if self.head_weight is None:
            out["unfamiliar"] = knn_out
            return out
        out["energy"] = energy_score(self.logits(emb))
        energy_out = out["energy"] > self.energy_threshold
        out["unfamiliar"] = {"knn": knn_out, "energy": energy_out, "either": knn_out | energy_out}[self.rule]
        return out

    def score_json(self, embeddings: Tensor | np.ndarray) -> list[dict[str, Any]]:
        """One `{"knn_distance", "energy", "unfamiliar"}` dict per row (energy None without a head)."""
        scores = self.score(embeddings)
        energy = scores.get("energy")
        return [
            {
                "knn_distance": float(scores["knn_distance"][i]),
                "energy": None if energy is None else float(energy[i]),
                "unfamiliar": bool(scores["unfamiliar"][i]),
            }
            for i in range(len(scores["knn_distance"]))
        ]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers only, for `torch.load(weights_only=True)`; the bank stays float16."""
        return {
            "version": FAMILIARITY_VERSION,
            "bank": self.bank.half(),
            "head_weight": self.head_weight,
            "head_bias": self.head_bias,
            "k": self.k,
            "knn_threshold": self.knn_threshold,
            "energy_threshold": self.energy_threshold,
            "rule": self.rule,
            "quantile": self.quantile,
            "bank_paths": self.bank_paths,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FamiliarityReference:
        check_field_version(state, "Familiarity", {FAMILIARITY_VERSION})
        return cls(**{k: v for k, v in state.items() if k != "version"})
