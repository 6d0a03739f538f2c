"""One call per window: estimated accuracy with the harm alert, and an explanation when the window drifts.

`WindowAssessor.from_card(card)` reads the checkpoint's `estimation`, `familiarity`, `explanation` and `drift`
card fields; `assess(probs, embeddings, image_stats, drifting)` answers for one window. This is what
`imagenette drift` and a fleet monitor call per window; it keeps the harm alert's state between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from imagenette_drift.card import ModelCard
from imagenette_drift.estimation.harm import HarmAlert
from imagenette_drift.estimation.reference import CONFIDENCE_METHODS, EstimationReference
from imagenette_drift.explanation.reference import ExplanationReference, witness_images
from imagenette_drift.familiarity.reference import FamiliarityReference

__all__ = ["NO_SIGNATURE", "WindowAssessor"]

NO_SIGNATURE = "no known signature"


@dataclass
class WindowAssessor:
    """Per-window accuracy estimates, harm alert and explanations from a model card's stored references.

    Pitfall: the harm alert counts consecutive windows, so feed windows in time order, one `assess` per window.
    """

    class_names: tuple[str, ...]
    estimation: EstimationReference | None
    explanation: ExplanationReference | None
    familiarity: FamiliarityReference | None
    harm: HarmAlert | None
    mmd_reference: Tensor | None
    bandwidth: float | None
    harm_method: str = "atc_mc"  # set by `from_fields` to the card's primary method unless one is given
    residual_threshold: float = 3.0
    top: int = 3

    @classmethod
    def from_card(
        cls,
        card: ModelCard,
        drop_points: float = 5.0,
        harm_windows: int = 2,
        harm_method: str | None = None,
        residual_threshold: float = 3.0,
    ) -> WindowAssessor:
        """Args:
        card: a loaded model card (fields missing from older checkpoints are simply skipped).
        drop_points: the harm alert fires when the estimate is more than this many points below held-out.
        harm_windows: consecutive windows the drop must last.
        harm_method: the estimate the alert watches (one of `estimation.METHODS`; default: the card's
            primary method, COT, or ATC-MC on a card without class shares).
        residual_threshold: |chi-squared residual| from which a class counts as moved.
        """
        return cls.from_fields(
            card.class_names,
            card.drift,
            card.estimation,
            card.familiarity,
            card.explanation,
            drop_points=drop_points,
            harm_windows=harm_windows,
            harm_method=harm_method,
            residual_threshold=residual_threshold,
        )

    @classmethod
    def from_fields(
        cls,
        class_names: tuple[str, ...],
        drift: dict[str, Any] | None,
        estimation: dict[str, Any] | None = None,
        familiarity: dict[str, Any] | None = None,
        explanation: dict[str, Any] | None = None,
        drop_points: float = 5.0,
        harm_windows: int = 2,
        harm_method: str | None = None,
        residual_threshold: float = 3.0,
    ) -> WindowAssessor:
        """The same from the card's field states (e.g. in the drift callback, before a card exists)."""
        reference = EstimationReference.from_state_dict(estimation) if estimation else None
        available = CONFIDENCE_METHODS if reference is None else reference.methods
        if harm_method is not None and harm_method not in available:
            raise ValueError(
                f"harm_method must be one of {', '.join(available)} for this model card; got {harm_method!r}."
            )
        harm_method = harm_method or (reference.primary if reference is not None else "atc_mc")
        mmd = (drift or {}).get("mmd") or {}
        return cls(
            class_names=tuple(class_names),
            estimation=reference,
            explanation=ExplanationReference.from_state_dict(explanation) if explanation else None,
            familiarity=FamiliarityReference.from_state_dict(familiarity) if familiarity else None,
            harm=None
            if reference is None
            else HarmAlert(reference.heldout_accuracy, drop_points, harm_windows),
            mmd_reference=mmd.get("reference"),
            bandwidth=mmd.get("bandwidth"),
            harm_method=harm_method,
            residual_threshold=residual_threshold,
        )

    def assess(
        self,
        probs: Tensor,
        embeddings: Tensor,
        image_stats: Tensor | None = None,
        drifting: bool = True,
        covariate_shift: bool | None = None,
    ) -> dict[str, Any]:
        """{"accuracy": {method: {"estimate", "lower", "upper", "n"}}, "heldout_accuracy", "harm",
        "drop_points", "explanation"} for one window of (N, C) probs and (N, D) embeddings (in time order).

        `explanation` is None unless `drifting` (the window's drift tests flagged it); corruption signatures are
        matched only under `covariate_shift` (the MMD or input-statistics test flagged it; default: `drifting`),
        since a shift of the outputs alone is no change of the inputs to name.
        """
        out: dict[str, Any] = {"accuracy": None, "heldout_accuracy": None, "harm": None, "drop_points": None}
        if self.estimation is not None and self.harm is not None:
            estimates = self.estimation.estimate(probs)
            watched = estimates[self.harm_method].estimate
            out |= {
                "accuracy": {m: e.to_dict() for m, e in estimates.items()},
                "heldout_accuracy": self.estimation.heldout_accuracy,
                "harm": self.harm.update(watched),
                "drop_points": self.harm.drop(watched),
            }
        covariate = drifting if covariate_shift is None else covariate_shift
        out["explanation"] = (
            self.explain(probs, embeddings, image_stats if covariate else None) if drifting else None
        )
        return out

    def explain(
        self, probs: Tensor, embeddings: Tensor, image_stats: Tensor | None = None
    ) -> dict[str, Any] | None:
        """Which classes moved, what the shift looks like and which images drive it (None without a reference).

        Without `image_stats` no signature is matched ("no known signature").
        """
        if self.explanation is None:
            return None
        base = self.explanation.explain(probs, image_stats, embeddings, self.top)
        classes = [row | {"label": self.class_names[row["class"]]} for row in base["classes"]]
        moved = sorted(
            (row for row in classes if abs(row["residual"]) >= self.residual_threshold),
            key=lambda row: -abs(row["residual"]),
        )
        return {
            "classes": classes,
            "moved_classes": [row["label"] for row in moved],
            "signatures": base["signatures"],
            "looks_like": [m["corruption"] for m in base["signatures"]]
            if base["known_signature"]
            else NO_SIGNATURE,
            "witnesses": self._witnesses(embeddings),
        }

    def _witnesses(self, embeddings: Tensor) -> list[dict[str, Any]]:
        """Largest MMD witness rows of the window, each with its nearest familiarity-bank row (cosine)."""
        if self.mmd_reference is None or self.bandwidth is None or len(embeddings) < 2:
            return []
        rows = witness_images(embeddings, self.mmd_reference, float(self.bandwidth), self.top)
        if self.familiarity is None:
            return rows
        bank = self.familiarity.bank.float()
        paths = self.familiarity.bank_paths
        for row in rows:
            z = F.normalize(embeddings[row["index"]].float().unsqueeze(0), dim=1)
            nearest = int(torch.argmax(z @ bank.T))
            row["nearest_reference"] = nearest
            row["nearest_reference_path"] = paths[nearest] if paths else None
        return rows


def assess_windows(
    summary: dict[str, Any],
    assessor: WindowAssessor,
    embeddings: Tensor,
    probs: Tensor,
    image_stats: Tensor | None = None,
    seed: int = 0,
    shuffle: bool = True,
) -> dict[str, Any]:
    """Add estimates, harm and explanations to a `run_window_tests` summary (same windows, same order).

    Each row gains flat numbers (`acc_<method>`, `acc_<method>_lower/_upper`, `harm`, `drop_points`); the
    summary gains `accuracy` (held-out accuracy, mean estimate per method, harm) and `explanations` (one per
    drifting window; witness `index` values point into the tested images). Returns `summary`, updated.
    """
    from imagenette_drift.drift.windows import window_indices

    chunks = window_indices(len(embeddings), summary["window_size"], seed, shuffle)
    explanations = []
    for row, chunk in zip(summary["windows"], chunks, strict=True):
        drifting = any(v for k, v in row.items() if k.endswith("_drift"))
        covariate = bool(row.get("mmd_drift") or row.get("inputs_drift"))
        stats = None if image_stats is None else image_stats[chunk]
        result = assessor.assess(probs[chunk], embeddings[chunk], stats, drifting, covariate)
        for method, e in (result["accuracy"] or {}).items():
            row |= {
                f"acc_{method}": e["estimate"],
                f"acc_{method}_lower": e["lower"],
                f"acc_{method}_upper": e["upper"],
            }
        if result["harm"] is not None:
            row |= {"harm": result["harm"], "drop_points": result["drop_points"]}
        if result["explanation"] is not None:
            for witness in result["explanation"]["witnesses"]:
                witness["index"] = int(chunk[witness["index"]])
            explanations.append({"window": row["window"]} | result["explanation"])
    summary["explanations"] = explanations
    if assessor.estimation is not None and assessor.harm is not None:
        rows = summary["windows"]
        summary["accuracy"] = {
            "heldout": assessor.estimation.heldout_accuracy,
            "temperature": assessor.estimation.temperature,
            "methods": {m: sum(r[f"acc_{m}"] for r in rows) / len(rows) for m in assessor.estimation.methods},
            "harm_method": assessor.harm_method,
            "drop_points": assessor.harm.drop_points,
            "harm_after_windows": assessor.harm.windows,
            "harm_windows": sum(bool(r["harm"]) for r in rows),
            "harm": any(r["harm"] for r in rows),
        }
    return summary


def format_assessment(summary: dict[str, Any]) -> str:
    """Plain-text lines for the estimates, the harm alert and each drifting window's explanation."""
    lines = []
    accuracy = summary.get("accuracy")
    if accuracy:
        methods = "  ".join(f"{m}={v:.1%}" for m, v in accuracy["methods"].items())
        lines.append(f"estimated accuracy (mean over windows; held-out {accuracy['heldout']:.1%}): {methods}")
        lines.append(
            f"harm: {'YES' if accuracy['harm'] else 'no'} ({accuracy['harm_windows']} window(s) where "
            f"{accuracy['harm_method']} stayed > {accuracy['drop_points']:g} points below held-out for "
            f"{accuracy['harm_after_windows']} consecutive windows)"
        )
    explanations = summary.get("explanations") or []
    if not explanations:
        lines.append("explanation: nothing drifts (no window flagged by a drift test)")
    for e in explanations:
        looks = e["looks_like"]
        if looks != NO_SIGNATURE:
            looks = ", ".join(f"{m['corruption']} ({m['similarity']:.2f})" for m in e["signatures"])
        moved = ", ".join(e["moved_classes"]) or "none"
        lines.append(f"window {e['window']}: classes moved: {moved}; looks like: {looks}")
    return "\n".join(lines)
