"""google-cloud-storage for everything but the log readers: the client, and a bucket prefix whose objects are
created once (`if_generation_match=0`), read by generation, and checked for a missing bucket.

Credentials come from the environment only (application default credentials: `gcloud auth
application-default login`, Workload Identity, `GOOGLE_APPLICATION_CREDENTIALS`); `STORAGE_EMULATOR_HOST`
points the client at an emulator.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from imagenette_drift.storage.errors import StorageError, gcs_errors
from imagenette_drift.storage.uri import GS_PREFIX, parse_gs_prefix


def default_client() -> Any:
    """A storage client from application default credentials, else anonymous (public buckets, the emulator)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        return storage.Client.create_anonymous_client()


def missing_bucket(bucket: str, uri: str) -> StorageError:
    """The error for a bucket that does not exist, naming the object that was wanted."""
    return StorageError(
        f"Bucket gs://{bucket} does not exist (while opening {uri}); create it or fix the location."
    )


class GcsPrefix:
    """`gs://BUCKET[/PREFIX]` through google-cloud-storage; object names are relative to the prefix.

    Every call raises `StorageError` (via `errors`) for a storage failure; a missing bucket is told apart from a
    missing object, which GCS answers alike for single-object reads.
    """

    def __init__(self, location: str, client: Any = None) -> None:
        self.bucket_name, self.prefix = parse_gs_prefix(location)
        self.location = f"{GS_PREFIX}{self.bucket_name}/{self.prefix}".rstrip("/")
        self.bucket = (client or default_client()).bucket(self.bucket_name)

    def name(self, relative: str) -> str:
        """The object name of `relative` (a `/`-separated path under the prefix)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def uri(self, relative: str) -> str:
        return f"{GS_PREFIX}{self.bucket_name}/{self.name(relative)}"

    def errors(self, what: str, relative: str) -> AbstractContextManager[None]:
        """`gcs_errors` naming the object `relative`."""
        return gcs_errors(what, self.uri(relative))

    def get_blob(self, relative: str, **kwargs: Any) -> Any:
        """The object's blob (with its metadata), or None when it does not exist; StorageError without a bucket."""
        with self.errors("read", relative):
            blob = self.bucket.get_blob(self.name(relative), **kwargs)
            if blob is None and not self.bucket.exists():
                raise missing_bucket(self.bucket_name, self.uri(relative))
        return blob

    def create(self, relative: str, data: bytes | Path, **kwargs: Any) -> bool:
        """Upload `data` (bytes or a file) as a new object; False when the object already existed.

        `kwargs` go to the upload (`content_type`, `timeout`, `retry`).
        """
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self.name(relative))
        with self.errors("write", relative):
            try:
                if isinstance(data, Path):
                    blob.upload_from_filename(str(data), if_generation_match=0, **kwargs)
                else:
                    blob.upload_from_string(data, if_generation_match=0, **kwargs)
            except gexc.PreconditionFailed:
                return False
            except gexc.NotFound as e:
                raise missing_bucket(self.bucket_name, self.uri(relative)) from e
        return True

    def delete(self, relative: str, **kwargs: Any) -> None:
        with self.errors("delete", relative):
            self.bucket.blob(self.name(relative)).delete(**kwargs)
