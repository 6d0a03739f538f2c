"""No secret leaks: with a GitHub token and a feedback token in the environment, the monitor's
repository_dispatch sink, the registry and the canary commands print, log and write neither anywhere."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
import torch

from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.cli import cli_main
from imagenette_drift.monitoring.alerts import AlertEvent
from imagenette_drift.monitoring.sinks import build_sinks, deliver
from tests.release._canary_logs import dispatch_recorder, metrics_server, metrics_text, serve_to_log

pytestmark = pytest.mark.slow  # the session's trained model serves the log

GITHUB_TOKEN = "ghp_leakcheck0123456789abcdefghijklmnopqrstuv"
FEEDBACK_TOKEN = "feedback-leakcheck-9f8e7d6c5b4a"
SECRETS = (GITHUB_TOKEN, FEEDBACK_TOKEN)


def _run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        cli_main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code)
    captured = capfd.readouterr()  # file-descriptor level: prints, logging, child processes
    return code, captured.out + captured.err


def _leaks(root: Path) -> list[str]:
    """Every file under `root` holding a secret's bytes."""
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in SECRETS)
    ]


def test_no_secret_in_any_output_log_report_or_lineage(
    trained_checkpoint: Path, sample_root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)
    monkeypatch.setenv("IMAGENETTE_FEEDBACK_TOKEN", FEEDBACK_TOKEN)
    monkeypatch.setenv("DRY_RUN", "1")
    registry = tmp_path / "registry"
    monkeypatch.setenv("IMAGENETTE_REGISTRY", str(registry))
    caplog.set_level(logging.DEBUG)
    printed = []

    # The monitor's sink: a real dispatch accepted (204), then one refused (403) whose error is reported.
    event = AlertEvent("raised", 12, "2026-03-01T12:00:00+00:00", {"window": 12, "drift": True, "n": 200})
    for status in (204, 403):
        with dispatch_recorder(status) as (url, requests):
            monkeypatch.setenv("GITHUB_API_URL", url)
            sinks = build_sinks(None, "acme/imagenette")
            failures = deliver(sinks, event, str(tmp_path / "log"))
        assert requests[0]["headers"]["authorization"] == f"Bearer {GITHUB_TOKEN}"  # the secret was in play
        assert requests[0]["body"]["client_payload"]["window"] == 12
        assert (failures == []) if status == 204 else ("HTTP 403" in failures[0])
        printed += [*failures, repr(sinks), capfd.readouterr().out]

    # Registry: register (its serving copy is a new model version), list, show, promote, a refused promotion.
    code, out = _run(capfd, "registry", "register", "--ckpt_path", str(trained_checkpoint))
    assert code == 0, out
    printed.append(out)
    (version,) = [p.name for p in registry.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for argv in (["list"], ["show", version], ["promote", version, "--expect_champion", "none"],
                 ["promote", version, "--expect_champion", "none"]):  # fmt: skip
        code, out = _run(capfd, "registry", *argv)
        printed.append(out)
    assert code == 2 and "cannot promote" in out

    # Canary: a log served by both versions, decided with /metrics scraped over HTTP, applied; then started.
    torch.set_num_threads(1)
    images = sorted((sample_root / "val").rglob("*.JPEG"))[:20]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    served = registry / version / "model.ckpt"
    for ckpt, replica in ((trained_checkpoint, "svc-00001-aaa-i1"), (served, "svc-00002-bbb-i1")):
        serve_to_log(load_for_inference(ckpt), images, tmp_path / "log", replica, start)
    with metrics_server(metrics_text(50, 0, 0.02)) as url:
        code, out = _run(
            capfd, "canary", "decide", "--log", str(tmp_path / "log"), "--stable", str(trained_checkpoint),
            "--canary", version, "--min_records", "20", "--stable_metrics", url, "--canary_metrics", url,
            "--output", str(tmp_path / "reports" / "canary.json"), "--output", str(tmp_path / "reports" / "canary.md"),
            "--alert_id", "window-12", "--apply", "--service", "svc", "--region", "r", "--stable_revision", "svc-00001-aaa",
        )  # fmt: skip
    assert code == 0 and "**PROMOTE**" in out, out
    printed.append(out)
    code, out = _run(
        capfd, "canary", "start", "--service", "svc", "--region", "r", "--image", "img:1",
        "--candidate", "gs://models/registry/abc/model.ckpt", "--alert_id", "window-12",
    )  # fmt: skip
    assert code == 0 and out.startswith("gcloud run deploy svc")
    printed.append(out)

    printed += [record.getMessage() for record in caplog.records]
    for secret in SECRETS:
        assert not [text for text in printed if secret in text]
    assert (registry / "lineage.jsonl").is_file() and (tmp_path / "reports" / "canary.json").is_file()
    assert any((tmp_path / "log").rglob("*.parquet"))
    assert _leaks(tmp_path) == []
    # The scan finds a secret when one is written: it is not vacuous.
    (tmp_path / "control.txt").write_text(f"token={GITHUB_TOKEN}")
    assert _leaks(tmp_path) == [str(tmp_path / "control.txt")]
