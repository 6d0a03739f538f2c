"""The explanation columns of a drifting window of logged predictions.

`window_statistics` calls `explanation_columns` for every window, so both engines give the same columns: the
best-matching corruption signature and its similarity, the class with the largest chi-squared residual, the
largest change of BBSE's true class shares, and the full explanation (`serve_contract.DriftExplanation`) as JSON
text. Clean windows, and contexts without an explainer, leave them null. Stateless per window: Ray computes
windows in any order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from imagenette_drift.drift.assessment import NO_SIGNATURE, WindowAssessor
from imagenette_drift.monitoring.columns import list_matrix
from imagenette_drift.serve_contract import DriftExplanation

__all__ = ["EXPLANATION_FIELDS", "add_witness_thumbnails", "explanation_columns"]

EXPLANATION_FIELDS = [
    pa.field("top_signature", pa.string()),
    pa.field("top_signature_similarity", pa.float64()),
    pa.field("top_moved_class", pa.string()),
    pa.field("bbse_max_change", pa.float64()),
    pa.field("explanation", pa.string()),  # serve_contract.DriftExplanation as JSON
]
_EMPTY = {f.name: None for f in EXPLANATION_FIELDS}


def explanation_columns(
    explainer: WindowAssessor | None,
    records: pa.Table,
    probs: np.ndarray,
    embeddings: torch.Tensor,
    drift: bool,
    covariate_shift: bool,
) -> dict[str, Any]:
    """The explanation columns of one window (all null unless `drift` and an explanation reference exist).

    Args:
        explainer: the card's references (`WindowAssessor.from_card`), or None.
        records: the window's records, sorted as `probs` and `embeddings` (witnesses name their request_id).
        probs: (n, C) float32 softmax rows; embeddings: (n, D) float32.
        drift: the window's drift verdict; covariate_shift: the MMD or input-statistics test flagged it (only
            then are corruption signatures matched: a shift of the outputs alone changes no input).
    """
    if explainer is None or explainer.explanation is None or not drift:
        return dict(_EMPTY)
    stats = None
    if covariate_shift and "image_stats" in records.column_names and not records["image_stats"].null_count:
        stats = torch.from_numpy(list_matrix(records["image_stats"]))
    raw = explainer.explain(torch.from_numpy(probs), embeddings, stats)
    ids = records["request_id"].to_pylist()
    for witness in raw["witnesses"]:
        witness["request_id"] = ids[witness.pop("index")]
    explanation = DriftExplanation(**raw)
    confusion = explainer.explanation.confusion.double()
    heldout = (confusion.sum(dim=0) / confusion.sum().clamp_min(1.0)).tolist()  # true class shares
    best = explanation.signatures[0] if explanation.signatures else None
    return {
        "top_signature": NO_SIGNATURE
        if explanation.looks_like == NO_SIGNATURE
        else explanation.looks_like[0],
        "top_signature_similarity": None if best is None else best.similarity,
        "top_moved_class": explanation.moved_classes[0] if explanation.moved_classes else None,
        "bbse_max_change": max(
            abs(row.bbse_share - share)
            for row, share in zip(explanation.classes, heldout, strict=True)
            if row.bbse_share is not None
        )
        if explanation.classes and explanation.classes[0].bbse_share is not None
        else None,
        "explanation": explanation.model_dump_json(),
    }


def add_witness_thumbnails(
    rows: list[dict[str, Any]],
    location: Any,
    relatives: list[str],
    out_dir: Path,
    reference_root: Path | None = None,
) -> int:
    """Thumbnails of the witness images of `rows`' explanations (logged with `--log_images`), each beside its
    nearest held-out image (under `reference_root`); the rows' `explanation` JSON gains their paths.

    Args:
        rows: this run's new window rows (changed in place).
        location: the log's `inference_log.reader.LogLocation`; relatives: this run's new prediction files in it (witnesses
            whose record was read in an earlier run, as a pending record, get no thumbnail).
        out_dir: the report folder; thumbnails go to its `thumbnails/`.
        reference_root: the training data root the card's bank paths are relative to (None: no references).
    Returns the number of thumbnails written.
    """
    from imagenette_drift.explanation.report import add_thumbnails
    from imagenette_drift.inference_log.reader import read_images

    explained = [(row, json.loads(row["explanation"])) for row in rows if row.get("explanation")]
    wanted = {w["request_id"] for _, e in explained for w in e["witnesses"] if w.get("request_id")}
    images = read_images(location, relatives, wanted) if wanted else {}
    written = 0
    for row, explanation in explained:
        written += add_thumbnails(
            explanation,
            Path(out_dir),
            f"w{row['window']}",
            lambda w: images.get(w.get("request_id")),
            reference_root,
        )
        row["explanation"] = DriftExplanation(**explanation).model_dump_json()
    return written
