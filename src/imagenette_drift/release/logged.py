"""Read the inference log back for a release: prediction records (with their images) and the feedback labels.

The monitor reads windows of statistics; a release also needs the logged images (`serve --log_images`) and the
labels posted to the authenticated `POST /feedback`, the only writer of label records (`serve/feedback.py`
checks the bearer token before it queues one). Files are found and checked with the monitor's own
`LogLocation` and `check_schema`, so a foreign, truncated or newer file is skipped with the same reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from imagenette_drift.errors import MissingDataError
from imagenette_drift.inference_log.schema import PREDICTION_SCHEMA, LogSchemaError, RecordKind, check_schema
from imagenette_drift.monitoring.reader import LogLocation

log = logging.getLogger(__name__)
_MODEL = re.compile(r"(?:^|/)model=([0-9a-f]+)(?:/|$)")


@dataclass
class LogFiles:
    """The readable files of one kind (paths relative to the log root) and the skipped ones with the reason."""

    files: list[str]
    skipped: dict[str, str] = field(default_factory=dict)


def open_log(url: str) -> LogLocation:
    """The log at `url` (a folder or gs://BUCKET/PREFIX); MissingDataError for a local folder that is absent."""
    location = LogLocation(url)
    if location.is_local and not location.fs.isdir(location.root):
        raise MissingDataError(
            f"the log {url} does not exist; pass the folder `imagenette serve --log` wrote."
        )
    return location


def model_partition(relative: str) -> str | None:
    """The `model=<sha12>` partition of a prediction file's path, or None."""
    match = _MODEL.search(relative)
    return match.group(1) if match else None


def list_files(location: LogLocation, kind: RecordKind, model_sha256: str | None = None) -> LogFiles:
    """Every `kind` file of this schema version under the log, of one model's partition when given."""
    found = LogFiles([])
    for relative in sorted(location.list(kind)):
        if model_sha256 is not None and model_partition(relative) != model_sha256[:12]:
            continue
        try:
            check_schema(location.read_schema(relative), kind, location.full(relative))
        except LogSchemaError as e:
            found.skipped[relative] = str(e)
        except (OSError, pa.ArrowException) as e:  # truncated: no valid footer
            found.skipped[relative] = f"{location.full(relative)}: not a readable Parquet file ({e})."
        else:
            found.files.append(relative)
    for reason in found.skipped.values():
        log.warning("skipping %s", reason)
    return found


def models_in_log(location: LogLocation) -> list[str]:
    """The `sha12` of every model with prediction files in the log (for error messages)."""
    return sorted({m for rel in location.list("predictions") if (m := model_partition(rel))})


def read_labels(location: LogLocation) -> tuple[pa.Table, dict[str, str]]:
    """(`request_id`, `label_wnid`) with the latest label of each request, and the skipped label files.

    Labels come from the label records only, which `POST /feedback` writes after checking its bearer token.
    """
    found = list_files(location, "labels")
    tables = [location.read_table(rel, ["request_id", "timestamp", "label_wnid"]) for rel in found.files]
    if not tables:
        empty = pa.table({"request_id": pa.array([], pa.string()), "label_wnid": pa.array([], pa.string())})
        return empty, found.skipped
    labels = pa.concat_tables(tables).sort_by([("timestamp", "ascending")])
    latest = labels.group_by("request_id", use_threads=False).aggregate([("label_wnid", "last")])
    return latest.rename_columns(["request_id", "label_wnid"]), found.skipped


def read_columns(location: LogLocation, files: list[str], columns: list[str]) -> pa.Table:
    """`columns` of every file, concatenated, with the file's index in `files` as `file` (int32)."""
    tables = []
    for i, relative in enumerate(files):
        table = location.read_table(relative, columns)
        tables.append(table.append_column("file", pa.array([i] * table.num_rows, pa.int32())))
    if not tables:
        return _empty(columns).append_column("file", pa.array([], pa.int32()))
    return pa.concat_tables(tables)


def read_rows(location: LogLocation, files: list[str], request_ids: pa.Array, columns: list[str]) -> pa.Table:
    """`columns` of the records whose request_id is in `request_ids`, reading only `files` (one copy each)."""
    parts = []
    for relative in files:
        table = location.read_table(relative, columns)
        parts.append(table.filter(pc.is_in(table["request_id"], value_set=request_ids)))
    if not parts:
        return _empty(columns)
    table = pa.concat_tables(parts)
    if len(pc.unique(table["request_id"])) == table.num_rows:
        return table
    return table.filter(_first_occurrence(table["request_id"]))  # a file copied twice: one copy each


def _empty(columns: list[str]) -> pa.Table:
    """No prediction records, with `columns` typed as the schema types them (a null-typed column would not
    compare with the labels' strings)."""
    return PREDICTION_SCHEMA.empty_table().select(columns)


def _first_occurrence(ids: pa.ChunkedArray) -> pa.Array:
    seen: set[str] = set()
    keep = []
    for rid in ids.to_pylist():
        keep.append(rid not in seen)
        seen.add(rid)
    return pa.array(keep)


def join_labels(records: pa.Table, labels: pa.Table) -> pa.Table:
    """`records` with `label_wnid` appended (null where no label was posted for the request)."""
    index = pc.index_in(records["request_id"], value_set=labels["request_id"])
    return records.append_column("label_wnid", labels["label_wnid"].take(index))
