"""Which log files the monitor has read (the manifest) and which are new since its last run.

Files are immutable once published, so a file read once is never read again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagenette_drift.inference_log.reader import LogLocation, skip_reason
from imagenette_drift.io import write_text_atomic

log = logging.getLogger(__name__)


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

    A foreign, truncated or newer-version file (`skip_reason`) is skipped with a warning naming it (once: the manifest
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
            reason = skip_reason(location, relative, kind)
            if reason is None:
                out[relative] = size
            else:
                skipped[relative] = reason
    for reason in skipped.values():
        log.warning("skipping %s", reason)
    return NewFiles(predictions, labels, skipped, other_models)
