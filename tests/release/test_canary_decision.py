"""`imagenette canary decide` on real inference-log files written by two model versions serving the same real
images, and on the server's real /metrics text (scraped over HTTP and read from a file)."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from imagenette_drift.checkpoint import InferenceModel, export_checkpoint, load_for_inference
from imagenette_drift.cli import cli_main
from imagenette_drift.data.images import read_image
from imagenette_drift.estimation.reference import EstimationReference
from imagenette_drift.registry import open_registry
from imagenette_drift.registry.lineage import append_event, read_events
from tests._estimates import cot_estimate
from tests.release._canary_logs import fake_gcloud, metrics_server, metrics_text, serve_to_log
from tests.release._cli import run_cli
from tests.release.conftest import BUCKET

pytestmark = pytest.mark.slow  # trains two real models (the session's and a worse one)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
STABLE_REV, CANARY_REV = "imagenette-serve-00041-abc", "imagenette-serve-00042-def"
JUDGE = ["--min_records", "40", "--window", "1h"]


@pytest.fixture(scope="module")
def images(sample_root: Path) -> list[Path]:
    return sorted((sample_root / "val").rglob("*.JPEG"))


@pytest.fixture(scope="module")
def stable(trained_checkpoint: Path) -> InferenceModel:
    torch.set_num_threads(1)
    return load_for_inference(trained_checkpoint)


@pytest.fixture(scope="module")
def equal_checkpoint(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stable weights re-exported (`imagenette export`): a new model version (new sha256), equal answers."""
    dest = tmp_path_factory.mktemp("equal") / "model.ckpt"
    export_checkpoint(trained_checkpoint, dest)
    return dest


def _log(
    tmp: Path,
    stable: InferenceModel,
    canary: InferenceModel,
    images: list[Path],
    log: str | Path | None = None,
) -> str | Path:
    """Both revisions serve the same 40 images over the last minutes (Cloud Run splits one traffic stream),
    each from two instances; the stable revision also logged a 3-hour-old stream that the window leaves out."""
    log = log or tmp / "log"
    start = NOW - dt.timedelta(minutes=10)
    half = len(images) // 2
    for model, revision in ((stable, STABLE_REV), (canary, CANARY_REV)):
        for i, part in enumerate((images[:half], images[half:])):
            at = start + dt.timedelta(seconds=i)
            serve_to_log(model, part, log, f"{revision}-instance{i + 1}", at, spill_dir=tmp / "spill")
    old = NOW - dt.timedelta(hours=3)
    serve_to_log(stable, images[:5], log, f"{STABLE_REV}-instance1", old, spill_dir=tmp / "spill")
    return log


def _decide(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "canary", "decide", *args)


def _expected(model: InferenceModel, images: list[Path]) -> tuple[float, float | None, dict[str, int]]:
    """Estimated top-1 (COT with the card's reference, solved exactly), unfamiliar share and class counts,
    computed here directly from the model's outputs, not by the canary code."""
    from imagenette_drift.familiarity.reference import FamiliarityReference

    half = len(images) // 2  # in the batches the revisions served them (`_log`), for bit-equal outputs
    outputs = [
        model.embed_and_predict(torch.stack([model.transform(read_image(p)) for p in part]))
        for part in (images[:half], images[half:])
    ]
    features, probs = (torch.cat([o[k] for o in outputs]) for k in (0, 1))
    estimate = cot_estimate(probs, model.card.estimation)
    unfamiliar = None
    if model.card.familiarity:
        flags = FamiliarityReference.from_state_dict(model.card.familiarity).score(features)["unfamiliar"]
        unfamiliar = float(flags.float().mean())
    wnids = [model.card.wnids[int(i)] for i in probs.argmax(dim=1)]
    return estimate, unfamiliar, {w: wnids.count(w) for w in sorted(set(wnids))}


def test_an_equal_canary_is_promoted_and_recorded(
    stable: InferenceModel, equal_checkpoint: Path, trained_checkpoint: Path, images: list[Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    canary = load_for_inference(equal_checkpoint)
    assert canary.sha256 != stable.sha256
    log = _log(tmp_path, stable, canary, images)
    registry = tmp_path / "registry"
    monkeypatch.setenv("DRY_RUN", "1")
    with metrics_server(metrics_text(400, 0, 0.03)) as stable_url:
        (tmp_path / "canary.prom").write_text(metrics_text(40, 0, 0.03))
        code, out, err = _decide(
            capsys, "--log", str(log), "--stable", str(trained_checkpoint), "--canary", str(equal_checkpoint),
            "--stable_metrics", stable_url, "--canary_metrics", str(tmp_path / "canary.prom"), *JUDGE,
            "--registry", str(registry), "--alert_id", "window-12", "--training_run", "gh-run-77",
            "--output", str(tmp_path / "decision.json"), "--output", str(tmp_path / "decision.md"),
            "--apply", "--service", "imagenette-serve", "--region", "europe-west1", "--stable_revision", STABLE_REV,
        )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert out.startswith("## Canary\n\n**PROMOTE**: no worse than stable on estimated_accuracy")
    assert out.endswith(
        "gcloud run services update-traffic imagenette-serve --region europe-west1 --to-latest\n"
    )
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert (tmp_path / "decision.md").read_text() in out
    estimate, unfamiliar, counts = _expected(stable, images)
    for side in ("stable", "canary"):
        assert decision[side]["n"] == 40  # the 3-hour-old records are outside the window
        assert decision[side]["estimated_accuracy"] == pytest.approx(estimate, abs=0.01)
        assert decision[side]["class_counts"] == counts
        assert decision[side]["unfamiliar_share"] == (
            None if unfamiliar is None else pytest.approx(unfamiliar)
        )
    checks = {c["name"]: c for c in decision["checks"]}
    assert checks["class_shift"]["canary"] == 0.0 and checks["error_rate"]["passed"] is True
    assert checks["estimated_accuracy"]["passed"] is True and checks["latency_p95"]["passed"] is True

    events = read_events(open_registry(registry))
    assert [e["event"] for e in events] == ["canary.decide", "canary.promote"]
    decided, promoted = events
    assert decided["action"] == "promote" and decided["reason"] == decision["reason"]
    assert decided["alert_id"] == promoted["alert_id"] == "window-12"
    assert decided["training_run"] == promoted["training_run"] == "gh-run-77"
    assert (
        decided["canary_model"] == str(equal_checkpoint)
        and decided["canary"]["model_sha256"] == canary.sha256
    )
    assert promoted["commands"] == [
        [
            "gcloud",
            "run",
            "services",
            "update-traffic",
            "imagenette-serve",
            "--region",
            "europe-west1",
            "--to-latest",
        ]
    ]


def test_a_worse_canary_is_rolled_back_with_its_reason(
    stable: InferenceModel, worse_checkpoint: Path, trained_checkpoint: Path, images: list[Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    canary = load_for_inference(worse_checkpoint)
    log = _log(tmp_path, stable, canary, images)
    # The barely trained model answers differently from the trained one on the same images; by how much is
    # computed here, directly, and must clear the policy's bars or the test proves nothing.
    _, _, stable_counts = _expected(stable, images)
    canary_estimate, _, canary_counts = _expected(canary, images)
    classes = sorted(set(stable_counts) | set(canary_counts))
    table = np.array([[stable_counts.get(c, 0) for c in classes], [canary_counts.get(c, 0) for c in classes]])
    tv = 0.5 * float(np.abs(table[0] / 40 - table[1] / 40).sum())
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    assert tv > 0.1 and p_value < 0.01, (tv, p_value, stable_counts, canary_counts)

    monkeypatch.setenv("DRY_RUN", "1")
    registry = tmp_path / "registry"
    code, out, err = _decide(
        capsys, "--log", str(log), "--stable", str(trained_checkpoint), "--canary", str(worse_checkpoint),
        *JUDGE, "--registry", str(registry), "--output", str(tmp_path / "decision.json"),
        "--apply", "--service", "imagenette-serve", "--region", "europe-west1", "--stable_revision", STABLE_REV,
    )  # fmt: skip
    assert code == 1
    assert out.startswith("## Canary\n\n**ROLLBACK**: ") and "class_shift: class shares differ" in out
    assert out.endswith(
        f"gcloud run services update-traffic imagenette-serve --region europe-west1 --to-revisions {STABLE_REV}=100\n"
    )
    assert err.startswith("imagenette canary: rollback: ") and err.count("\n") == 1
    decision = json.loads((tmp_path / "decision.json").read_text())
    checks = {c["name"]: c for c in decision["checks"]}
    assert checks["class_shift"]["passed"] is False and checks["class_shift"]["canary"] == pytest.approx(tv)
    assert f"p {p_value:.2g}" in checks["class_shift"]["detail"]
    assert decision["canary"]["class_counts"] == canary_counts
    assert decision["canary"]["estimated_accuracy"] == pytest.approx(canary_estimate, abs=0.01)
    events = read_events(open_registry(registry))
    assert [(e["event"], e.get("action")) for e in events] == [
        ("canary.decide", "rollback"),
        ("canary.rollback", None),
    ]
    assert events[1]["stable_revision"] == STABLE_REV


@pytest.mark.full_data
def test_a_collapsed_canary_is_rolled_back_on_the_estimate_alone(
    full_epoch_checkpoint: Path, collapsed_checkpoint: Path, images: list[Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """No label anywhere: the canary (the stable model with its head collapsed) calls every image one class with
    near-certainty. COT (read from each revision's logged probabilities) sees it; ATC-MC would not. The
    class-shift check is switched off (--max_shift 1: no total variation exceeds it) so the decision rests on the
    estimate alone. The stable model is fitted on the full data, so the collapse costs it tens of points: a
    margin no CPU's rounding closes."""
    stable = load_for_inference(full_epoch_checkpoint)
    canary = load_for_inference(collapsed_checkpoint)
    log = _log(tmp_path, stable, canary, images * 2)
    canary_estimate, _, canary_counts = _expected(canary, images)
    assert len(canary_counts) == 1  # collapsed
    code, out, err = _decide(
        capsys, "--log", str(log), "--stable", str(full_epoch_checkpoint), "--canary", str(collapsed_checkpoint),
        *JUDGE, "--max_shift", "1", "--registry", str(tmp_path / "registry"),
        "--output", str(tmp_path / "decision.json"),
    )  # fmt: skip
    assert code == 1, (out, err)
    decision = json.loads((tmp_path / "decision.json").read_text())
    failed = [c["name"] for c in decision["checks"] if c["passed"] is False]
    assert failed == ["estimated_accuracy"], decision["checks"]
    assert decision["canary"]["estimation_method"] == decision["stable"]["estimation_method"] == "cot_ls"
    assert decision["canary"]["estimated_accuracy"] == pytest.approx(canary_estimate, abs=0.01)
    assert "| estimated top-1 (cot_ls) |" in out
    # The confidence-based estimate is fooled by the confident collapse: it rates the canary near 100%.
    reference = EstimationReference.from_state_dict(canary.card.estimation)
    probs = canary.embed_and_predict(torch.stack([canary.transform(read_image(p)) for p in images]))[1]
    assert reference.estimate(probs)["atc_mc"].estimate > 0.9


def test_more_5xx_or_slower_answers_roll_back_an_equal_model(
    stable: InferenceModel, equal_checkpoint: Path, trained_checkpoint: Path, images: list[Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    log = _log(tmp_path, stable, load_for_inference(equal_checkpoint), images)
    args = ["--log", str(log), "--stable", str(trained_checkpoint), "--canary", str(equal_checkpoint), *JUDGE,
            "--registry", str(tmp_path / "registry")]  # fmt: skip
    with (
        metrics_server(metrics_text(990, 10, 0.03)) as stable_url,
        metrics_server(metrics_text(45, 5, 0.03)) as canary_url,
    ):
        code, out, _ = _decide(capsys, *args, "--stable_metrics", stable_url, "--canary_metrics", canary_url)
    assert code == 1
    assert "**ROLLBACK**: error_rate: 5xx rate 10.00% (5/50) vs stable 1.00% (10/1000)" in out
    assert "latency_p95" not in out.split("\n")[2]  # the latency is equal: only the 5xx rate failed
    with (
        metrics_server(metrics_text(100, 0, 0.03)) as stable_url,
        metrics_server(metrics_text(100, 0, 0.4)) as canary_url,
    ):
        code, out, _ = _decide(capsys, *args, "--stable_metrics", stable_url, "--canary_metrics", canary_url)
    assert code == 1 and "**ROLLBACK**: latency_p95: p95 latency 487.5 ms vs stable 48.8 ms" in out


def test_too_few_records_hold_and_revisions_of_one_model_are_told_apart(
    stable: InferenceModel, trained_checkpoint: Path, images: list[Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A configuration-only canary serves the same checkpoint: its records are found by revision name."""
    log = _log(tmp_path, stable, stable, images)
    same = ["--log", str(log), "--stable", str(trained_checkpoint), "--canary", str(trained_checkpoint),
            "--registry", str(tmp_path / "registry"), "--window", "1h"]  # fmt: skip
    code, _, err = _decide(capsys, *same)
    assert code == 2 and "serve the same model" in err and "--stable_revision" in err and err.count("\n") == 1
    by_revision = [*same, "--stable_revision", STABLE_REV, "--canary_revision", CANARY_REV]
    code, out, err = _decide(
        capsys, *by_revision, "--min_records", "41", "--output", str(tmp_path / "d.json")
    )
    assert code == 3 and "**HOLD**: too few records to judge the model: stable 40, canary 40" in out
    assert err.startswith("imagenette canary: hold: ")
    code, out, _ = _decide(capsys, *by_revision, "--min_records", "40", "--window", "all")
    assert code == 0 and "| records | 45 | 40 |" in out  # `all`: the 3-hour-old stable records too


def test_a_scheduled_decide_judges_the_canary_in_progress_and_moves_the_champion(
    trained_checkpoint: Path, worse_checkpoint: Path, images: list[Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No --stable/--canary: the champion against the candidate of the lineage's open `canary.start`; a
    promotion runs gcloud (a recording stand-in on PATH) and moves the registry's champion to the canary."""
    registry = open_registry(tmp_path / "registry")
    champion, _ = registry.register(trained_checkpoint)
    registry.promote(champion.version)
    candidate, _ = registry.register(worse_checkpoint)
    append_event(registry, {"event": "canary.start", "service": "imagenette-serve", "candidate": candidate.version,
                            "stable_revision": STABLE_REV, "dry_run": False})  # fmt: skip
    # A rehearsed rollback (DRY_RUN=1) moved no traffic: the canary is still in progress.
    append_event(registry, {"event": "canary.rollback", "service": "imagenette-serve", "dry_run": True})
    log = _log(tmp_path, load_for_inference(champion.uri), load_for_inference(candidate.uri), images)
    calls = fake_gcloud(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("DRY_RUN", raising=False)
    args = ["--log", str(log), "--registry", str(tmp_path / "registry"), "--service", "imagenette-serve"]
    # The class shares of the two differ (see the rollback test): tolerated here to reach a promotion.
    code, out, err = _decide(capsys, *args, *JUDGE, "--max_shift", "1", "--apply", "--region", "europe-west1")
    assert (code, err) == (0, ""), out + err
    assert f"| model | `{champion.metadata['sha256'][:12]}` | `{candidate.metadata['sha256'][:12]}` |" in out
    assert (
        calls.read_text()
        == "run services update-traffic imagenette-serve --region europe-west1 --to-latest\n"
    )
    now = registry.champion()
    assert (now.version, now.previous) == (candidate.version, champion.version)
    decided, promoted = read_events(registry)[2:]
    assert (decided["stable_model"], decided["canary_model"]) == (champion.version, candidate.version)
    assert promoted["event"] == "canary.promote" and promoted["champion_moved"] is True
    assert promoted["champion"] == candidate.version and promoted["previous_champion"] == champion.version
    code, _, err = _decide(capsys, *args)
    assert code == 2 and "no canary in progress" in err


def test_on_gcs_a_canary_started_from_the_registry_is_judged_from_the_log_and_rolled_back(
    trained_checkpoint: Path, worse_checkpoint: Path, images: list[Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, use_emulator: object,
) -> None:  # fmt: skip
    """Production's layout in the GCS emulator: the registry (champion, candidate, lineage) and the inference
    log (written by the real GCS sink) under gs:// prefixes; `start`, then `decide --apply` with no models named."""
    prefix = f"gs://{BUCKET}/canary-{uuid.uuid4().hex[:8]}"
    registry = open_registry(f"{prefix}/registry")
    champion, _ = registry.register(trained_checkpoint)
    registry.promote(champion.version)
    candidate, _ = registry.register(worse_checkpoint)
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("IMAGENETTE_REGISTRY", registry.location)
    service = ["--service", "imagenette-serve", "--region", "europe-west1"]
    capsys.readouterr()
    cli_main(["canary", "start", *service, "--image", "img:1", "--candidate", candidate.version,
              "--stable_revision", STABLE_REV, "--alert_id", "window-3"])  # fmt: skip
    assert (
        f"--update-env-vars MODEL_URI={prefix}/registry/{candidate.version}/model.ckpt"
        in capsys.readouterr().out
    )
    cache = tmp_path / "cache"
    log = _log(tmp_path, load_for_inference(registry.fetch(champion.version, cache)),
               load_for_inference(registry.fetch(candidate.version, cache)), images, f"{prefix}/log")  # fmt: skip
    code, out, err = _decide(
        capsys, "--log", str(log), *JUDGE, *service, "--apply", "--cache_dir", str(cache)
    )
    assert code == 1 and "**ROLLBACK**: class_shift" in out, out + err
    assert out.endswith(f"--to-revisions {STABLE_REV}=100\n") and "| records | 40 | 40 |" in out
    events = read_events(registry)
    assert [e["event"] for e in events] == ["canary.start", "canary.decide", "canary.rollback"]
    assert events[1]["canary_model"] == candidate.version and events[1]["stable_model"] == champion.version
    assert registry.champion().version == champion.version  # a rollback leaves the champion in place
