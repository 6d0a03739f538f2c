"""Which replica wrote a record: the Cloud Run revision and instance, else the host name and process id."""

from __future__ import annotations

import os
import socket
import urllib.request

# Cloud Run's metadata server: the instance id is unique per container instance.
METADATA_INSTANCE_ID = "http://metadata.google.internal/computeMetadata/v1/instance/id"


def cloud_run_instance_id(timeout_s: float = 1.0) -> str | None:
    """The instance id from the metadata server, or None when it does not answer (not on Google Cloud)."""
    request = urllib.request.Request(METADATA_INSTANCE_ID, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.read().decode().strip() or None
    except (OSError, ValueError):
        return None


def replica_id() -> str:
    """`$IMAGENETTE_REPLICA_ID` if set; on Cloud Run `<K_REVISION>-<instance id[:16]>`; else `<hostname>-<pid>`."""
    if os.environ.get("IMAGENETTE_REPLICA_ID"):
        return os.environ["IMAGENETTE_REPLICA_ID"]
    revision = os.environ.get("K_REVISION")
    if revision:
        instance = cloud_run_instance_id()
        return (
            f"{revision}-{instance[:16]}" if instance else f"{revision}-{socket.gethostname()}-{os.getpid()}"
        )
    return f"{socket.gethostname()}-{os.getpid()}"
