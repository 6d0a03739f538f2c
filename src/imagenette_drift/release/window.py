"""The production window a release is judged on: the monitor's latest window, the last N records, or the last
stretch of time, of the records one model served.

- ``latest``: with a monitor folder (`imagenette monitor --out DIR`), the newest row of its window table, the
  window its alerts were raised on (the monitor must have watched the same model); without one, the newest
  window of the monitor's default rule (`--window 1h`: UTC hours) in the log itself, the last hour that holds
  at least 2 records (as the monitor closes windows with `--flush`).
- ``N`` (a count, as `imagenette monitor --window 500`): the model's N most recent records.
- a duration (``30m``, ``1h``): the model's records of that long, ending at its newest record.

Records are ordered by (timestamp, request_id) over every replica's files, as the monitor orders them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from imagenette_drift.errors import BadDataError, MissingDataError
from imagenette_drift.inference_log.reader import (
    join_labels,
    list_files,
    models_in_log,
    open_log,
    read_columns,
    read_labels,
    read_rows,
)
from imagenette_drift.monitoring.report import TABLE_NAME, read_table
from imagenette_drift.monitoring.windows import CLOSED, US, WindowCursor, WindowSpec, assign_windows

LATEST = "latest"
TRAINED_COLUMN = "trained"  # set by `exclude_trained`: the record's image is in the candidate's training data
# What a window's comparison reads from each prediction record (`image` is null without --log_images).
RECORD_COLUMNS = [
    "request_id",
    "timestamp",
    "predicted_wnid",
    "probs",
    "embedding",
    "unfamiliar",
    "format",
    "image",
]


@dataclass(frozen=True)
class WindowChoice:
    """`kind` "latest" (the monitor's newest window), "count" (`size` records) or "time" (`width_s` seconds)."""

    kind: Literal["latest", "count", "time"]
    size: int = 0
    width_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> WindowChoice:
        """``"latest"``, a record count (``"500"``) or a duration (``"1h"``); ValueError naming --window otherwise."""
        if str(text).strip() == LATEST:
            return cls("latest")
        try:
            spec = WindowSpec.parse(text)
        except ValueError as e:
            raise ValueError(f"{e} Or `latest`: the monitor's newest window.") from e
        return cls(spec.kind, spec.size, spec.width_s)


@dataclass
class ProductionWindow:
    """The records of one window of one model, with their feedback labels joined (`label_wnid`, null if none).

    Attributes:
        records: `RECORD_COLUMNS` plus `label_wnid`, ordered by (timestamp, request_id).
        model_sha256: The model that served them (its `model=<sha12>` partition).
        description: One line saying which window this is (for the gate's table).
        skipped: Log files skipped (path -> reason).
    """

    records: pa.Table
    model_sha256: str
    description: str
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.records.num_rows

    @property
    def n_images(self) -> int:
        return self.n - self.records["image"].null_count

    @property
    def n_labelled(self) -> int:
        return self.n - self.records["label_wnid"].null_count


def select_window(
    log: str, model_sha256: str, choice: WindowChoice, monitor_out: Path | None = None
) -> ProductionWindow:
    """Read the records of `model_sha256` in the window `choice` from the log at `log` (folder or gs://).

    Raises:
        MissingDataError: the log holds no readable records of that model, or `latest` finds no monitor table.
        BadDataError: the monitor at `monitor_out` watched another model.
    """
    location = open_log(log)
    found = list_files(location, "predictions", model_sha256)
    if not found.files:
        others = ", ".join(models_in_log(location)) or "none"
        raise MissingDataError(
            f"the log {log} holds no readable prediction records of model {model_sha256[:12]} (models in the "
            f"log: {others}); pass the checkpoint the server ran as --champion (the registry's copy when it "
            "served a registered version)."
        )
    keys = read_columns(location, found.files, ["request_id", "timestamp"])
    keys = keys.sort_by([("timestamp", "ascending"), ("request_id", "ascending")])
    if choice.kind == "latest":
        chosen, description = _monitor_window(keys, model_sha256, monitor_out)
    elif choice.kind == "count":
        chosen = keys.slice(max(0, keys.num_rows - choice.size))
        description = f"the last {chosen.num_rows} records (--window {choice.size})"
    else:
        newest = keys["timestamp"][-1].value
        start = newest - round(choice.width_s * US)
        chosen = keys.filter(pc.greater(keys["timestamp"].cast(pa.int64()), start))
        description = f"the last {choice.width_s:g} s of records (--window), {chosen.num_rows} records"
    if not chosen.num_rows:
        raise MissingDataError(f"{description}: no records of model {model_sha256[:12]} in {log}.")
    files = sorted({found.files[i] for i in chosen["file"].to_pylist()})
    records = read_rows(location, files, chosen["request_id"].combine_chunks(), RECORD_COLUMNS)
    records = records.sort_by([("timestamp", "ascending"), ("request_id", "ascending")])
    labels, skipped_labels = read_labels(location)
    first, last = records["timestamp"][0].as_py(), records["timestamp"][-1].as_py()
    description += f" of model `{model_sha256[:12]}` in {log}, {_stamp(first)} to {_stamp(last)}"
    return ProductionWindow(
        join_labels(records, labels), model_sha256, description, found.skipped | skipped_labels
    )


def exclude_trained(window: ProductionWindow, roots: list[Path]) -> ProductionWindow:
    """`window` with a `trained` column marking the records whose images `imagenette export-labelled` wrote
    under any of `roots` (the candidate's training data): a model judged on images it trained on looks better
    than it is, so the comparison replays the others only.

    Raises:
        MissingDataError: a root holds no export (no `export.json`).
    """
    from imagenette_drift.release.labelled import SUMMARY_NAME, exported_stems, logged_stem

    stems: set[str] = set()
    for root in roots:
        if not (Path(root) / SUMMARY_NAME).is_file():
            raise MissingDataError(
                f"--exclude_trained {root} is not a folder written by `imagenette export-labelled` (no {SUMMARY_NAME})."
            )
        stems |= exported_stems(root)
    trained = pa.array([logged_stem(r) in stems for r in window.records["request_id"].to_pylist()])
    description = (
        f"{window.description}; {pc.sum(trained).as_py() or 0} record(s) the candidate trained on left out"
    )
    records = window.records.append_column(TRAINED_COLUMN, trained)
    return ProductionWindow(records, window.model_sha256, description, window.skipped)


DEFAULT_LATEST = "1h"  # `imagenette monitor`'s default --window


def _latest_hour(keys: pa.Table) -> tuple[pa.Table, str]:
    """The newest window of the monitor's default rule (UTC hours), closed as `imagenette monitor --flush` does."""
    assigned, bounds = assign_windows(keys, WindowSpec.parse(DEFAULT_LATEST), WindowCursor(), flush=True)
    closed = pc.equal(assigned["status"], CLOSED)
    if not pc.any(closed).as_py():
        raise MissingDataError("--window latest: no UTC hour of the log holds 2 records of the champion.")
    newest = pc.max(assigned["window"].filter(closed)).as_py()
    chosen = keys.filter(pc.and_(closed, pc.equal(assigned["window"], newest)))
    start = dt.datetime.fromtimestamp(bounds[newest][0] / US, dt.UTC)
    return (
        chosen,
        f"the latest window (the UTC hour from {start:%Y-%m-%d %H:%M}, as `imagenette monitor` windows)",
    )


def _monitor_window(keys: pa.Table, model_sha256: str, monitor_out: Path | None) -> tuple[pa.Table, str]:
    """The records inside the bounds of the monitor's newest window (its table's last row); without a monitor
    folder, the log's newest UTC hour."""
    if monitor_out is None:
        return _latest_hour(keys)
    out = Path(monitor_out)
    rows = read_table(out)
    state_path = out / "state" / "state.json"
    if not rows or not state_path.is_file():
        raise MissingDataError(
            f"--window latest reads the monitor's window table {out / TABLE_NAME}, which has no window yet; run "
            "`imagenette monitor --out` there first, or leave out --monitor_out (the log's newest UTC hour)."
        )
    state = json.loads(state_path.read_text())
    if state.get("model") != model_sha256:
        raise BadDataError(
            f"the monitor in {out} watched model {str(state.get('model'))[:12]}, not the champion "
            f"{model_sha256[:12]}; pass the monitor's --out for the champion, or --window N / a duration."
        )
    row = rows[-1]
    ts = keys["timestamp"].cast(pa.int64())
    start, end = _us(row["window_start"]), _us(row["window_end"])
    # Count windows end at their newest record (inclusive); time windows at their interval's end (exclusive).
    upper = pc.less_equal(ts, end) if str(state.get("window", "")).endswith("records") else pc.less(ts, end)
    chosen = keys.filter(pc.and_(pc.greater_equal(ts, start), upper))
    return chosen, f"the monitor's latest window ({row['window']}, {row['n']} records, {out})"


def _us(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")
