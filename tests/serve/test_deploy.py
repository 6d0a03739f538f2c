"""scripts/deploy_cloud_run.sh, dry run: the gcloud commands it would run, and its refusal of a bad MODEL_URI."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "deploy_cloud_run.sh"


def _dry_run(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT)], env={**os.environ, "DRY_RUN": "1", **env}, capture_output=True, text=True, timeout=60
    )


def test_deploy_builds_dockerfile_serve_and_deploys_with_model_uri() -> None:
    result = _dry_run(
        MODEL_URI="gs://models/prod/last.ckpt", PROJECT="p1", REGION="us-central1", CPU="4", TAG="t"
    )
    assert result.returncode == 0, result.stderr
    build, deploy = result.stdout.strip().splitlines()
    assert build.startswith("gcloud builds submit --project p1 --config ")
    image = "us-central1-docker.pkg.dev/p1/imagenette/imagenette-serve:t"
    assert f"gcloud run deploy imagenette-serve --project p1 --region us-central1 --image {image}" in deploy
    for flag in (
        "--cpu 4",
        "--memory 2Gi",
        "--concurrency 16",
        "--set-env-vars MODEL_URI=gs://models/prod/last.ckpt",
    ):
        assert flag in deploy
    assert (
        r"--args --workers=1\,--threads=4\,--runtime=onnx" in deploy
        and "--no-allow-unauthenticated" in deploy
    )


def test_deploy_refuses_a_model_uri_that_is_not_gcs() -> None:
    result = _dry_run(MODEL_URI="outputs/last.ckpt")
    assert result.returncode == 2 and "MODEL_URI must look like gs://BUCKET/OBJECT" in result.stderr
    result = subprocess.run(
        [str(SCRIPT)],
        env={k: v for k, v in os.environ.items() if k != "MODEL_URI"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "set MODEL_URI" in result.stderr
