"""`imagenette gate --log`: both models replay a production window that a real server logged with its images.

Every figure of the window is checked against a direct computation on the image files that were sent (read
from disk, not from the log), so the log reading, the window selection and the label join are all tested.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import torch

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from imagenette_drift.cli import cli_main
from imagenette_drift.data.images import read_image
from imagenette_drift.estimation.reference import EstimationReference
from imagenette_drift.familiarity.reference import FamiliarityReference
from tests._estimates import cot_estimate
from tests.conftest import SAMPLE_ROOT
from tests.release._cli import run_gate as _gate
from tests.release.conftest import BUCKET, ServedLog

pytestmark = pytest.mark.slow  # trains two real models and runs real servers

TEST_IMAGES = sorted((SAMPLE_ROOT / "val").rglob("*.JPEG"))


def _direct(model: InferenceModel, paths: list[Path]) -> dict[str, object]:
    """A model's window figures computed from the image files themselves (the 40 labelled test images)."""
    batch = torch.stack([model.transform(read_image(p)) for p in paths])
    embeddings, probs = model.embed_and_predict(batch)
    predicted = [model.card.wnids[i] for i in probs.argmax(dim=1).tolist()]
    estimate = cot_estimate(probs, model.card.estimation)  # both cards store class shares: the gate reads COT
    familiarity = FamiliarityReference.from_state_dict(model.card.familiarity)
    unfamiliar = float(familiarity.score(embeddings.float())["unfamiliar"].float().mean())
    realized = sum(p == path.parent.name for p, path in zip(predicted, paths, strict=True)) / len(paths)
    return {"predicted": predicted, "estimated": estimate, "unfamiliar": unfamiliar, "realized": realized}


@pytest.fixture(scope="module")
def direct(trained_checkpoint: Path, worse_checkpoint: Path) -> dict[str, dict[str, object]]:
    found = {
        name: _direct(load_for_inference(path), TEST_IMAGES)
        for name, path in (("trained", trained_checkpoint), ("worse", worse_checkpoint))
    }
    # The window's realized accuracy must separate the two by more than the tolerance used below.
    assert found["trained"]["realized"] - found["worse"]["realized"] > 0.02, found
    return found


def _expected_checks(cand: dict, champ: dict, tolerance: float) -> dict[str, bool]:
    return {
        "estimated accuracy": cand["estimated"] >= champ["estimated"] - tolerance - 1e-12,
        "unfamiliar share": cand["unfamiliar"] <= champ["unfamiliar"] + tolerance + 1e-12,
        "realized accuracy": cand["realized"] >= champ["realized"] - tolerance - 1e-12,
    }


def test_a_candidate_worse_on_the_window_is_refused_with_its_table(
    served_log: ServedLog, worse_checkpoint: Path, direct: dict, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    md, js = tmp_path / "gate.md", tmp_path / "gate.json"
    # --tolerance 0.99: the test set lets it through, so the refusal is the production window's alone.
    code, out, err = _gate(
        capsys, "--candidate", str(worse_checkpoint), "--champion", str(served_log.checkpoint),
        "--tolerance", "0.99", "--log", str(served_log.root), "--window", "40", "--window_tolerance", "0.01",
        "--output", str(md), "--output", str(js),
    )  # fmt: skip
    assert code == 1, (out, err)
    # The refusal leads with what failed (the window), then the test-set check that passed.
    assert err.startswith("imagenette gate: refused: production window: candidate worse ("), err
    assert "realized accuracy" in err.split("; candidate top-1 ")[0], err  # the failed checks, named first
    assert "; candidate top-1 " in err and err.count("\n") == 1, err
    assert md.read_text() == out.removesuffix("\n")
    production = json.loads(js.read_text())["production"]
    champ, cand = direct["trained"], direct["worse"]
    assert production["n_records"] == production["n_images"] == production["n_labelled"] == 40
    assert production["candidate"]["realized_accuracy"] == pytest.approx(cand["realized"])
    assert production["champion"]["realized_accuracy"] == pytest.approx(champ["realized"])
    assert production["candidate"]["estimated_accuracy"] == pytest.approx(cand["estimated"], abs=0.01)
    assert production["champion"]["estimated_accuracy"] == pytest.approx(champ["estimated"], abs=0.01)
    assert production["candidate"]["unfamiliar_share"] == pytest.approx(cand["unfamiliar"])
    disagree = sum(a != b for a, b in zip(champ["predicted"], cand["predicted"], strict=True)) / 40
    assert production["disagreement"] == pytest.approx(disagree)
    assert production["replay_agreement"] == 1.0  # the server ran the same fp32 torch model
    checks = {c["name"]: c["passed"] for c in production["checks"]}
    assert checks == _expected_checks(cand, champ, 0.01) and checks["realized accuracy"] is False
    assert production["passed"] is False
    realized_row = (
        f"| realized accuracy (n=40) | {champ['realized']:.2%} | {cand['realized']:.2%} | "
        f"{(cand['realized'] - champ['realized']) * 100:+.2f} pt |"
    )
    assert "### Production window" in out and realized_row in out
    assert f"| predictions that differ | | | {disagree:.2%} |" in out
    assert (
        "the last 40 records (--window 40)" in out
        and "40 records, 40 replayed by both models, 40 with a /feedback label" in out
    )


@pytest.mark.full_data
def test_a_collapsed_candidate_is_refused_on_the_estimate_alone(
    unlabelled_log: ServedLog, collapsed_checkpoint: Path, full_epoch_checkpoint: Path,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    """No label in the window: COT sees the collapse that confidence hides, and the gate refuses on it. The
    champion is a model fitted on the full data, the candidate the same model with its head collapsed: the
    estimates lie far apart (tens of points), whatever the CPU's rounding."""
    js = tmp_path / "gate.json"
    code, out, err = _gate(
        capsys, "--candidate", str(collapsed_checkpoint), "--champion", str(full_epoch_checkpoint),
        "--tolerance", "0.99", "--log", str(unlabelled_log.root), "--window", "1h", "--window_tolerance", "0.05",
        "--output", str(js),
    )  # fmt: skip
    assert code == 1, (out, err)
    production = json.loads(js.read_text())["production"]
    assert production["n_labelled"] == 0 and production["n_images"] == 20
    checks = {c["name"]: c["passed"] for c in production["checks"]}
    assert checks == {
        "estimated accuracy": False,
        "unfamiliar share": True,
    }  # same embeddings, same familiarity
    cand, champ = production["candidate"], production["champion"]
    assert cand["estimation_method"] == champ["estimation_method"] == "cot_ls"
    assert "| estimated accuracy (cot_ls) |" in out
    # Every image goes to the class rarest in held-out: COT's estimate is about that class's held-out share.
    collapsed = load_for_inference(collapsed_checkpoint)
    reference = EstimationReference.from_state_dict(collapsed.card.estimation)
    assert cand["estimated_accuracy"] == pytest.approx(min(reference.class_shares), abs=0.02)
    # ATC-MC, the confidence-based estimate, is fooled: it rates the collapsed model at least as high.
    batch = torch.stack([collapsed.transform(read_image(p)) for p in TEST_IMAGES[::2]])
    atc = reference.estimate(collapsed.embed_and_predict(batch)[1])["atc_mc"].estimate
    assert atc >= champ["estimated_accuracy"] - 0.05, (atc, champ)


def test_the_same_model_is_no_worse_and_shifts_nothing(
    served_log: ServedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    js = tmp_path / "gate.json"
    checkpoint = str(served_log.checkpoint)
    code, out, err = _gate(
        capsys, "--candidate", checkpoint, "--champion", checkpoint, "--tolerance", "0",
        "--log", str(served_log.root), "--window", "1h", "--window_tolerance", "0", "--output", str(js),
    )  # fmt: skip
    assert code == 0 and err == "" and "**PASS**" in out, (out, err)
    production = json.loads(js.read_text())["production"]
    # 1h: every record the model served (5 unlabelled train images, then the 40 labelled test images)
    assert production["n_records"] == 45 and production["n_labelled"] == 40
    assert production["disagreement"] == 0.0 and production["class_share_distance"] == 0.0
    assert all(c["passed"] for c in production["checks"]) and len(production["checks"]) == 3
    assert "| predicted class shares: total variation | | | 0.000 |" in out


@pytest.mark.full_data
def test_a_better_candidate_passes_on_the_worse_champions_window(
    full_epoch_checkpoint: Path, worse_checkpoint: Path, direct: dict, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    from tests.release.conftest import _serve_and_send

    # A model fitted on the full data against the one-batch champion: a margin no CPU's rounding can close.
    better = _direct(load_for_inference(full_epoch_checkpoint), TEST_IMAGES)
    assert better["realized"] - direct["worse"]["realized"] > 0.2, (better, direct["worse"])

    worse_log = _serve_and_send(
        worse_checkpoint, tmp_path / "log", [(p, True) for p in TEST_IMAGES], "--log_images"
    )
    js = tmp_path / "gate.json"
    code, out, err = _gate(
        capsys, "--candidate", str(full_epoch_checkpoint), "--champion", str(worse_checkpoint),
        "--log", str(worse_log.root), "--window", "40", "--window_tolerance", "0.05", "--output", str(js),
    )  # fmt: skip
    production = json.loads(js.read_text())["production"]
    checks = {c["name"]: c["passed"] for c in production["checks"]}
    assert checks == _expected_checks(better, direct["worse"], 0.05)
    assert production["candidate"]["realized_accuracy"] == pytest.approx(better["realized"])
    assert code == 0 and "**PASS**" in out and "Production window: **no worse**" in out, (out, err)


def test_latest_is_the_monitors_newest_window(
    served_log: ServedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    checkpoint = str(served_log.checkpoint)
    monitor_out = tmp_path / "monitor"
    cli_main(["monitor", "--log", str(served_log.root), "--ckpt_path", checkpoint, "--window", "20",
              "--out", str(monitor_out)])  # fmt: skip
    js = tmp_path / "gate.json"
    code, out, _ = _gate(
        capsys, "--candidate", checkpoint, "--champion", checkpoint, "--log", str(served_log.root),
        "--monitor_out", str(monitor_out), "--output", str(js),
    )  # fmt: skip
    production = json.loads(js.read_text())["production"]
    # 45 records make two full windows of 20; the newest (window 1) holds records 21-40, all labelled test images
    assert code == 0 and production["n_records"] == 20 and production["n_labelled"] == 20, out
    assert f"the monitor's latest window (1, 20 records, {monitor_out})" in out
    # Without a monitor folder: the newest UTC hour of the log (all 45 records, sent within a minute or two,
    # unless an hour boundary fell between them).
    code, out, _ = _gate(
        capsys, "--candidate", checkpoint, "--champion", checkpoint, "--log", str(served_log.root),
        "--output", str(js),
    )  # fmt: skip
    production = json.loads(js.read_text())["production"]
    logged = ds.dataset(served_log.root / "predictions", partitioning=None).to_table(columns=["timestamp"])
    hours = Counter(t.replace(minute=0, second=0, microsecond=0) for t in logged["timestamp"].to_pylist())
    newest = max(h for h, n in hours.items() if n >= 2)  # an hour holding 1 record is no window
    assert code == 0 and production["n_records"] == hours[newest], out
    assert f"the latest window (the UTC hour from {newest:%Y-%m-%d %H:%M}" in out


def test_without_images_only_the_champion_is_described(
    imageless_log: ServedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    checkpoint = str(imageless_log.checkpoint)
    js = tmp_path / "gate.json"
    code, out, err = _gate(
        capsys, "--candidate", checkpoint, "--champion", checkpoint, "--log", str(imageless_log.root),
        "--window", "10", "--output", str(js),
    )  # fmt: skip
    assert code == 0 and "**PASS**" in out  # the test set decides alone, and says so
    assert err.startswith("imagenette gate: warning: production window not compared (the log holds no images")
    production = json.loads(js.read_text())["production"]
    assert production["compared"] is False and production["candidate"] is None
    assert production["champion"]["source"] == "log" and production["champion"]["n_labelled"] == 10
    logged = [imageless_log.sent[r][1] for r in imageless_log.sent]
    assert production["champion"]["realized_accuracy"] is not None and len(logged) == 10
    assert "Production window: **not compared**" in out and "its logged answers" in out


def test_bad_window_input_is_one_line(
    served_log: ServedLog, worse_checkpoint: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    checkpoint = str(served_log.checkpoint)
    log = ["--log", str(served_log.root)]
    code, _, err = _gate(capsys, "--candidate", checkpoint, *log)
    assert code == 2 and "--log needs --champion" in err
    code, _, err = _gate(
        capsys, "--candidate", checkpoint, "--champion", checkpoint, *log, "--window", "soon"
    )
    assert code == 2 and "--window must be a record count" in err and "latest" in err
    code, _, err = _gate(
        capsys, "--candidate", checkpoint, "--champion", str(worse_checkpoint), *log, "--window", "5"
    )
    sha12 = load_for_inference(checkpoint).sha256[:12]
    assert code == 2 and f"models in the log: {sha12}" in err and err.count("\n") == 1, err
    code, _, err = _gate(
        capsys, "--candidate", checkpoint, "--champion", checkpoint, *log, "--monitor_out", str(tmp_path)
    )
    assert code == 2 and "--window latest reads the monitor's window table" in err and err.count("\n") == 1, (
        err
    )


def test_the_window_is_read_from_a_gs_log(
    served_log: ServedLog, use_emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for path in sorted(served_log.root.rglob("*.parquet")):
        use_emulator.upload(BUCKET, f"gate/log/{path.relative_to(served_log.root)}", path)
    checkpoint, js = str(served_log.checkpoint), tmp_path / "gate.json"
    code, out, err = _gate(
        capsys, "--candidate", checkpoint, "--champion", checkpoint, "--log", f"gs://{BUCKET}/gate/log",
        "--window", "40", "--output", str(js),
    )  # fmt: skip
    production = json.loads(js.read_text())["production"]
    assert code == 0 and production["n_images"] == production["n_labelled"] == 40, (out, err)
    assert f"in gs://{BUCKET}/gate/log" in out


def test_records_the_candidate_trained_on_are_left_out(
    served_log: ServedLog, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from imagenette_drift.release.labelled import export_labelled

    export_labelled(str(served_log.root), tmp_path / "data")  # the 40 labelled test images
    checkpoint, js = str(served_log.checkpoint), tmp_path / "gate.json"
    common = ["--candidate", checkpoint, "--champion", checkpoint, "--log", str(served_log.root)]
    trained = ["--exclude_trained", str(tmp_path / "data"), "--output", str(js)]
    code, out, err = _gate(capsys, *common, "--window", "1h", *trained)
    production = json.loads(js.read_text())["production"]
    assert code == 0 and production["n_records"] == 45 and production["n_images"] == 5, (out, err)
    assert production["champion"]["n_labelled"] == 0 and production["compared"] is True
    assert "40 record(s) the candidate trained on left out" in out
    # Every record of the window trained on: nothing to compare, said so; the test set decides.
    code, out, err = _gate(capsys, *common, "--window", "40", *trained)
    assert code == 0 and "all 40 records with an image were in the candidate's training data" in err, err
    assert json.loads(js.read_text())["production"]["compared"] is False
    code, _, err = _gate(capsys, *common, "--window", "40", "--exclude_trained", str(tmp_path))
    assert code == 2 and "is not a folder written by `imagenette export-labelled`" in err
