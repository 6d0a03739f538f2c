"""The statistics of one window of logged predictions: the single function every engine calls.

DuckDB and Ray Data only decide which records form a window; `window_statistics` computes everything about
it (tests from `drift/`, realized accuracy from joined labels, estimated accuracy, familiarity and the
explanation), so both engines give the same window table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from imagenette_drift.drift.assessment import WindowAssessor
from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.drift.reference_size import label_shift_testable, reference_size_problem
from imagenette_drift.monitoring.columns import decode_embeddings, list_matrix
from imagenette_drift.monitoring.explain import EXPLANATION_FIELDS, explanation_columns

log = logging.getLogger(__name__)

# Columns of the prediction records a window needs (`image` and the request metadata are never read).
WINDOW_COLUMNS = (
    "request_id",
    "timestamp",
    "replica_id",
    "predicted_wnid",
    "confidence",
    "probs",
    "embedding",
    "image_stats",
    "unfamiliar",
)
LABEL_COLUMN = "label_wnid"  # joined from label records on request_id; null where no label was posted

# An estimator of top-1 accuracy without labels: (probs (n, C) float32, context) -> accuracy in [0, 1] or None.
AccuracyEstimator = Callable[[np.ndarray, "WindowContext"], float | None]

# The window table's columns, in order, with their Arrow types (the Parquet table and `/status` use them).
TABLE_SCHEMA = pa.schema(
    [
        pa.field("window", pa.int64()),
        pa.field("window_start", pa.timestamp("us", tz="UTC")),
        pa.field("window_end", pa.timestamp("us", tz="UTC")),
        pa.field("n", pa.int64()),
        pa.field("n_replicas", pa.int64()),
        pa.field("mmd_statistic", pa.float64()),
        pa.field("mmd_p_value", pa.float64()),
        pa.field("inputs_statistic", pa.float64()),
        pa.field("inputs_p_value", pa.float64()),
        pa.field("label_shift_statistic", pa.float64()),
        pa.field("label_shift_p_value", pa.float64()),
        pa.field("drift", pa.bool_()),
        pa.field("mean_confidence", pa.float64()),
        pa.field("n_labelled", pa.int64()),
        pa.field("realized_accuracy", pa.float64()),
        pa.field("estimated_accuracy", pa.float64()),  # ATC; null until an estimator is set
        pa.field("unfamiliar_share", pa.float64()),  # null until the server logs familiarity
        *EXPLANATION_FIELDS,  # drifting windows' explanations (monitoring/explain.py)
    ]
)
TESTS = ("mmd", "inputs", "label_shift")


@dataclass
class WindowContext:
    """What every window is tested against: the checkpoint's drift reference and the class order.

    Attributes:
        reference: The drift reference stored in the checkpoint's model card.
        wnids: The card's class wnids, in the order of `probs`.
        alpha: Family-wise significance level: a window drifts when any test's p-value is below
            ``alpha / number of tests run`` (Bonferroni over the tests).
        accuracy_estimator: Label-free accuracy estimate (ATC plugs in here); None leaves the column null.
        explainer: The card's explanation references (`WindowAssessor`); None leaves the explanation columns null.
    """

    reference: DriftReference
    wnids: Sequence[str]
    alpha: float = 0.05
    accuracy_estimator: AccuracyEstimator | None = None
    explainer: WindowAssessor | None = None
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}; a common choice is 0.05.")
        self._index = {w: i for i, w in enumerate(self.wnids)}


def realized_accuracy(predicted: Sequence[Any], labels: Sequence[Any]) -> tuple[int, float | None]:
    """(n labelled, share of labelled records whose prediction equals the label; None when none is labelled)."""
    pairs = [(p, y) for p, y in zip(predicted, labels, strict=True) if y is not None]
    if not pairs:
        return 0, None
    return len(pairs), sum(p == y for p, y in pairs) / len(pairs)


def calibrated_tests(reference: DriftReference, n: int) -> tuple[str, ...]:
    """The reference-size table's names of the tests a window of `n` records runs (`TESTS` runs them as mmd,
    inputs and label_shift = chi2)."""
    tests = ("mmd",) + (("inputs",) if reference.inputs is not None else ())
    return tests + (("chi2",) if label_shift_testable(n, reference.chi2.num_classes) else ())


def window_statistics(records: pa.Table, window: int, context: WindowContext) -> dict[str, Any]:
    """One row of the window table for the records of one window.

    Args:
        records: The window's prediction records (at least `WINDOW_COLUMNS`, plus `label_wnid` joined on
            request_id, null where unlabelled), in any order: rows are sorted by (timestamp, request_id)
            first, so every engine gets the same permutation p-values.
        window: The window's sequential number.
        context: Reference, class order and significance level.

    Returns:
        A dict with the `TABLE_SCHEMA` columns: MMD^2 of the fp16 embeddings against the reference with its
        permutation p-value (`MMDDriftDetector`), the Bonferroni KS test of the input statistics
        (`KSDriftDetector`), the label-shift test of the predicted classes (`ChiSquaredDriftDetector`; only from 5 records per class),
        realized accuracy over the labelled records, and the estimation hooks.

    Raises:
        ValueError: fewer than 2 records (no two-sample test is defined).
    """
    n = records.num_rows
    if n < 2:
        raise ValueError(f"window {window} has {n} record(s); the drift tests need at least 2.")
    records = records.sort_by([("timestamp", "ascending"), ("request_id", "ascending")])
    ref = context.reference
    embeddings = torch.from_numpy(decode_embeddings(records["embedding"]).astype(np.float32))
    probs = list_matrix(records["probs"])
    results = {}
    # A time window larger than the reference calibrates is not tested (count windows are refused up front).
    uncalibrated = reference_size_problem(ref.n_reference, n, calibrated_tests(ref, n))
    if uncalibrated is not None:
        log.warning("window %d (%d records) not tested: %s", window, n, uncalibrated)
    else:
        results["mmd"] = ref.mmd.test(embeddings)
        if ref.inputs is not None:
            results["inputs"] = ref.inputs.test(torch.from_numpy(list_matrix(records["image_stats"])))
        if label_shift_testable(n, ref.chi2.num_classes):
            results["label_shift"] = ref.chi2.test(torch.from_numpy(probs))
    threshold = context.alpha / max(len(results), 1)
    predicted = records["predicted_wnid"].to_pylist()
    labels = records[LABEL_COLUMN].to_pylist() if LABEL_COLUMN in records.column_names else [None] * n
    n_labelled, accuracy = realized_accuracy(predicted, labels)
    unfamiliar = records["unfamiliar"] if "unfamiliar" in records.column_names else None
    n_known = 0 if unfamiliar is None else n - unfamiliar.null_count
    timestamps = records["timestamp"]
    row: dict[str, Any] = {
        "window": int(window),
        "window_start": pc.min(timestamps).as_py(),
        "window_end": pc.max(timestamps).as_py(),
        "n": n,
        "n_replicas": len(pc.unique(records["replica_id"])),
    }
    for name in TESTS:
        result = results.get(name)
        row[f"{name}_statistic"] = None if result is None else float(result.statistic)
        row[f"{name}_p_value"] = None if result is None else float(result.p_value)
    row |= {
        "drift": any(r.p_value < threshold for r in results.values()),
        "mean_confidence": float(pc.mean(records["confidence"]).as_py()),
        "n_labelled": n_labelled,
        "realized_accuracy": accuracy,
        "estimated_accuracy": None
        if context.accuracy_estimator is None
        else context.accuracy_estimator(probs, context),
        "unfamiliar_share": float(pc.mean(unfamiliar.cast(pa.float64())).as_py()) if n_known else None,
    }
    covariate = any(results[t].p_value < threshold for t in ("mmd", "inputs") if t in results)
    row |= explanation_columns(context.explainer, records, probs, embeddings, row["drift"], covariate)
    return row
