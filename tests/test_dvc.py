"""DVC: the committed remotes, a push/pull round trip, and the fit -> test -> drift -> report pipeline, run by
the real `dvc` on a temporary copy of the repo whose data set is the shipped sample."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SAMPLE_ROOT, skip_or_fail

DVC = Path(sys.executable).with_name("dvc")
if not DVC.exists() or shutil.which("git") is None:
    skip_or_fail("needs dvc (pip install -e '.[mlops]') and git", allow_module_level=True)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The environment of every dvc call: the venv's `imagenette` first on PATH, offline, few threads."""
    return os.environ | {
        "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "OMP_NUM_THREADS": "2",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command, return its stdout + stderr; fail the test with both when it fails."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{output}")
    return output


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """A git + DVC repo with the project's pipeline files, the sample as data/imagenette2-160 (`dvc add`ed),
    a one-epoch config with drift windows of 20, and the default remote pointed at a temporary folder (in .dvc/config.local)."""
    root = tmp_path_factory.mktemp("dvc") / "repo"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(REPO / "src" / "imagenette_drift", root / "src" / "imagenette_drift")
    (root / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(REPO / ".dvc" / name, root / ".dvc" / name)
    shutil.copytree(SAMPLE_ROOT, root / "data" / "imagenette2-160")
    config_path = root / "configs" / "imagenette.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["max_epochs"] = 1
    config["data"]["num_workers"] = 0
    # The sample's drift reference: half its 80 train images, enough for windows of 20 (not the 200 of the
    # real run, whose held-out split is 947 images; benchmarks/results/reference_size.md).
    config["data"]["val_fraction"] = 0.5
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["drift"]["window"] = 20
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    run(["git", "init", "-q"], root, env)
    run([str(DVC), "add", "-q", "data/imagenette2-160"], root, env)
    run([str(DVC), "remote", "modify", "--local", "local", "url", str(root.parent / "remote")], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "pipeline on the sample"], root, env)
    return root


def test_committed_remotes_default_to_a_local_folder(env: dict[str, str]) -> None:
    remotes = dict(line.split()[:2] for line in run([str(DVC), "remote", "list"], REPO, env).splitlines())
    assert remotes["local"] == str(REPO.parent / "dvc-remote")  # a folder beside the repo, like ../shared
    assert "url = ../../dvc-remote" in (REPO / ".dvc" / "config").read_text()  # relative to .dvc/: portable
    assert remotes["gcs"].startswith("gs://")
    assert remotes["gdrive"].startswith("gdrive://")
    assert run([str(DVC), "remote", "default"], REPO, env).strip() == "local"
    assert "gdrive_use_service_account = true" in (REPO / ".dvc" / "config").read_text()
    ignored = (REPO / ".dvc" / ".gitignore").read_text().split()
    assert {"/cache", "/tmp", "/config.local"} <= set(ignored)


def test_push_pull_round_trip_restores_identical_files(repo: Path, env: dict[str, str]) -> None:
    data = repo / "data" / "imagenette2-160"
    before = file_hashes(data)
    assert before == file_hashes(SAMPLE_ROOT) and len(before) == 121  # 120 JPEGs + noisy_imagenette.csv
    run([str(DVC), "push", "-q", "data/imagenette2-160.dvc"], repo, env)
    assert any((repo.parent / "remote").rglob("*"))

    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    status = run([str(DVC), "status", "data/imagenette2-160.dvc"], repo, env)
    assert "not in cache:       data/imagenette2-160" in status  # gone from the workspace and the cache
    run([str(DVC), "pull", "-q", "data/imagenette2-160.dvc"], repo, env)
    assert file_hashes(data) == before


@pytest.fixture(scope="module")
def reproduced(repo: Path, env: dict[str, str]) -> str:
    """`dvc repro` of the whole pipeline; returns its output."""
    return run([str(DVC), "repro"], repo, env)


@pytest.mark.slow
def test_repro_runs_the_pipeline_end_to_end(repo: Path, env: dict[str, str], reproduced: str) -> None:
    metrics = json.loads((repo / "metrics.json").read_text())
    test_run = json.loads((repo / "outputs/pipeline/test/test_metrics.json").read_text())
    assert metrics["test"]["top1"] == test_run["test/acc"] and 0.0 <= metrics["test"]["top1"] <= 1.0
    assert set(metrics["drift"]) == {"fpr", "power"}
    # windows of 20: fewer than 5 images per class, so no label-shift (chi-squared) test
    assert set(metrics["drift"]["power"]) == {"mmd", "ks", "inputs"}
    report = (repo / "outputs/pipeline/report/report.md").read_text()
    assert f"| test/top1 | {metrics['test']['top1']:.4f} |" in report
    assert (repo / "outputs/pipeline/report/learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(run([str(DVC), "status", "--json"], repo, env).splitlines()[-1]) == {}  # up to date
    shown = run([str(DVC), "metrics", "show", "--json"], repo, env)
    assert json.loads(shown)[""]["data"]["metrics.json"]["data"] == metrics


@pytest.mark.slow
def test_changing_one_param_reruns_only_its_stages(repo: Path, env: dict[str, str], reproduced: str) -> None:
    kept = [repo / "outputs/pipeline/checkpoints/best.ckpt", repo / "outputs/pipeline/test/test_metrics.json"]
    rerun = [
        repo / "outputs/pipeline/drift/shifted/drift_report.json",
        repo / "outputs/pipeline/report/report.md",
    ]
    before = {path: path.stat().st_mtime_ns for path in kept + rerun}
    run([str(DVC), "exp", "run", "-S", "drift.severity=5"], repo, env)
    assert all(path.stat().st_mtime_ns == before[path] for path in kept)  # fit and test were skipped
    assert all(path.stat().st_mtime_ns != before[path] for path in rerun)  # drift and report ran again
    shifted = json.loads((repo / "outputs/pipeline/drift/shifted/drift_report.json").read_text())
    assert shifted["source"]["severity"] == 5
    assert "| gaussian_noise-5 |" in (repo / "outputs/pipeline/report/report.md").read_text()
    assert json.loads(run([str(DVC), "status", "--json"], repo, env).splitlines()[-1]) == {}  # up to date


@pytest.mark.slow
@pytest.mark.full_data
def test_tracked_dataset_matches_the_full_data(full_root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """data/imagenette2-160.dvc records the md5 of the real Imagenette-160 (train, val, noisy_imagenette.csv)."""
    tracked = yaml.safe_load((REPO / "data" / "imagenette2-160.dvc").read_text())["outs"][0]
    (tmp_path / ".dvc").mkdir()
    run(["git", "init", "-q"], tmp_path, env)
    data = tmp_path / "data" / "imagenette2-160"
    for name in ("train", "val"):
        shutil.copytree(full_root / name, data / name, copy_function=_link_or_copy)
    shutil.copy(full_root / "noisy_imagenette.csv", data)
    run([str(DVC), "add", "--no-commit", "-q", "data/imagenette2-160"], tmp_path, env)
    computed = yaml.safe_load((tmp_path / "data" / "imagenette2-160.dvc").read_text())["outs"][0]
    assert (computed["md5"], computed["nfiles"], computed["size"]) == (
        tracked["md5"],
        tracked["nfiles"],
        tracked["size"],
    )


def _link_or_copy(source: str, dest: str) -> None:
    """Hard-link (no extra disk, read-only sources are fine) or copy across file systems."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)
