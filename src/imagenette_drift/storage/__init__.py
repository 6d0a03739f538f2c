"""Storage in one place: gs:// and local locations, the google-cloud-storage client, and one error type.

Everything that reads or writes a `gs://` location goes through this package: checkpoints (`checkpoint`), the
registry's and the inference log's objects (`gcs`), and the log readers' filesystem (`filesystem`, the one
place gcsfs is used). Any failure becomes a `StorageError`, a `UserError` that every command prints as one
line naming the bucket, the object and the cause. Imports are lazy (PEP 562): google-cloud-storage and gcsfs
load only when a gs:// location is used.
"""

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    "imagenette_drift.storage",
    {
        "GS_PREFIX": "uri",
        "GcsFetcher": "checkpoint",
        "GcsPrefix": "gcs",
        "ResolvedCheckpoint": "checkpoint",
        "StorageError": "errors",
        "default_client": "gcs",
        "gcs_errors": "errors",
        "open_filesystem": "filesystem",
        "parse_gs_prefix": "uri",
        "parse_gs_uri": "uri",
        "probe_writable": "probe",
        "resolve_checkpoint": "checkpoint",
    },
)
