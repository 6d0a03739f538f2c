"""Build the training and serving images with podman on a machine without a container registry.

Usage: python scripts/containers/build_images.py [--only train|serve]

The base image is the local one that `scripts/containers/bootstrap_base.sh` builds (run it first). pip inside
the build reaches the package index as pip on this host does: the host's pip settings (`pip config list` and
PIP_* variables: index, extra indexes, find-links, constraint file, CA bundle) go in as build arguments, and
the local folders and files they name are mounted read-only into the RUN steps (`podman build --volume`), so
nothing of this machine is written into the Dockerfiles or the images. Prints one JSON line per image: tag,
size in bytes, build seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("BASE_IMAGE", "localhost/python:3.11-slim-bookworm")
IMAGES = {
    "train": ("Dockerfile", "localhost/imagenette-drift:local"),
    "serve": ("Dockerfile.serve", "localhost/imagenette-serve:local"),
}
# The pip settings that decide where packages come from; the others (timeouts, ...) stay the image's own.
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "constraint", "cert", "trusted-host")
DEFAULT_INDEX = "https://pypi.org/simple"


def host_pip_settings() -> dict[str, str]:
    """This host's effective pip settings for PIP_KEYS: config files, then PIP_* variables over them."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():  # e.g. global.extra-index-url='file:///opt/pypi/simple file:///...'
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        if name in PIP_KEYS and not key.startswith(":env:"):
            settings[name] = value.strip().strip("'\"")
    for name in PIP_KEYS:
        value = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if value:
            settings[name] = value
    return settings


def _local_paths(value: str) -> list[Path]:
    """The local files and folders a pip setting names: plain paths and file:// URLs (an index's root)."""
    paths = []
    for token in value.split():
        path = Path(token.removeprefix("file://")) if token.startswith(("file://", "/")) else None
        if path is None or not path.exists():
            continue
        paths.append(path.parent if path.name == "simple" else path)  # an index links ../../files
    return paths


def build_arguments(settings: dict[str, str]) -> list[str]:
    """`--build-arg PIP_...=...` for each setting, `--volume P:P:ro` for each local path they name, and the
    torch index: the host's own index (its local wheels win a tie with the same release on a remote index)."""
    args = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    args += ["--build-arg", f"TORCH_INDEX_URL={settings.get('index-url', DEFAULT_INDEX)}"]
    mounts: set[Path] = set()
    for name, value in settings.items():
        args += ["--build-arg", f"PIP_{name.upper().replace('-', '_')}={value}"]
        mounts.update(_local_paths(value))
    for path in sorted(mounts):
        args += ["--volume", f"{path}:{path}:ro"]
    return args


def build(dockerfile: str, tag: str, extra: list[str]) -> dict[str, object]:
    start = time.monotonic()
    # Docker's image format keeps HEALTHCHECK (the OCI format has no such field and podman would drop it).
    command = ["podman", "build", "--format", "docker", "-f", dockerfile, "-t", tag, *extra, "."]
    subprocess.run(command, cwd=REPO, check=True)
    seconds = round(time.monotonic() - start, 1)
    size = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"tag": tag, "size_bytes": int(size), "build_s": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(IMAGES), help="build one image (default: both)")
    args = parser.parse_args(argv)
    extra = build_arguments(host_pip_settings())
    for name in [args.only] if args.only else list(IMAGES):
        dockerfile, tag = IMAGES[name]
        print(json.dumps(build(dockerfile, tag, extra)), flush=True)
    # The images these builds replaced (untagged, no children): a rebuilt torch layer frees about 6 GB. The
    # build cache's intermediate images are parents of the tagged ones and stay. Housekeeping only: an image
    # still in use by a running container makes podman refuse (exit 125), which must not fail the build.
    subprocess.run(["podman", "image", "prune", "--force"], check=False, capture_output=True)


if __name__ == "__main__":
    main()
