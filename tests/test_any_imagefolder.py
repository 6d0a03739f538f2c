"""Any ImageFolder, not only Imagenette: the class folders say what the classes are, from training to serving.

The other data set is real: three of the sample's classes, regrouped under new folder names (no wnids).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import requests

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.classes import IMAGENETTE_CLASSES
from imagenette_drift.cli import cli_main
from imagenette_drift.data import ImagenetteDataModule
from tests.conftest import CONFIGS, SAMPLE_ROOT
from tests.serve._server import ServeProcess

# Sample wnid -> the folder name it gets in the other data set.
REGROUPED = {"n01440764": "fish", "n02102040": "dog", "n03028079": "church_building"}
NAMES = sorted(REGROUPED.values())  # ["church_building", "dog", "fish"]: label order is sorted folder names


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class ImageFolder of real photos (8 train and 4 val images per class), named by folder."""
    root = tmp_path_factory.mktemp("other-data") / "pets"
    for split in ("train", "val"):
        for wnid, name in REGROUPED.items():
            shutil.copytree(SAMPLE_ROOT / split / wnid, root / split / name)
    return root


def test_the_class_folders_give_the_classes_and_labels(three_classes: Path) -> None:
    dm = ImagenetteDataModule(root=str(three_classes), val_fraction=0.25, num_workers=0)
    assert dm.class_names == NAMES == dm.wnids and dm.num_classes == 3
    dm.setup("fit")
    dm.setup("test")
    for split in ("train", "val", "test"):
        data = dm.splits[split]
        assert [NAMES[label] for label in data.labels] == [path.parent.name for path in data.paths]
    assert {len(dm.splits[s]) for s in ("train", "val", "test")} == {18, 6, 12}


def test_imagenette_keeps_its_table_and_wnid_folders_get_their_names(
    sample_root: Path, tmp_path: Path
) -> None:
    assert ImagenetteDataModule(root=str(sample_root)).classes == IMAGENETTE_CLASSES
    assert ImagenetteDataModule(root=str(tmp_path / "not-downloaded-yet")).classes == IMAGENETTE_CLASSES
    subset = tmp_path / "two-imagenette-classes"
    for split in ("train", "val"):
        for wnid in ("n03888257", "n01440764"):
            shutil.copytree(sample_root / split / wnid, subset / split / wnid)
    dm = ImagenetteDataModule(root=str(subset))
    assert dm.wnids == ["n01440764", "n03888257"] and dm.class_names == ["tench", "parachute"]


def test_a_val_folder_with_other_classes_is_named(three_classes: Path, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shutil.copytree(three_classes, root)
    (root / "val" / "dog").rename(root / "val" / "puppy")
    dm = ImagenetteDataModule(root=str(root))
    with pytest.raises(ValueError, match=r"missing \['dog'\], unexpected \['puppy'\]"):
        dm.setup("test")


@pytest.mark.slow
def test_fit_predict_drift_and_serve_another_data_set(
    three_classes: Path, in_tmp: Path, capsys: pytest.CaptureFixture
) -> None:
    common = [
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        f"--data.root={three_classes}",
        "--trainer.logger=false",
    ]
    cli = cli_main(["fit", *common, "--trainer.max_epochs=1", "--data.val_fraction=0.5"])
    assert cli.model.hparams.num_classes == 3 and cli.model.class_names == tuple(NAMES)
    checkpoint = in_tmp / "outputs" / "quickstart" / "checkpoints" / "last.ckpt"
    model = load_for_inference(checkpoint)
    assert model.card.class_names == tuple(NAMES) == model.card.wnids and model.card.drift is not None

    # `imagenette predict` writes the new names; the target column is each image's folder.
    cli_main(["predict", *common, f"--ckpt_path={checkpoint}"])
    with open(in_tmp / "outputs" / "quickstart" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {row["label"] for row in rows} <= set(NAMES)
    assert all(row["target"] == Path(row["path"]).parent.name for row in rows)

    # `imagenette drift`: 12 held-out images cannot calibrate drift tests: refused with the sizes and the fix.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "drift",
                f"--ckpt_path={checkpoint}",
                f"--data.predict_dir={three_classes / 'val'}",
                "--window=6",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "fewer than the 40 that calibrate" in err
    assert not (in_tmp / "outputs" / "drift").exists()

    # `imagenette serve` answers with the new names over real HTTP.
    with ServeProcess(checkpoint, in_tmp / "serve.log") as server:
        info = requests.get(f"{server.url}/info", timeout=10).json()
        assert info["class_names"] == NAMES == info["wnids"]
        image = sorted((three_classes / "val" / "dog").iterdir())[0]
        reply = requests.post(
            f"{server.url}/predict", files={"file": (image.name, image.read_bytes())}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["label"] == answer["top_k"][0]["label"] and answer["label"] in NAMES
        assert sorted(c["label"] for c in answer["top_k"]) == NAMES  # all three classes, no Imagenette ones
