"""The inference log: what every serving replica records per request, and how monitors read it back."""

from imagenette_drift.inference_log.schema import (
    LABEL_SCHEMA,
    PREDICTION_SCHEMA,
    SCHEMA_VERSION,
    LogSchemaError,
    check_schema,
    file_name,
    partition_dir,
    schema_for,
)

__all__ = [
    "LABEL_SCHEMA",
    "PREDICTION_SCHEMA",
    "SCHEMA_VERSION",
    "LogSchemaError",
    "check_schema",
    "file_name",
    "partition_dir",
    "schema_for",
]
