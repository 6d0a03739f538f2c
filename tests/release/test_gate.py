"""`imagenette gate` on real checkpoints and the shipped sample's val folder (40 labelled images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.data.layout import scan_split
from imagenette_drift.registry import open_registry
from imagenette_drift.release.gate import evaluate
from tests.conftest import SAMPLE_ROOT
from tests.release._cli import run_gate as _gate

pytestmark = pytest.mark.slow  # trains two real models (the session's and a worse one)


def _top1(checkpoint: Path) -> float:
    model = load_for_inference(checkpoint)
    return evaluate(model, scan_split(SAMPLE_ROOT, "val", model.card.wnids), str(checkpoint)).top1


@pytest.fixture(scope="module")
def accuracies(trained_checkpoint: Path, worse_checkpoint: Path) -> dict[str, float]:
    """Both models' top-1 on the sample's val folder, computed directly image by image (not by the gate)."""
    found = {"trained": _top1(trained_checkpoint), "worse": _top1(worse_checkpoint)}
    # The fixtures must really differ by more than the tolerance, or the decisions below prove nothing.
    assert found["trained"] - found["worse"] > 0.02, found  # at least one image beyond the tolerance
    return found


def test_a_worse_candidate_is_refused_with_its_table(
    trained_checkpoint: Path, worse_checkpoint: Path, accuracies: dict[str, float],
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    md, js = tmp_path / "gate.md", tmp_path / "gate.json"
    code, out, err = _gate(
        capsys, "--candidate", str(worse_checkpoint), "--champion", str(trained_checkpoint),
        "--output", str(md), "--output", str(js),
    )  # fmt: skip
    assert code == 1
    assert err.startswith("imagenette gate: refused: candidate top-1") and err.count("\n") == 1, err
    assert "**REFUSED**" in out and md.read_text() == out.removesuffix("\n")
    worse, trained = f"{accuracies['worse']:.2%}", f"{accuracies['trained']:.2%}"
    assert (
        f"| top-1 | {trained} | {worse} | {(accuracies['worse'] - accuracies['trained']) * 100:+.2f} pt |"
        in out
    )
    assert "| images | 40 | 40 | |" in out
    decision = json.loads(js.read_text())
    assert decision["passed"] is False and decision["candidate"]["top1"] == pytest.approx(accuracies["worse"])
    assert decision["champion"]["top1"] == pytest.approx(accuracies["trained"])
    assert decision["tolerance"] == 0.005


def test_a_better_candidate_passes(
    trained_checkpoint: Path, worse_checkpoint: Path, accuracies: dict[str, float],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, out, err = _gate(
        capsys, "--candidate", str(trained_checkpoint), "--champion", str(worse_checkpoint)
    )
    assert code == 0 and err == "" and "**PASS**" in out
    assert f"| top-1 | {accuracies['worse']:.2%} | {accuracies['trained']:.2%} |" in out
    # The same model against itself passes with zero tolerance (the evaluation is deterministic).
    code, out, _ = _gate(
        capsys, "--candidate", str(trained_checkpoint), "--champion", str(trained_checkpoint), "--tolerance=0"
    )
    assert code == 0 and "+0.00 pt" in out


def test_with_no_champion_the_minimum_accuracy_applies(
    trained_checkpoint: Path, accuracies: dict[str, float], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _gate(capsys, "--candidate", str(trained_checkpoint))  # default minimum 0.85
    assert code == 1 and "the minimum 85.00% (no champion)" in err and "| model | none |" in out
    below = f"--min_accuracy={accuracies['trained']:.4f}"
    code, out, _ = _gate(
        capsys, "--candidate", str(trained_checkpoint), f"--min_accuracy={accuracies['trained'] - 0.01}"
    )
    assert code == 0 and "**PASS**" in out, below


def test_gate_reads_versions_from_the_registry(
    trained_checkpoint: Path, worse_checkpoint: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    registry = open_registry(tmp_path / "registry")
    champion, _ = registry.register(trained_checkpoint)
    candidate, _ = registry.register(worse_checkpoint)
    registry.promote(champion.version)
    code, out, _ = _gate(
        capsys,
        "--registry",
        str(tmp_path / "registry"),
        "--candidate",
        candidate.version,
        "--champion",
        "champion",
    )
    assert code == 1 and f"`{candidate.version}`" in out and f"`{champion.version}`" in out


def test_bad_input_is_one_line(
    trained_checkpoint: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _gate(capsys, "--candidate", str(tmp_path / "absent.ckpt"))
    assert code == 2 and "--candidate: Checkpoint" in err and err.count("\n") == 1, err
    code, _, err = _gate(capsys, "--candidate", str(trained_checkpoint), f"--data.root={tmp_path}")
    assert code == 2 and "--data.root:" in err and err.count("\n") == 1, err
