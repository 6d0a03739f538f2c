"""A drift reference too small to calibrate the tests at the window asked for is refused with one line, by
`imagenette monitor`, `imagenette drift` and the server's `/drift`; at the measured size the tests run; and the
measured table holds: below the size a test's false-positive rate strays, at it the test is calibrated."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from imagenette_drift.card import CHECKPOINT_KEY
from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.cli import cli_main
from imagenette_drift.drift.reference import DriftReference, ReferenceSettings
from imagenette_drift.drift.reference_size import (
    MIN_REFERENCE,
    ReferenceTooSmallError,
    check_reference_size,
    min_reference_size,
)
from imagenette_drift.embedding import embed_folder
from tests.conftest import REPO, SAMPLE_ROOT

sys.path.insert(0, str(REPO / "benchmarks"))
import reference_size as bench


def test_the_table_is_looked_up_by_window_and_tests() -> None:
    assert min_reference_size(20, ("mmd",)) == MIN_REFERENCE["mmd"][20]
    assert min_reference_size(3, ("mmd",)) == MIN_REFERENCE["mmd"][20]  # below the first column: the first's
    assert min_reference_size(10_000) == max(t[max(t)] for t in MIN_REFERENCE.values())  # above: the last's
    assert min_reference_size(20) >= min_reference_size(20, ("mmd",))
    with pytest.raises(ValueError, match="unknown drift test"):
        min_reference_size(20, ("wasserstein",))
    needed = min_reference_size(20, ("mmd", "inputs"))
    check_reference_size(needed, 20, ("mmd", "inputs"))  # at the size: no error
    with pytest.raises(ReferenceTooSmallError) as error:
        check_reference_size(8, 20, ("mmd", "inputs"))
    line = str(error.value)
    assert (
        "\n" not in line
        and f"holds 8 images, fewer than the {needed}" in line
        and "--refit_reference" in line
    )


def test_the_smaller_window_suggested_is_one_whose_own_tests_the_reference_calibrates() -> None:
    """The label-shift test runs only from 5 records per class, so windows of 20 run MMD and the input statistics
    alone: a 60-image reference calibrates them there (40 needed), though not the 100-window's chi-squared."""

    def tests(window: int) -> tuple[str, ...]:
        return ("mmd", "inputs") + (("chi2",) if window >= 50 else ())

    with pytest.raises(ReferenceTooSmallError, match=r"or test windows of at most 20 images\.$"):
        check_reference_size(60, 100, tests)
    # Read as one fixed set (chi-squared at every size), no smaller window would do, and none was suggested.
    with pytest.raises(ReferenceTooSmallError) as error:
        check_reference_size(60, 100, ("mmd", "inputs", "chi2"))
    assert "at most" not in str(error.value)
    check_reference_size(60, 20, tests)  # the suggested window runs


@pytest.fixture(scope="module")
def small_reference_checkpoint(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's model with its drift reference fitted on 8 held-out images, as the quickstart's 10% split
    of the sample gave before: what a user's older checkpoint holds."""
    folder = tmp_path_factory.mktemp("eight")
    for path in sorted((SAMPLE_ROOT / "train").rglob("*.JPEG"))[::10][:8]:
        shutil.copy(path, folder / path.name)
    out = tmp_path_factory.mktemp("refit")
    # 8 images cannot calibrate windows of 20: the refit refuses, naming the sizes, and writes nothing.
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["drift", f"--ckpt_path={trained_checkpoint}", f"--refit_reference={folder}", f"--output={out}"]
        )
    assert exit_info.value.code == 2 and not (out / "model.ckpt").exists()
    model = load_for_inference(trained_checkpoint)
    reference = DriftReference.fit(
        *embed_folder(model, sorted(folder.iterdir())), settings=ReferenceSettings(window_size=20)
    )
    state = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    state[CHECKPOINT_KEY]["drift"] = reference.state_dict()
    torch.save(state, out / "model.ckpt")
    return out / "model.ckpt"


def test_refit_reference_writes_a_checkpoint_that_calibrates_the_window(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The sample's 80 train and 40 val images as a user's held-out folder: the refit checkpoint keeps the rest
    of the card and its reference holds all 120 images, for windows of 20."""
    cli_main(
        [
            "drift",
            f"--ckpt_path={trained_checkpoint}",
            f"--refit_reference={SAMPLE_ROOT}",
            f"--output={tmp_path}",
        ]
    )
    assert "refitted the drift reference on 120 images" in capsys.readouterr().out
    card = torch.load(tmp_path / "model.ckpt", weights_only=True)[CHECKPOINT_KEY]
    before = torch.load(trained_checkpoint, weights_only=True)[CHECKPOINT_KEY]
    assert card["drift"]["n_reference"] == 120 and card["drift"]["window_size"] == 20
    assert card["estimation"].keys() == before["estimation"].keys() and card["explanation"] is not None
    for key, value in before["estimation"].items():  # the estimation fields are kept, held-out rows included
        same = (
            torch.equal(card["estimation"][key], value)
            if torch.is_tensor(value)
            else card["estimation"][key] == value
        )
        assert same, key
    assert not list(tmp_path.glob(".model*"))  # no temp file left beside it


@pytest.mark.slow
def test_monitor_and_drift_refuse_a_reference_too_small_for_the_window(
    small_reference_checkpoint: Path, trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log = tmp_path / "log"  # refused before any record is read
    log.mkdir()
    for command in (
        ["monitor", f"--log={log}", f"--out={tmp_path / 'out'}", "--window=20"],
        [
            "drift",
            f"--data.predict_dir={SAMPLE_ROOT / 'val'}",
            f"--output={tmp_path / 'drift'}",
            "--window=20",
        ],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*command, f"--ckpt_path={small_reference_checkpoint}"])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2
        assert err.count("\n") == 0 and "holds 8 images, fewer than the" in err and "--refit_reference" in err
        assert not (tmp_path / "out" / "windows.parquet").exists() and not (tmp_path / "drift").exists()
    # A window larger than the folder is one window of the folder: refused for that size, saying so first.
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "drift",
                f"--data.predict_dir={SAMPLE_ROOT / 'val'}",
                f"--output={tmp_path / 'drift'}",
                "--window=50",
                f"--ckpt_path={small_reference_checkpoint}",
            ]
        )
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == "" and not (tmp_path / "drift").exists()
    assert err.strip().count("\n") == 0 and "--window 50 is more than the folder's 40 images" in err
    assert "windows of 40" in err
    # The session's checkpoint holds the sample's 40 held-out images: windows of 20 run.
    cli_main(
        [
            "drift",
            f"--data.predict_dir={SAMPLE_ROOT / 'val'}",
            f"--output={tmp_path / 'drift'}",
            "--window=20",
            f"--ckpt_path={trained_checkpoint}",
        ]
    )
    assert (tmp_path / "drift" / "drift_report.json").is_file()


@pytest.mark.slow
def test_the_server_turns_drift_off_for_a_reference_too_small(
    small_reference_checkpoint: Path, tmp_path: Path
) -> None:
    import requests

    from tests.serve._server import ServeProcess

    with ServeProcess(
        small_reference_checkpoint, tmp_path / "server.log", "--cache_dir", str(tmp_path)
    ) as server:
        drift = requests.get(f"{server.url}/drift", timeout=10)
    assert drift.status_code == 200
    body = drift.json()
    assert body["enabled"] is False and "holds 8 images, fewer than the" in body["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("window", [20])
def test_the_measured_sizes_hold(window: int) -> None:
    """Re-measure the table's boundary: at the size, every test the monitor runs is calibrated; at a fifth of it,
    MMD's rate strays between references (the false alarms a tiny reference gives)."""
    population = bench.Population()
    needed = min_reference_size(window, ("mmd", "ks", "inputs"))
    at = bench.false_positive_rates(population, needed, window, draws=40, windows_per_draw=50)
    for test in ("mmd", "ks", "inputs"):
        cell = bench.summarize(at[test], 50)
        # Wide margins: the interval and spread the table was drawn with, widened for 40 draws.
        assert 0.01 <= cell["mean"] <= 0.10 and cell["spread"] <= 0.06, (test, cell)
    below = bench.false_positive_rates(population, max(needed // 5, 4), window, draws=40, windows_per_draw=50)
    assert bench.summarize(below["mmd"], 50)["spread"] > 0.08
