"""Open the registry at a location: a GCS prefix or a local folder (kept apart from the back ends it picks)."""

from __future__ import annotations

from pathlib import Path

from imagenette_drift.registry.base import Registry


def open_registry(location: str | Path) -> Registry:
    """A `GcsRegistry` for `gs://bucket/prefix`, else a `LocalRegistry` for a folder (created on first write)."""
    text = str(location)
    if text.startswith("gs://"):
        from imagenette_drift.registry.gcs import GcsRegistry

        return GcsRegistry(text)
    from imagenette_drift.registry.local import LocalRegistry

    return LocalRegistry(Path(text))
