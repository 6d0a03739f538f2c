"""The estimation benchmarks: their metrics against direct computations, and a small real run of each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import import_or_fail

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import open_set  # noqa: E402


def test_fpr95_and_auroc_match_direct_counts() -> None:
    positive = torch.arange(100).float()  # familiar: low scores
    negative = torch.arange(50, 150).float()
    threshold = torch.quantile(positive.double(), 0.95)
    assert open_set.fpr_at_95_tpr(positive, negative) == pytest.approx(
        float((negative <= threshold).float().mean())
    )
    pairs = (negative[:, None] > positive[None, :]).float().mean() + 0.5 * (
        negative[:, None] == positive[None, :]
    ).float().mean()
    assert open_set.auroc(positive, negative) == pytest.approx(float(pairs), abs=1e-6)


@pytest.mark.slow
def test_benchmarks_run_on_the_sample(trained_checkpoint: Path, sample_root: Path, tmp_path: Path) -> None:
    import_or_fail("corrupt_tta", "the corruptions extra (pip install 'imagenette-drift[corruptions]')")
    common = [f"--ckpt_path={trained_checkpoint}", f"--data.root={sample_root}", "--threads=1"]
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "accuracy_estimation.py"),
            *common,
            "--corruptions",
            "fog",
            "gaussian_noise",
            "--severities",
            "5",
            "--meta-severities",
            "5",
            "--own-shifts",
            "rotate-90",
            "--windows",
            "20",
            "--n-windows",
            "2",
            f"--cells={tmp_path / 'cells'}",
            f"--output={tmp_path / 'acc'}",
        ],
        check=True,
    )
    results = json.loads((tmp_path / "acc.json").read_text())
    assert set(results["cells"]) == {"clean", "fog-5", "gaussian_noise-5", "rotate-90"}
    # The sample's held-out split lacks some classes: the card computes COT but not cot_ls.
    assert results["primary"] == "cot"
    methods = {
        "atc_mc",
        "atc_ne",
        "ac",
        "doc",
        "cot",
        "cott",
        "nuclear",
        "cot_f",
        "fd_reg",
        "meta_reg",
    }
    assert methods <= set(results["cells"]["fog-5"]["windows"]["20"])
    assert "cot_ls" not in results["cells"]["fog-5"]["windows"]["20"]
    table = (tmp_path / "acc.md").read_text()
    assert "| all corruptions (LOFO) | 20 | 2 |" in table and "| own shifts | 20 | 1 |" in table
    # Each cell's outputs are cached: a second run reads them instead of running the model.
    cached = sorted((tmp_path / "cells" / "outputs").rglob("*.pt"))
    assert {p.stem for p in cached} >= {"clean", "fog-5", "gaussian_noise-5", "rotate-90"}
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "open_set.py"),
            *common,
            "--excluded",
            "tench",
            "parachute",
            "--corruptions",
            "fog",
            f"--output={tmp_path / 'open'}",
        ],
        check=True,
    )
    groups = json.loads((tmp_path / "open.json").read_text())["groups"]
    assert groups["left-out classes"]["n"] == 8 and set(groups["fog-5"]) == {"msp", "energy", "knn", "n"}
