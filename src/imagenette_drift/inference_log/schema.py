"""The inference log's contract: one Parquet schema per record kind, its version, and the folder layout.

Every replica of `imagenette serve --log ROOT` writes immutable Parquet files under ROOT; `imagenette monitor`
reads them. Both sides import this module, so the schema is defined once.

Layout (hive partitions, one file per flushed batch, each name unique)::

    ROOT/predictions/date=YYYY-MM-DD/model=<sha12>/<replica>-<utc stamp>-<uuid8>.parquet
    ROOT/labels/date=YYYY-MM-DD/<replica>-<utc stamp>-<uuid8>.parquet

A file's schema version is in its Parquet key-value metadata (`imagenette_drift.log_schema`); readers refuse
other versions with `LogSchemaError` (and the monitor skips such files with a warning naming them).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import pyarrow as pa

SCHEMA_VERSION = 1
VERSION_KEY = b"imagenette_drift.log_schema"
KIND_KEY = b"imagenette_drift.log_kind"
RecordKind = Literal["predictions", "labels"]
KINDS: tuple[RecordKind, ...] = ("predictions", "labels")

_UTC = pa.timestamp("us", tz="UTC")

# One row per served image. `embedding` is the penultimate layer as little-endian float16 bytes (D * 2 bytes:
# engine-neutral and compact); `probs` are the softmax outputs in the card's class order; `image_stats` are
# `drift.image_stats.FEATURE_NAMES` in that order. Familiarity columns stay null until the server computes them.
PREDICTION_FIELDS = [
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("timestamp", _UTC, nullable=False),
    pa.field("model_sha256", pa.string(), nullable=False),
    pa.field("replica_id", pa.string(), nullable=False),
    pa.field("runtime", pa.string(), nullable=False),
    pa.field("predicted_wnid", pa.string(), nullable=False),
    pa.field("confidence", pa.float32(), nullable=False),
    pa.field("probs", pa.list_(pa.float32()), nullable=False),
    pa.field("embedding", pa.binary(), nullable=False),
    pa.field("image_stats", pa.list_(pa.float32()), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("format", pa.string(), nullable=False),
    pa.field("n_bytes", pa.int64(), nullable=False),
    pa.field("latency_ms", pa.float32(), nullable=False),
    pa.field("knn_distance", pa.float32(), nullable=True),
    pa.field("energy", pa.float32(), nullable=True),
    pa.field("unfamiliar", pa.bool_(), nullable=True),
    pa.field("image", pa.binary(), nullable=True),  # original bytes, only with --log_images
]

# One row per label posted to an authenticated `/feedback`; joined to predictions on request_id at monitor time.
LABEL_FIELDS = [
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("timestamp", _UTC, nullable=False),
    pa.field("label_wnid", pa.string(), nullable=False),
    pa.field("replica_id", pa.string(), nullable=False),
]


def schema_for(kind: RecordKind) -> pa.Schema:
    """The Arrow schema of `kind`, with the version and kind in its metadata."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    fields = PREDICTION_FIELDS if kind == "predictions" else LABEL_FIELDS
    return pa.schema(fields, metadata={VERSION_KEY: str(SCHEMA_VERSION).encode(), KIND_KEY: kind.encode()})


PREDICTION_SCHEMA = schema_for("predictions")
LABEL_SCHEMA = schema_for("labels")


class LogSchemaError(ValueError):
    """A file in the log is not an inference-log file of this version (foreign, truncated or newer)."""


def check_schema(schema: pa.Schema, kind: RecordKind, where: str) -> None:
    """Raise `LogSchemaError` naming `where` unless `schema` is this version's schema of `kind`."""
    meta = schema.metadata or {}
    version = meta.get(VERSION_KEY)
    if version is None:
        raise LogSchemaError(f"{where}: not an inference-log file (no {VERSION_KEY.decode()} metadata).")
    if version != str(SCHEMA_VERSION).encode():
        raise LogSchemaError(
            f"{where}: inference-log schema version {version.decode()}, this version reads {SCHEMA_VERSION}; "
            "upgrade imagenette-drift to read it."
        )
    if meta.get(KIND_KEY) != kind.encode():
        raise LogSchemaError(
            f"{where}: a {meta.get(KIND_KEY, b'?').decode()} file where {kind} were expected."
        )
    expected = schema_for(kind)
    for field in expected:
        if field.name not in schema.names or schema.field(field.name).type != field.type:
            raise LogSchemaError(f"{where}: column {field.name!r} is missing or not {field.type}.")


def partition_dir(kind: RecordKind, day: dt.date, model_sha256: str | None = None) -> str:
    """The relative folder of a file: `predictions/date=.../model=<sha12>` or `labels/date=...`."""
    if kind == "predictions":
        if not model_sha256:
            raise ValueError("predictions are partitioned by model: pass model_sha256.")
        return f"predictions/date={day.isoformat()}/model={model_sha256[:12]}"
    return f"labels/date={day.isoformat()}"


def file_name(replica_id: str, now: dt.datetime) -> str:
    """A unique file name: replica, UTC stamp and a random suffix (never reused, so never overwritten)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in replica_id)
    return f"{safe}-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.parquet"
