"""Find the log's files, remember which were read (the manifest), and check each new one's schema.

The log is a local folder or a `gs://` prefix, reached through fsspec (`storage.open_filesystem`: gcsfs for
GCS), so the same code lists, reads and deletes in both. Files are immutable once published, so a file read once is never read again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from imagenette_drift.inference_log.schema import LogSchemaError, RecordKind, check_schema
from imagenette_drift.io import write_text_atomic
from imagenette_drift.storage.errors import gcs_errors
from imagenette_drift.storage.filesystem import open_filesystem

log = logging.getLogger(__name__)
_DATE = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")


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
class Manifest:
    """Files already read (relative path -> size) and files skipped (relative path -> reason), per kind."""

    read: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(data.get("read", {}), data.get("skipped", {}), data.get("labels", {}))

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {"read": self.read, "skipped": self.skipped, "labels": self.labels}
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


@dataclass
class NewFiles:
    """This run's new, valid files and the ones skipped (with the warning naming each)."""

    predictions: dict[str, int]
    labels: dict[str, int]
    skipped: dict[str, str]
    other_models: int


def scan(location: LogLocation, manifest: Manifest, model_sha256: str) -> NewFiles:
    """New prediction files of this model and new label files, each checked with `check_schema`.

    A foreign, truncated or newer-version file is skipped with a warning naming it (once: the manifest
    remembers it). Prediction files of other models (their `model=<sha12>` partition) are not read.
    """
    sha12 = f"model={model_sha256[:12]}"
    predictions: dict[str, int] = {}
    labels: dict[str, int] = {}
    skipped: dict[str, str] = {}
    other_models = 0
    for kind, known, out in (
        ("predictions", manifest.read, predictions),
        ("labels", manifest.labels, labels),
    ):
        for relative, size in sorted(location.list(kind).items()):
            if relative in known or relative in manifest.skipped:
                continue
            if kind == "predictions" and f"/{sha12}/" not in f"/{relative}":
                other_models += 1
                continue
            try:
                check_schema(location.read_schema(relative), kind, location.full(relative))
            except LogSchemaError as e:
                skipped[relative] = str(e)
            except (OSError, pa.ArrowException) as e:  # truncated: no valid footer
                skipped[relative] = f"{location.full(relative)}: not a readable Parquet file ({e})."
            else:
                out[relative] = size
    for reason in skipped.values():
        log.warning("skipping %s", reason)
    return NewFiles(predictions, labels, skipped, other_models)
