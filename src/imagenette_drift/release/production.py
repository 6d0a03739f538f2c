"""Judge a candidate against the champion on a production window: both models replay the logged images.

Each model answers the window's logged images (`serve --log_images`) through the inference core, as the
gate's test-set evaluation does, and is measured with its own model card: estimated accuracy by COT (Lu et
al., NeurIPS 2023) when both cards store the held-out class shares, else by ATC-MC (Garg et al., ICLR 2022;
`estimation/`), one method for both, the share of images beyond its familiarity thresholds (k-NN
distance, Sun et al. 2022; `familiarity/reference.py`) and, where `/feedback` labels exist, realized accuracy.
The prediction shift between the two (share of images they label differently; total-variation distance of
their predicted class shares) is shown, not judged: a retrained model is expected to change its answers.

"No worse" on the window, with tolerance t (fraction, default 0.02 = 2 points): estimated accuracy
>= champion's - t, unfamiliar share <= champion's + t, and realized accuracy >= champion's - t when labelled
records exist; a criterion either model cannot measure (no estimation or familiarity reference in its card)
is listed as not compared. The 2-point default is about the calibration error ATC shows under shift in the
estimation benchmarks: a tighter bar would refuse candidates on estimator noise.

Pitfall: images the candidate was trained on (`imagenette export-labelled` takes the labelled ones from the
log) inflate its realized and estimated accuracy there: judge it on a window served after the export, or
leave those records out (`window.exclude_trained`, `imagenette gate --exclude_trained`).
Without logged images only the champion can be described (from what the log holds); the candidate is not
compared and the comparison says so.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from imagenette_drift.card import ModelCard
from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.data.images import pil_to_tensor
from imagenette_drift.estimation.reference import EstimationReference, shared_method
from imagenette_drift.familiarity.reference import FamiliarityReference
from imagenette_drift.monitoring.stats import decode_embeddings, list_matrix
from imagenette_drift.release.window import TRAINED_COLUMN, ProductionWindow

DEFAULT_WINDOW_TOLERANCE = 0.02


@dataclass(frozen=True)
class WindowEvaluation:
    """One model on the window: how many images it answered and what its card says about them.

    Fractions in [0, 1]; None where the model's card has no reference for it or no record is labelled.
    `source` is "replay" (the model answered the logged images) or "log" (the champion's logged answers).
    """

    sha256: str
    source: str
    n: int
    estimated_accuracy: float | None
    estimated_lower: float | None
    estimated_upper: float | None
    unfamiliar_share: float | None
    n_labelled: int
    realized_accuracy: float | None
    predicted: list[str] = field(repr=False)
    estimation_method: str | None = None  # the estimator behind `estimated_*`


@dataclass(frozen=True)
class Check:
    """One criterion of "no worse": its name, whether it held, and the numbers behind it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class WindowComparison:
    """Both models on one production window, the prediction shift between them, and the verdict.

    `compared` is False when the candidate could not be measured (no logged images, or no criterion both cards
    support); then `passed` is None and `not_compared` says why.
    """

    description: str
    n_records: int
    n_images: int
    n_labelled: int
    champion: WindowEvaluation
    candidate: WindowEvaluation | None
    disagreement: float | None
    class_share_distance: float | None
    replay_agreement: float | None
    tolerance: float
    checks: list[Check]
    not_compared: list[str]

    @property
    def compared(self) -> bool:
        return bool(self.checks)

    @property
    def passed(self) -> bool | None:
        return all(c.passed for c in self.checks) if self.checks else None

    @property
    def reason(self) -> str:
        if not self.checks:
            return "production window not compared (" + "; ".join(self.not_compared) + ")"
        failed = [c for c in self.checks if not c.passed]
        shown = failed or self.checks
        verdict = "worse" if failed else "no worse"
        return f"production window: candidate {verdict} ({'; '.join(c.detail for c in shown)})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for side in ("champion", "candidate"):
            if data[side] is not None:
                data[side].pop("predicted")
        return data | {"compared": self.compared, "passed": self.passed, "reason": self.reason}


def decode_logged_image(data: bytes) -> torch.Tensor:
    """Logged original bytes -> uint8 (3, H, W) RGB, decoded as the server decoded them."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return pil_to_tensor(image)


def replay(
    model: InferenceModel, images: list[bytes], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, D) float32, probabilities (N, C)) of `model` on logged image bytes."""
    transform = model.transform
    embeddings, probs = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(decode_logged_image(b)) for b in images[start : start + batch_size]])
        features, p = model.embed_and_predict(batch)
        embeddings.append(features.float())
        probs.append(p.float())
    return torch.cat(embeddings), torch.cat(probs)


def measure(
    model_card: ModelCard,
    sha256: str,
    source: str,
    probs: torch.Tensor,
    embeddings: torch.Tensor | None,
    unfamiliar: np.ndarray | None,
    labels: list[str | None],
    method: str | None = None,
) -> WindowEvaluation:
    """A model's window figures from its answers (probs (N, C), embeddings (N, D)) and its card's references.

    `unfamiliar` (N,) bools, when given, are used as they are (the champion's logged flags); else they are
    computed from `embeddings` with the card's familiarity reference.
    """
    predicted = [model_card.wnids[i] for i in probs.argmax(dim=1).tolist()]
    est = lower = upper = None
    if model_card.estimation:
        reference = EstimationReference.from_state_dict(model_card.estimation)
        method = method or reference.primary
        estimate = reference.estimate(probs)[method]
        est, lower, upper = estimate.estimate, estimate.lower, estimate.upper
    else:
        method = None
    share = None
    if unfamiliar is not None and len(unfamiliar):
        share = float(np.mean(unfamiliar))
    elif embeddings is not None and model_card.familiarity:
        flags = FamiliarityReference.from_state_dict(model_card.familiarity).score(embeddings)["unfamiliar"]
        share = float(flags.float().mean())
    pairs = [(p, y) for p, y in zip(predicted, labels, strict=True) if y is not None]
    realized = sum(p == y for p, y in pairs) / len(pairs) if pairs else None
    return WindowEvaluation(
        sha256, source, len(probs), est, lower, upper, share, len(pairs), realized, predicted, method
    )


def compare_on_window(
    candidate: InferenceModel,
    champion: InferenceModel,
    window: ProductionWindow,
    tolerance: float = DEFAULT_WINDOW_TOLERANCE,
    batch_size: int = 32,
) -> WindowComparison:
    """Replay the window's logged images through both models and judge "no worse" (see the module docstring).

    Records without an image are left out of the replay (counted in `n_records` only); with none at all, the
    champion is described from its logged answers and the candidate is not compared.
    """
    records = window.records
    usable = records["image"].is_valid()
    n_images = pc.sum(usable).as_py() or 0
    if TRAINED_COLUMN in records.column_names:
        usable = pc.and_(usable, pc.invert(records[TRAINED_COLUMN]))
    with_images = records.filter(usable)
    labels = with_images["label_wnid"].to_pylist()
    not_compared: list[str] = []
    if with_images.num_rows == 0:
        champ = _from_log(champion, records)
        why = (
            f"the log holds no images for these {records.num_rows} records (serve with --log_images)"
            if n_images == 0
            else f"all {n_images} records with an image were in the candidate's training data (--exclude_trained)"
        )
        not_compared.append(
            f"{why}, so the candidate could not answer them; the champion's column is what the log holds"
        )
        return WindowComparison(
            window.description, records.num_rows, 0, window.n_labelled, champ, None, None, None, None,
            tolerance, [], not_compared,
        )  # fmt: skip
    images = with_images["image"].to_pylist()
    champ_emb, champ_probs = replay(champion, images, batch_size)
    cand_emb, cand_probs = replay(candidate, images, batch_size)
    method = shared_method(champion.card.estimation, candidate.card.estimation)
    champ = measure(champion.card, champion.sha256, "replay", champ_probs, champ_emb, None, labels, method)
    cand = measure(candidate.card, candidate.sha256, "replay", cand_probs, cand_emb, None, labels, method)
    logged = with_images["predicted_wnid"].to_pylist()
    replay_agreement = float(np.mean([a == b for a, b in zip(champ.predicted, logged, strict=True)]))
    disagreement = float(np.mean([a != b for a, b in zip(champ.predicted, cand.predicted, strict=True)]))
    checks = _checks(champ, cand, tolerance, not_compared)
    if n_images < records.num_rows:
        not_compared.append(f"{records.num_rows - n_images} records without an image left out")
    return WindowComparison(
        window.description, records.num_rows, with_images.num_rows, window.n_labelled, champ, cand,
        disagreement, _total_variation(champ.predicted, cand.predicted, champion.card.wnids), replay_agreement,
        tolerance, checks, not_compared,
    )  # fmt: skip


def _from_log(champion: InferenceModel, records: pa.Table) -> WindowEvaluation:
    """The champion's figures from its logged probabilities, embeddings and familiarity flags."""
    probs = torch.from_numpy(list_matrix(records["probs"]))
    unfamiliar = records["unfamiliar"]
    flags = None if unfamiliar.null_count else np.asarray(unfamiliar.to_pylist(), dtype=bool)
    embeddings = torch.from_numpy(decode_embeddings(records["embedding"]).astype(np.float32))
    labels = records["label_wnid"].to_pylist()
    return measure(champion.card, champion.sha256, "log", probs, embeddings, flags, labels)


def _checks(
    champ: WindowEvaluation, cand: WindowEvaluation, tolerance: float, not_compared: list[str]
) -> list[Check]:
    checks = []
    criteria = (
        ("estimated accuracy", "estimated_accuracy", +1, "a model card has no estimation reference"),
        ("unfamiliar share", "unfamiliar_share", -1, "a model card has no familiarity reference"),
        ("realized accuracy", "realized_accuracy", +1, "no record of the window has a /feedback label"),
    )
    for name, key, sign, missing in criteria:
        c, p = getattr(cand, key), getattr(champ, key)
        if c is None or p is None:
            not_compared.append(f"{name}: {missing}")
            continue
        passed = sign * (c - p) >= -tolerance - 1e-12
        relation = ">=" if sign > 0 else "<="
        bar = p - tolerance if sign > 0 else p + tolerance
        ok = relation if passed else {">=": "<", "<=": ">"}[relation]
        checks.append(
            Check(
                name,
                passed,
                f"{name} {c:.2%} {ok} champion {p:.2%} {'-+'[sign < 0]} {tolerance * 100:.2f} pt = {bar:.2%}",
            )
        )
    return checks


def _total_variation(a: list[str], b: list[str], classes: tuple[str, ...]) -> float:
    """Total-variation distance (half the L1 distance) between two lists' class shares."""
    index = {w: i for i, w in enumerate(classes)}
    pa_, pb = (np.bincount([index[w] for w in x], minlength=len(classes)) / len(x) for x in (a, b))
    return float(0.5 * np.abs(pa_ - pb).sum())


def format_window_table(comparison: WindowComparison) -> str:
    """The window's side-by-side markdown table (appended to the gate's), then what was not compared."""
    champ, cand = comparison.champion, comparison.candidate
    lines = [
        "### Production window",
        "",
        f"{comparison.description}: {comparison.n_records} records, {comparison.n_images} replayed by both models, "
        f"{comparison.n_labelled} with a /feedback label.",
        "",
        "| production window | champion | candidate | candidate - champion |",
        "| --- | ---: | ---: | ---: |",
        f"| answered by | {_source(champ)} | {_source(cand)} | |",
    ]
    method = (cand and cand.estimation_method) or (champ and champ.estimation_method) or "-"
    lines.append(_row(f"estimated accuracy ({method})", champ, cand, "estimated_accuracy"))
    lines.append(_row("unfamiliar share", champ, cand, "unfamiliar_share"))
    n = champ.n_labelled
    lines.append(
        _row(f"realized accuracy (n={n})" if n else "realized accuracy", champ, cand, "realized_accuracy")
    )
    if comparison.disagreement is not None:
        lines.append(f"| predictions that differ | | | {comparison.disagreement:.2%} |")
        lines.append(
            f"| predicted class shares: total variation | | | {comparison.class_share_distance:.3f} |"
        )
    if comparison.replay_agreement is not None:
        lines.append(f"| champion replay = its logged answer | {comparison.replay_agreement:.2%} | | |")
    verdict = {True: "no worse", False: "WORSE", None: "not compared"}[comparison.passed]
    lines += ["", f"Production window: **{verdict}** (tolerance {comparison.tolerance * 100:.2f} pt)."]
    lines += [f"- {check.detail}: {'ok' if check.passed else 'FAILED'}" for check in comparison.checks]
    lines += [f"- not compared: {text}" for text in comparison.not_compared]
    return "\n".join(lines) + "\n"


def _source(evaluation: WindowEvaluation | None) -> str:
    if evaluation is None:
        return "-"
    what = "replayed the logged images" if evaluation.source == "replay" else "its logged answers"
    return f"`{evaluation.sha256[:12]}`: {what}"


def _row(label: str, champ: WindowEvaluation, cand: WindowEvaluation | None, key: str) -> str:
    p = getattr(champ, key)
    c = None if cand is None else getattr(cand, key)
    diff = "" if c is None or p is None else f"{(c - p) * 100:+.2f} pt"
    show = (
        _estimate if key == "estimated_accuracy" else (lambda e: _pct(None if e is None else getattr(e, key)))
    )
    return f"| {label} | {show(champ)} | {show(cand)} | {diff} |"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _estimate(evaluation: WindowEvaluation | None) -> str:
    if evaluation is None or evaluation.estimated_accuracy is None:
        return "-"
    return f"{evaluation.estimated_accuracy:.2%} [{evaluation.estimated_lower:.1%}, {evaluation.estimated_upper:.1%}]"
