"""`imagenette export`: a serving copy that loads, predicts and tests exactly like the checkpoint it came from."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from imagenette_drift.checkpoint import file_sha256, load_for_inference, read_checkpoint
from imagenette_drift.cli import cli_main
from imagenette_drift.data import read_image
from tests.conftest import quickstart_args

pytestmark = pytest.mark.slow  # needs the session's trained checkpoint


def _assert_identical(a, b, where: str = "card") -> None:
    """Nested dicts/lists of tensors and plain values, equal to the bit."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def _probs(path: Path, images: list[Path]) -> torch.Tensor:
    model = load_for_inference(path)
    return model.predict_proba(torch.stack([model.transform(read_image(p)) for p in images]))


def test_export_drops_the_optimizer_state_and_predicts_identically(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dest = tmp_path / "serving" / "model.ckpt"
    cli_main(["export", "--ckpt_path", str(trained_checkpoint), "--output", str(dest)])

    original, exported = read_checkpoint(trained_checkpoint), read_checkpoint(dest)
    assert "optimizer_states" in original and "optimizer_states" not in exported
    assert "lr_schedulers" not in exported and "loops" not in exported
    _assert_identical(
        exported["imagenette_drift"], original["imagenette_drift"]
    )  # classes, preprocessing, drift
    assert exported["imagenette_drift"]["drift"] is not None
    assert exported["state_dict"].keys() == original["state_dict"].keys()
    for key, value in original["state_dict"].items():
        assert torch.equal(exported["state_dict"][key], value), key
    assert dest.stat().st_size < 0.6 * trained_checkpoint.stat().st_size
    out = capsys.readouterr().out
    assert file_sha256(dest) in out and str(dest) in out

    images = sorted((sample_root / "val").rglob("*.JPEG"))[:8]
    assert torch.equal(_probs(dest, images), _probs(trained_checkpoint, images))
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left beside it


def test_exported_checkpoint_tests_like_the_original(trained_checkpoint: Path, in_tmp: Path) -> None:
    dest = in_tmp / "model.ckpt"
    cli_main(["export", "--ckpt_path", str(trained_checkpoint), "--output", str(dest)])
    metrics = {}
    for ckpt in (trained_checkpoint, dest):
        cli = cli_main(quickstart_args("test", f"--ckpt_path={ckpt}"))
        metrics[ckpt] = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert metrics[dest] == metrics[trained_checkpoint]


def test_export_refuses_bad_input_and_writes_nothing(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    dest = tmp_path / "out" / "model.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", "--ckpt_path", str(not_a_checkpoint), "--output", str(dest)])
    assert exit_info.value.code == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert not dest.exists()

    before = file_sha256(trained_checkpoint)
    with pytest.raises(SystemExit):
        cli_main(["export", "--ckpt_path", str(trained_checkpoint), "--output", str(trained_checkpoint)])
    assert "is the checkpoint itself" in capsys.readouterr().err
    assert file_sha256(trained_checkpoint) == before


def test_exported_checkpoint_is_readable_by_group_and_others_under_umask_022(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "serving" / "model.ckpt"
    previous = os.umask(0o022)
    try:
        cli_main(["export", "--ckpt_path", str(trained_checkpoint), "--output", str(dest)])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
