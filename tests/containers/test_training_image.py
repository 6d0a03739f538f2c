"""The training image run as CI's train job runs it: `fit` then `test` on the sample, as a non-root user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.container, pytest.mark.slow]

IN_IMAGE = REPO / "scripts" / "containers" / "in_image.sh"


def in_image(work: Path, image: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`scripts/containers/in_image.sh IMAGE ARGS...` with podman, from `work` (mounted at /work)."""
    return subprocess.run(
        [str(IN_IMAGE), image, *args],
        cwd=work,
        env={**os.environ, "ENGINE": "podman", "WANDB_MODE": "offline", **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with what the quickstart reads: its configs and the shipped sample (the repo, mounted)."""
    work = tmp_path_factory.mktemp("repo")
    work.chmod(0o755)  # as a checkout is: readable by the container's user (mktemp makes it 0700)
    shutil.copytree(REPO / "configs", work / "configs")
    shutil.copytree(REPO / "data" / "sample", work / "data" / "sample")
    return work


def test_the_container_runs_as_a_non_root_user(built_images: dict[str, str], work: Path) -> None:
    result = in_image(work, built_images["train"], "-u", ENGINE_RUN_ARGS="--entrypoint id")
    assert result.returncode == 0, result.stderr
    expected = os.getuid() if os.getuid() != 0 else 1000  # root on the host: the image's own user
    assert int(result.stdout) == expected != 0


def test_fit_then_test_on_its_checkpoint_write_outputs_owned_by_the_invoking_user(
    built_images: dict[str, str], work: Path
) -> None:
    fit = in_image(
        work, built_images["train"], "fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs=1"
    )
    assert fit.returncode == 0, fit.stderr[-4000:]
    run = work / "outputs" / "quickstart"
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file() and checkpoint.stat().st_size > 1_000_000
    assert not (run / "test_metrics.json").exists()

    test = in_image(
        work,
        built_images["train"],
        "test",
        "--config",
        "configs/quickstart.yaml",
        "--ckpt_path",
        str(checkpoint.relative_to(work)),
    )
    assert test.returncode == 0, test.stderr[-4000:]
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    written = list((work / "outputs").rglob("*"))  # W&B's links into the container's /tmp dangle: lstat
    assert len(written) > 3
    owners = {(path.lstat().st_uid, path.lstat().st_gid) for path in written}
    assert owners == {(os.getuid(), os.getgid())}
