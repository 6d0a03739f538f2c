"""The champion/challenger gate: evaluate two checkpoints on the same labelled images the same way, decide.

Both models go through the inference core (`load_for_inference`, each card's eval transform, its TTA flip),
never Lightning, so the gate measures exactly what the server would answer. The candidate passes when its
top-1 is at least the champion's minus `tolerance`, or, with no champion, at least `min_accuracy`; given an
inference log, it must also be no worse on the production window (`release/production.py`, `with_production`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.data.images import read_image
from imagenette_drift.data.layout import Split
from imagenette_drift.errors import BadDataError

if TYPE_CHECKING:
    from imagenette_drift.release.production import WindowComparison


# The gate's defaults (`imagenette gate --tolerance/--min_accuracy` take them from here).
DEFAULT_TOLERANCE = 0.005  # 0.5 points of top-1
DEFAULT_MIN_ACCURACY = 0.85


@dataclass(frozen=True)
class Evaluation:
    """Top-1/top-5 accuracy (fractions) and mean NLL (nats) of one model on `images` labelled images."""

    name: str
    sha256: str
    top1: float
    top5: float
    nll: float
    images: int


@dataclass(frozen=True)
class GateDecision:
    """The verdict, its one-line reason, both evaluations (champion None when there is none) and, when the gate
    was given a log, the comparison on the production window."""

    passed: bool
    reason: str
    candidate: Evaluation
    champion: Evaluation | None
    tolerance: float
    min_accuracy: float
    production: WindowComparison | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, production=None))
        data["production"] = None if self.production is None else self.production.to_dict()
        return data


def evaluate(model: InferenceModel, split: Split, name: str, batch_size: int = 64) -> Evaluation:
    """Accuracy of `model` on `split` (labels index the card's classes); images decoded and transformed once
    per batch, predictions as the server makes them."""
    if len(split) == 0:
        raise BadDataError("the test set holds no images.")
    transform = model.transform
    correct1 = correct5 = 0
    nll = 0.0
    for start in range(0, len(split), batch_size):
        paths = split.paths[start : start + batch_size]
        labels = torch.tensor(split.labels[start : start + batch_size])
        probs = model.predict_proba(torch.stack([transform(read_image(p)) for p in paths])).float()
        top = probs.topk(min(5, probs.shape[1]), dim=1).indices
        correct1 += int((top[:, 0] == labels).sum())
        correct5 += int((top == labels[:, None]).any(dim=1).sum())
        nll += float(-probs.gather(1, labels[:, None]).clamp_min(1e-12).log().sum())
    n = len(split)
    return Evaluation(name, model.sha256, correct1 / n, correct5 / n, nll / n, n)


def decide(
    candidate: Evaluation,
    champion: Evaluation | None,
    tolerance: float = DEFAULT_TOLERANCE,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
) -> GateDecision:
    """Pass when candidate top-1 >= champion top-1 - tolerance (no champion: >= min_accuracy)."""
    if champion is None:
        passed = candidate.top1 >= min_accuracy
        relation = ">=" if passed else "<"
        reason = (
            f"candidate top-1 {candidate.top1:.2%} {relation} the minimum {min_accuracy:.2%} (no champion)"
        )
    else:
        bar = champion.top1 - tolerance
        passed = candidate.top1 >= bar - 1e-12
        relation = ">=" if passed else "<"
        reason = (
            f"candidate top-1 {candidate.top1:.2%} {relation} champion {champion.top1:.2%} - tolerance "
            f"{tolerance * 100:.2f} pt = {bar:.2%} on {candidate.images} images"
        )
    return GateDecision(passed, reason, candidate, champion, tolerance, min_accuracy)


def with_production(decision: GateDecision, comparison: WindowComparison) -> GateDecision:
    """The test-set decision joined with the production window's: refused when the candidate is worse there.

    A window that could not be compared (no logged images) leaves the test-set verdict as it is; the reason and
    the table say that it was not compared. The reason names what failed first.
    """
    passed = decision.passed and comparison.passed is not False
    parts = [decision.reason, comparison.reason]
    if decision.passed and comparison.passed is False:
        parts.reverse()  # a refusal leads with the check that failed
    return replace(decision, passed=passed, reason="; ".join(parts), production=comparison)


def format_table(decision: GateDecision) -> str:
    """A side-by-side markdown table of both evaluations and the verdict (for `cml comment create`)."""
    cand, champ = decision.candidate, decision.champion
    rows = [("top-1", "top1", True), ("top-5", "top5", True), ("NLL (nats)", "nll", False)]
    header = "| metric | champion | candidate | candidate - champion |\n| --- | ---: | ---: | ---: |"
    lines = [
        "## Release gate",
        "",
        f"**{'PASS' if decision.passed else 'REFUSED'}**: {decision.reason}.",
        "",
        header,
        f"| model | {_ident(champ)} | {_ident(cand)} | |",
    ]
    for label, key, percent in rows:
        c = getattr(cand, key)
        p = None if champ is None else getattr(champ, key)
        fmt = (lambda v: f"{v:.2%}") if percent else (lambda v: f"{v:.4f}")
        diff = "" if p is None else (f"{(c - p) * 100:+.2f} pt" if percent else f"{c - p:+.4f}")
        lines.append(f"| {label} | {'-' if p is None else fmt(p)} | {fmt(c)} | {diff} |")
    lines.append(f"| images | {'-' if champ is None else champ.images} | {cand.images} | |")
    if decision.production is not None:
        from imagenette_drift.release.production import format_window_table

        lines += ["", format_window_table(decision.production).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _ident(evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return "none"
    return f"`{evaluation.sha256[:12]}` ({Path(evaluation.name).name})"


def write_outputs(decision: GateDecision, outputs: list[Path]) -> None:
    """Write the table (`.md`) or the decision (`.json`) to each path, atomically."""
    from imagenette_drift.io import write_text_atomic

    for path in outputs:
        if path.suffix == ".json":
            write_text_atomic(path, json.dumps(decision.to_dict(), indent=2) + "\n")
        else:
            write_text_atomic(path, format_table(decision))
