"""Expected user errors through the real `imagenette` command: one line naming the fix, exit 2, no traceback.

Also: `predict --data.predict_dir` runs on a machine without the Imagenette data set.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagenette_drift.cli import cli_main
from tests.conftest import CONFIGS, SAMPLE_ROOT

pytestmark = pytest.mark.slow

QUICKSTART = str(CONFIGS / "quickstart.yaml")
OFFLINE_URL = "http://127.0.0.1:9/imagenette2-160.tgz"  # a closed loopback port: what an offline machine gets


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("imagenette")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def foreign_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PyTorch file that is not an imagenette-drift checkpoint."""
    path = tmp_path_factory.mktemp("foreign") / "other.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}, "epoch": 1}, path)
    return path


@pytest.mark.parametrize(
    ("case", "fix"),
    [
        ("fit_offline_without_data", "--data.root="),
        ("fit_no_download", "--data.root="),
        ("test_missing_checkpoint", "Train one with `imagenette fit`"),
        ("predict_foreign_checkpoint", "Use a .ckpt written by `imagenette fit`"),
        ("predict_empty_folder", "pass a folder that holds images"),
        ("drift_missing_checkpoint", "Train one with `imagenette fit`"),
        ("drift_empty_folder", "pass a folder that holds images"),
        ("serve_foreign_checkpoint", "Use a .ckpt written by `imagenette fit`"),
        ("export_missing_checkpoint", "Train one with `imagenette fit`"),
    ],
)
def test_user_error_is_one_line_with_the_fix_and_exit_2(
    case: str, fix: str, tmp_path: Path, foreign_checkpoint: Path, request: pytest.FixtureRequest
) -> None:
    good = request.getfixturevalue("trained_checkpoint") if case == "drift_empty_folder" else None
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = str(tmp_path / "missing.ckpt")
    nowhere = f"--data.root={tmp_path / 'nowhere' / 'imagenette2-160'}"
    args = {
        "fit_offline_without_data": ["fit", "--config", QUICKSTART, nowhere, f"--data.url={OFFLINE_URL}"],
        "fit_no_download": ["fit", "--config", QUICKSTART, nowhere, "--data.download=false"],
        "test_missing_checkpoint": ["test", "--config", QUICKSTART, f"--data.root={SAMPLE_ROOT}", f"--ckpt_path={missing}"],
        "predict_foreign_checkpoint": [
            "predict", "--config", QUICKSTART, f"--data.root={SAMPLE_ROOT}", f"--ckpt_path={foreign_checkpoint}"
        ],
        "predict_empty_folder": ["predict", "--config", QUICKSTART, f"--data.predict_dir={empty}", f"--ckpt_path={missing}"],
        "drift_missing_checkpoint": ["drift", f"--ckpt_path={missing}", f"--data.predict_dir={SAMPLE_ROOT / 'val'}"],
        "drift_empty_folder": ["drift", f"--ckpt_path={good}", f"--data.predict_dir={empty}"],
        "serve_foreign_checkpoint": ["serve", f"--ckpt_path={foreign_checkpoint}"],
        "export_missing_checkpoint": ["export", f"--ckpt_path={missing}", f"--output={tmp_path / 'out.ckpt'}"],
    }[case]  # fmt: skip
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"imagenette {args[0]}: error: ") and fix in lines[0]
    assert not (tmp_path / "outputs").exists()  # nothing was started, logged or written


def test_predict_on_a_folder_needs_no_data_set(trained_checkpoint: Path, in_tmp: Path) -> None:
    folder = in_tmp / "uploads"
    folder.mkdir()
    for i, src in enumerate(sorted((SAMPLE_ROOT / "val").rglob("*.JPEG"))[:4]):
        (folder / f"img{i}.jpg").write_bytes(src.read_bytes())
    root = in_tmp / "no-data" / "imagenette2-160"
    cli_main(
        [
            "predict",
            "--config",
            QUICKSTART,
            f"--data.root={root}",
            f"--data.url={OFFLINE_URL}",  # any download attempt fails at once
            f"--ckpt_path={trained_checkpoint}",
            f"--data.predict_dir={folder}",
        ]
    )
    with open(in_tmp / "outputs" / "quickstart" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == [f"img{i}.jpg" for i in range(4)]
    assert not (in_tmp / "no-data").exists()


def test_gate_with_a_version_and_no_registry_says_a_registry_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMAGENETTE_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["gate", "--candidate", "af279dbf9649", f"--data.root={SAMPLE_ROOT}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0].startswith("imagenette gate: error: ")
    assert "a registry version needs --registry or IMAGENETTE_REGISTRY" in err[0]


def test_gate_falls_back_to_the_registry_in_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "registry"
    monkeypatch.setenv("IMAGENETTE_REGISTRY", str(registry))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["gate", "--candidate", "af279dbf9649", f"--data.root={SAMPLE_ROOT}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "needs --registry" not in err[0] and "Train one with" not in err[0]
