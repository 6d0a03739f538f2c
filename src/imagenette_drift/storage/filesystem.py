"""The log readers' filesystem: fsspec, with gcsfs for gs:// (the one place this project uses gcsfs).

Why a second GCS stack beside google-cloud-storage: the monitor's engines read the log's Parquet files where
they lie, and both take only an fsspec filesystem for that: DuckDB through
`DuckDBPyConnection.register_filesystem`, Ray Data through `pyarrow.fs.PyFileSystem(FSSpecHandler(...))`.
google-cloud-storage has no fsspec filesystem, and DuckDB's own `httpfs` reaches GCS only with HMAC keys (not
application default credentials) and an extension downloaded at run time. So whatever lists and reads the
inference log (the monitor, the gate's window, export-labelled, the canary) does it through the filesystem
opened here; everything else uses `storage.gcs`. Errors of either stack become `StorageError` the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from imagenette_drift.storage.errors import gcs_errors
from imagenette_drift.storage.gcs import missing_bucket
from imagenette_drift.storage.uri import GS_PREFIX, parse_gs_prefix


class _RaisedAnyway(logging.Filter):
    """Drops gcsfs's log records of a request that ran out of retries (logged with a traceback just before
    gcsfs raises): the error itself is reported once, as one line (`StorageError`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def open_filesystem(url: str) -> tuple[Any, str, bool]:
    """(fsspec filesystem, root path in it, is_local) for a local folder or `gs://BUCKET[/PREFIX]`.

    For gs:// the bucket must exist: `StorageError` names it otherwise (gcsfs would list it as empty).
    """
    if not url.startswith(GS_PREFIX):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        fs, root = fsspec.core.url_to_fs(url)
        return fs, root, isinstance(fs, LocalFileSystem)
    # gcsfs's core filesystem (JSON API; honours STORAGE_EMULATOR_HOST), not its experimental zonal/HNS
    # wrapper, which needs the storage control API that emulators do not have.
    from gcsfs.core import GCSFileSystem

    gcsfs_log = logging.getLogger("gcsfs")
    if not any(isinstance(f, _RaisedAnyway) for f in gcsfs_log.filters):
        gcsfs_log.addFilter(_RaisedAnyway())
    bucket, _ = parse_gs_prefix(url)
    fs = GCSFileSystem()
    with gcs_errors("read", url):
        try:
            fs.info(bucket)
        except FileNotFoundError as e:
            raise missing_bucket(bucket, url) from e
    return fs, url.removeprefix(GS_PREFIX).rstrip("/"), False
