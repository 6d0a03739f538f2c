"""`imagenette export-labelled` on logs written by a real server: the labelled images, byte for byte, by class."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from imagenette_drift.data.layout import scan_split
from tests.conftest import SAMPLE_ROOT
from tests.release._cli import run_cli
from tests.release.conftest import BUCKET, ServedLog

pytestmark = pytest.mark.slow  # trains a real model and runs real servers


def _export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "export-labelled", *args)


def test_labelled_images_become_a_data_root_with_the_base(
    served_log: ServedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_dir = tmp_path / "data"
    code, out, err = _export(
        capsys, "--log", str(served_log.root), "--output", str(out_dir), "--base", str(SAMPLE_ROOT)
    )
    assert code == 0, err
    labelled = {rid: (data, label) for rid, (data, label) in served_log.sent.items() if label is not None}
    # Every labelled request's image, under its label, with the bytes the client sent; nothing else from the log.
    logged = sorted((out_dir / "train").rglob("log-*"))
    assert len(logged) == len(labelled) == 40
    for path in logged:
        rid = path.stem.removeprefix("log-")
        assert path.suffix == ".jpg" and path.read_bytes() == labelled[rid][0]
        assert path.parent.name == labelled[rid][1]
    # The 5 unlabelled records (one of them had a label POSTed without the token: refused, so not here).
    summary = json.loads((out_dir / "export.json").read_text())
    assert summary["exported"] == 40 and summary["per_class"] == dict(
        Counter(v[1] for v in labelled.values())
    )
    assert (summary["records"], summary["labels"]) == (45, 41)
    assert (summary["skipped_unlabelled"], summary["skipped_imageless"], summary["orphan_labels"]) == (
        5,
        0,
        1,
    )
    # The base: every train image linked, and its val/ (the test set), so `fit --data.root` takes the folder.
    base_links = [p for p in (out_dir / "train").rglob("*") if p.is_symlink()]
    assert len(base_links) == 80 and all(
        p.resolve().is_relative_to(SAMPLE_ROOT.resolve()) for p in base_links
    )
    assert (out_dir / "val").is_symlink() and (out_dir / "val").resolve() == (SAMPLE_ROOT / "val").resolve()
    assert len(scan_split(out_dir, "train")) == 120 and len(scan_split(out_dir, "val")) == 40
    assert summary["base_per_class"] == {
        w: 8 for w in sorted(p.name for p in (SAMPLE_ROOT / "train").iterdir())
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"
    assert f"exported 40 labelled logged image(s) to {out_dir / 'train'}" in out
    assert (
        "skipped: 5 unlabelled record(s), 0 labelled record(s) without an image, 1 label(s) with no record"
        in out
    )

    # Without a base: only the logged images, in train/<wnid>/.
    alone = tmp_path / "alone"
    code, _, _ = _export(capsys, "--log", str(served_log.root), "--output", str(alone))
    assert code == 0 and sorted(p.name for p in alone.iterdir()) == ["export.json", "train"]
    assert len(list((alone / "train").rglob("*.jpg"))) == 40

    # The output is never merged into: a second export to the same folder is refused.
    code, _, err = _export(capsys, "--log", str(served_log.root), "--output", str(out_dir))
    assert code == 2 and "already exists" in err and err.count("\n") == 1


def test_a_log_without_images_has_nothing_to_export(
    imageless_log: ServedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _export(capsys, "--log", str(imageless_log.root), "--output", str(tmp_path / "data"))
    assert code == 2 and err.count("\n") == 1, err
    assert "10 of them on records without an image: serve with --log_images" in err
    assert not (tmp_path / "data").exists()


def test_labels_outside_the_base_are_refused_before_anything_is_written(
    served_log: ServedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(SAMPLE_ROOT, base)
    shutil.rmtree(base / "train" / "n01440764")
    code, _, err = _export(
        capsys, "--log", str(served_log.root), "--output", str(tmp_path / "d"), "--base", str(base)
    )
    assert code == 2 and "labels ['n01440764'] are not classes of --base" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]
    code, _, err = _export(
        capsys, "--log", str(served_log.root), "--output", str(tmp_path / "d"), "--base", str(tmp_path)
    )
    assert code == 2 and "has no train/ folder" in err
    code, _, err = _export(capsys, "--log", str(tmp_path / "nowhere"), "--output", str(tmp_path / "d"))
    assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_a_gs_log_in_the_storage_emulator_exports_the_same_images(
    served_log: ServedLog, use_emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for path in sorted(served_log.root.rglob("*.parquet")):
        use_emulator.upload(BUCKET, f"fleet/log/{path.relative_to(served_log.root)}", path)
    code, out, err = _export(capsys, "--log", f"gs://{BUCKET}/fleet/log", "--output", str(tmp_path / "data"))
    assert code == 0, err
    exported = {
        p.stem.removeprefix("log-"): p.read_bytes() for p in (tmp_path / "data" / "train").rglob("*.jpg")
    }
    assert exported == {rid: data for rid, (data, label) in served_log.sent.items() if label is not None}
    assert "skipped: 5 unlabelled record(s)" in out
