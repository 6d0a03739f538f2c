"""A model registry: exported checkpoints by content hash, their metadata, and a `champion` pointer moved by
compare-and-swap. Back ends: a local folder (tests, laptops) and a GCS prefix.

Imports are lazy (PEP 562): the GCS back end pulls in google-cloud-storage only when used.
"""

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    "imagenette_drift.registry",
    {
        "Champion": "base",
        "ModelVersion": "base",
        "PromotionConflict": "base",
        "Registry": "base",
        "RegistryError": "base",
        "open_registry": "opening",
        "LocalRegistry": "local",
        "GcsRegistry": "gcs",
    },
)
