"""Read the inference log back: list its Parquet files, check each one's schema, read records and labels.

The log is a local folder or a `gs://` prefix, reached through fsspec (`storage.open_filesystem`: gcsfs for
GCS), so the same code lists, reads and deletes in both. The monitor, the gate's production window, the
retraining export and the canary all read through this module, so a foreign, truncated or newer file is
skipped with the same reason everywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imagenette_drift.errors import MissingDataError
from imagenette_drift.inference_log.schema import PREDICTION_SCHEMA, LogSchemaError, RecordKind, check_schema
from imagenette_drift.storage.errors import gcs_errors
from imagenette_drift.storage.filesystem import open_filesystem

log = logging.getLogger(__name__)
_DATE = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")
_MODEL = re.compile(r"(?:^|/)model=([0-9a-f]+)(?:/|$)")


class LogLocation:
    """A log root (local folder or gs://bucket/prefix) and its fsspec filesystem (`storage.open_filesystem`).

    On GCS a missing bucket, a permission problem or an unreachable service raises `StorageError`.
    """

    def __init__(self, url: str) -> None:
        self.url = str(url).rstrip("/")
        self.fs, self.root, self.is_local = open_filesystem(self.url)

    def full(self, relative: str) -> str:
        """The path the filesystem (and the engines) read, for a path relative to the root."""
        path = f"{self.root}/{relative}"
        return path if self.is_local else f"{self.url.split('://')[0]}://{path}"

    def _errors(self, what: str, relative: str = "") -> contextlib.AbstractContextManager[None]:
        """Storage failures on GCS as one-line `StorageError`s; a local folder's OSErrors unchanged."""
        return contextlib.nullcontext() if self.is_local else gcs_errors(what, self.full(relative))

    def list(self, kind: RecordKind) -> dict[str, int]:
        """{path relative to the root: size in bytes} of every Parquet file of `kind`."""
        base = f"{self.root}/{kind}"
        with self._errors("list", kind):
            if not self.fs.exists(base):
                return {}
            found = self.fs.find(base, detail=True)
        return {
            path[len(self.root) + 1 :]: int(info.get("size") or 0)
            for path, info in found.items()
            if path.endswith(".parquet") and not path.rsplit("/", 1)[-1].startswith(".")
        }

    def read_schema(self, relative: str) -> pa.Schema:
        with self._errors("read", relative), self.fs.open(f"{self.root}/{relative}", "rb") as f:
            return pq.read_schema(f)

    def read_table(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        with self._errors("read", relative), self.fs.open(f"{self.root}/{relative}", "rb") as f:
            return pq.read_table(f, columns=columns)

    def delete(self, relative: str) -> None:
        with self._errors("delete", relative):
            self.fs.rm(f"{self.root}/{relative}")


def partition_date(relative: str) -> dt.date | None:
    """The `date=YYYY-MM-DD` hive partition of a path, or None."""
    match = _DATE.search(relative)
    return dt.date.fromisoformat(match.group(1)) if match else None


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


def skip_reason(location: LogLocation, relative: str, kind: RecordKind) -> str | None:
    """Why `relative` cannot be read as a `kind` file of this schema version (foreign, truncated, newer), or
    None when it can."""
    try:
        check_schema(location.read_schema(relative), kind, location.full(relative))
    except LogSchemaError as e:
        return str(e)
    except (OSError, pa.ArrowException) as e:  # truncated: no valid footer
        return f"{location.full(relative)}: not a readable Parquet file ({e})."
    return None


def list_files(location: LogLocation, kind: RecordKind, model_sha256: str | None = None) -> LogFiles:
    """Every `kind` file of this schema version under the log, of one model's partition when given."""
    found = LogFiles([])
    for relative in sorted(location.list(kind)):
        if model_sha256 is not None and model_partition(relative) != model_sha256[:12]:
            continue
        reason = skip_reason(location, relative, kind)
        if reason is None:
            found.files.append(relative)
        else:
            found.skipped[relative] = reason
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
    return latest_labels(location, found.files), found.skipped


def latest_labels(location: LogLocation, files: Iterable[str]) -> pa.Table:
    """(`request_id`, `label_wnid`) with the latest label of each request in the label `files`."""
    tables = [location.read_table(rel, ["request_id", "timestamp", "label_wnid"]) for rel in files]
    if not tables:
        return pa.table({"request_id": pa.array([], pa.string()), "label_wnid": pa.array([], pa.string())})
    labels = pa.concat_tables(tables).sort_by([("timestamp", "ascending")])
    latest = labels.group_by("request_id", use_threads=False).aggregate([("label_wnid", "last")])
    return latest.rename_columns(["request_id", "label_wnid"])


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


def read_images(location: LogLocation, relatives: list[str], wanted: set[str]) -> dict[str, bytes]:
    """{request_id: original image bytes} of the `wanted` records found in `relatives` (null images skipped)."""
    found: dict[str, bytes] = {}
    for relative in relatives:
        if "image" not in location.read_schema(relative).names:
            continue
        table = location.read_table(relative, ["request_id", "image"])
        table = table.filter(pc.is_in(table["request_id"], value_set=pa.array(sorted(wanted - set(found)))))
        for request_id, image in zip(
            table["request_id"].to_pylist(), table["image"].to_pylist(), strict=True
        ):
            if image:
                found[request_id] = image
        if len(found) == len(wanted):
            break
    return found
