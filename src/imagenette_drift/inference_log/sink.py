"""Where the inference log's files go: a local folder or a gs:// prefix, each file published atomically.

A file is published whole or not at all: on disk it is written to a hidden temporary file in the target folder
and renamed into place; on GCS it is one upload with `if_generation_match=0` (the object must not exist yet),
through google-cloud-storage's own retry and checksums. Readers therefore never see a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from imagenette_drift.storage.uri import GS_PREFIX


class SinkError(OSError):
    """A file could not be published; the message names the target and the cause."""


class LogSink(Protocol):
    """Publishes immutable files under the log's root."""

    location: str

    def publish(self, relative_path: str, data: bytes) -> None:
        """Store `data` at `relative_path` (a `/`-separated path under the root) atomically; raise SinkError."""
        ...


class LocalSink:
    """A folder on disk (or a mounted bucket): temporary file in the target folder, fsync, then rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def publish(self, relative_path: str, data: bytes) -> None:
        dest = self.root / relative_path
        tmp: str | None = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".parquet")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
            tmp = None
        except OSError as e:
            raise SinkError(f"cannot write {dest}: {e.strerror or e}") from e
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


class GcsSink:
    """`gs://BUCKET[/PREFIX]`: one upload per file with a does-not-exist precondition.

    An upload that finds its object already there means an earlier attempt of this very upload landed (file
    names are unique), so it counts as published.
    """

    def __init__(self, uri: str, client: Any = None, timeout_s: float = 10.0) -> None:
        from imagenette_drift.storage.gcs import GcsPrefix

        self.objects = GcsPrefix(uri, client)
        self.location = self.objects.location
        self.timeout_s = timeout_s

    def publish(self, relative_path: str, data: bytes) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        from imagenette_drift.storage.errors import StorageError

        try:
            self.objects.create(
                relative_path,
                data,
                content_type="application/vnd.apache.parquet",
                timeout=self.timeout_s,
                # Idempotent thanks to the precondition, so a plain retry is safe; bounded so that a flush at
                # SIGTERM still fits in Cloud Run's 10 s grace period.
                retry=DEFAULT_RETRY.with_deadline(3 * self.timeout_s),
            )
        except StorageError as e:  # the writer spills the file and retries later
            raise SinkError(str(e)) from e
        except Exception as e:  # anything else the client raises: spilled and retried too
            raise SinkError(f"cannot write {self.objects.uri(relative_path)}: {e}") from e


def open_sink(location: str) -> LogSink:
    """A `GcsSink` for `gs://...`, else a `LocalSink` for the folder (created on first publish)."""
    if location.startswith(GS_PREFIX):
        return GcsSink(location)
    return LocalSink(location)
