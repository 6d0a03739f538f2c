"""The release gate as ci.yml runs it: the gate job's own shell steps, run with bash and the real `imagenette`
on real checkpoints and a local registry, must refuse a worse candidate (and fail the job, which blocks the
deploy) and pass a better one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imagenette_drift.registry import open_registry
from tests.conftest import REPO, SAMPLE_ROOT

pytestmark = pytest.mark.slow  # trains two real models and runs the gate on both

JOB = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["gate"]


def _step(name_start: str) -> str:
    (step,) = [s for s in JOB["steps"] if s.get("name", "").startswith(name_start)]
    assert "${{" not in step["run"]  # everything comes from the environment, as on the runner
    return step["run"]


def _run_step(script: str, cwd: Path, **env: str) -> tuple[int, dict[str, str], str]:
    """Run one step's script as GitHub does (`bash -e`); return its status, its outputs and summary."""
    outputs, summary = cwd / "github_output", cwd / "github_summary"
    outputs.write_text("")
    summary.write_text("")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `imagenette`, `python`
    full_env = {**os.environ, "PATH": path, "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary),
                "OMP_NUM_THREADS": "1", **env}  # fmt: skip
    done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=full_env, capture_output=True, text=True)
    pairs = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return done.returncode, pairs, summary.read_text() + done.stdout + done.stderr


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A checkout-like folder whose data/imagenette2-160 is the shipped sample (its val/ is the test set)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "imagenette2-160").symlink_to(SAMPLE_ROOT)
    return tmp_path


def test_the_gate_job_refuses_a_worse_candidate_and_passes_a_better_one(
    trained_checkpoint: Path, worse_checkpoint: Path, workspace: Path
) -> None:
    registry = open_registry(workspace / "registry")
    champion, _ = registry.register(trained_checkpoint)
    registry.promote(champion.version)
    worse, _ = registry.register(worse_checkpoint)
    env = {"IMAGENETTE_REGISTRY": str(workspace / "registry"), "CANDIDATE": str(worse_checkpoint)}
    gate, refuse = _step("Gate the candidate"), _step("A refused candidate")

    # main: the registered worse version against the champion is refused, and the job then fails.
    code, outputs, shown = _run_step(gate, workspace, VERSION=worse.version, **env)
    assert code == 0, shown  # a verdict, not an error: the PR comment step still runs
    assert outputs == {"champion": champion.version, "passed": "false"}
    assert "**REFUSED**" in (workspace / "gate.md").read_text() and "**REFUSED**" in shown
    code, _, shown = _run_step(refuse, workspace)
    assert code == 1 and "::error::The release gate refused the candidate" in shown

    # main: the champion itself (a code-only change) passes without a new evaluation.
    code, outputs, _ = _run_step(gate, workspace, VERSION=champion.version, **env)
    assert (code, outputs) == (0, {"champion": champion.version, "passed": "true"})

    # a PR: the unregistered pipeline checkpoint, better than a worse champion, passes.
    other = open_registry(workspace / "other-registry")
    other.promote(other.register(worse_checkpoint)[0].version)
    code, outputs, shown = _run_step(
        gate, workspace, VERSION="", IMAGENETTE_REGISTRY=str(workspace / "other-registry"),
        CANDIDATE=str(trained_checkpoint),
    )  # fmt: skip
    assert code == 0 and outputs["passed"] == "true", shown
    assert "**PASS**" in (workspace / "gate.md").read_text()
