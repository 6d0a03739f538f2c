"""Fixtures for the container tests: podman, the two images built once per session, and running them.

The images build from the repo as it is (`scripts/containers/build_images.py`, podman's layer cache makes a
rebuild of unchanged layers take seconds) on the local base of `scripts/containers/bootstrap_base.sh`.
Without podman or that base image the tests skip, and fail under CI=true (`.ci/run` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared_dir, skip_or_fail

pytestmark = [pytest.mark.container, pytest.mark.slow]

BUILD = REPO / "scripts" / "containers" / "build_images.py"
BASE_IMAGE = os.environ.get("BASE_IMAGE", "localhost/python:3.11-slim-bookworm")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`podman ARGS...`, its output captured as text; a failure shows podman's own error."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Both images built from the working tree, once per session: {"train": tag, "serve": tag}."""
    if shutil.which("podman") is None:
        skip_or_fail(
            "podman is not installed (scripts/containers/bootstrap_base.sh installs it; .ci/run does)"
        )
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        skip_or_fail(f"the base image {BASE_IMAGE} is missing (run scripts/containers/bootstrap_base.sh)")
    # One build at a time across pytest-xdist workers (a second worker finds every layer cached).
    with shared_dir(tmp_path_factory, "image-build") as (folder, _):
        log = folder / f"build-{os.getpid()}.log"
        with open(log, "w") as out:
            result = subprocess.run(
                [sys.executable, str(BUILD)], stdout=subprocess.PIPE, stderr=out, text=True, timeout=3600
            )
    assert result.returncode == 0, f"the image build failed:\n{log.read_text()[-4000:]}"
    built = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {"train": built[0]["tag"], "serve": built[1]["tag"]}
