"""Check at start that a location (a folder or gs://BUCKET[/PREFIX]) can be written, by writing to it."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from imagenette_drift.storage.errors import StorageError
from imagenette_drift.storage.uri import GS_PREFIX

PROBE_PREFIX = ".write-probe-"


def probe_writable(location: str, what: str) -> None:
    """Write a small file under `location` and delete it again; `StorageError` (one line: where, why, the fix)
    when that fails. `what` names the option the location came from (e.g. `--log`).

    A folder is created when missing. On GCS the probe is a new object `<prefix>/.write-probe-<uuid>`, uploaded
    with a does-not-exist precondition, so it never replaces anything.
    """
    if location.startswith(GS_PREFIX):
        _probe_gcs(location, what)
    else:
        _probe_folder(Path(location), what)


def _probe_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=PROBE_PREFIX)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise StorageError(
            f"{what} {folder} cannot be written ({e.strerror or e}); pass a folder this user can create and "
            "write, or a gs://BUCKET/PREFIX."
        ) from e


def _probe_gcs(location: str, what: str) -> None:
    from google.cloud.storage.retry import DEFAULT_RETRY

    from imagenette_drift.storage.gcs import GcsPrefix

    prefix = GcsPrefix(location)
    relative = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    retry = DEFAULT_RETRY.with_deadline(30.0)  # an unreachable GCS fails the start within about a minute
    try:
        prefix.create(relative, b"", timeout=10, retry=retry)
        prefix.delete(relative, retry=retry)
    except StorageError as e:
        raise StorageError(f"{what} {location} cannot be written: {e}") from e
