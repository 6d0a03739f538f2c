"""`imagenette canary start|promote|rollback`: the exact gcloud commands (DRY_RUN, and a recording gcloud on
PATH), the release log they append to, and the /metrics figures the decision reads (real exposition text)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imagenette_drift.cli import cli_main
from imagenette_drift.errors import UserError
from imagenette_drift.registry import open_registry
from imagenette_drift.registry.lineage import append_event, read_events
from imagenette_drift.release.canary_log import RevisionSelector, read_window
from imagenette_drift.release.serving_metrics import MetricsError, histogram_quantile, read_metrics
from tests.release._canary_logs import fake_gcloud, metrics_server, metrics_text
from tests.release._cli import run_cli
from tests.release.conftest import BUCKET

SERVICE = ["--service", "imagenette-serve", "--region", "europe-west1", "--project", "my-project"]
URI = "gs://models/registry/0123456789ab/model.ckpt"


def _canary(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "canary", *args)


def test_dry_run_prints_the_exact_gcloud_commands_and_records_each_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRY_RUN", "1")
    registry = str(tmp_path / "registry")
    ids = ["--registry", registry, "--alert_id", "window-7", "--training_run", "gh-run-1234"]
    code, out, err = _canary(
        capsys, "start", *SERVICE, "--image", "europe-west1-docker.pkg.dev/p/r/serve:abc", "--candidate", URI,
        "--stable_revision", "imagenette-serve-00041-xyz", *ids,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "gcloud run deploy imagenette-serve --region europe-west1 --project my-project "
        "--image europe-west1-docker.pkg.dev/p/r/serve:abc --update-env-vars MODEL_URI=" + URI
        + " --tag canary --no-traffic",
        "gcloud run services update-traffic imagenette-serve --region europe-west1 --project my-project "
        "--to-tags canary=10",
    ]  # fmt: skip
    code, out, _ = _canary(capsys, "promote", *SERVICE, "--candidate", "0123456789ab", *ids)
    assert code == 0 and out == (
        "gcloud run services update-traffic imagenette-serve --region europe-west1 --project my-project "
        "--to-latest\n"
    )
    code, out, _ = _canary(
        capsys, "rollback", "--service", "s", "--region", "r", "--stable_revision", "s-00041-xyz",
        "--registry", registry,
    )  # fmt: skip
    assert (
        code == 0
        and out == "gcloud run services update-traffic s --region r --to-revisions s-00041-xyz=100\n"
    )

    events = read_events(open_registry(registry))
    assert [e["event"] for e in events] == ["canary.start", "canary.promote", "canary.rollback"]
    start, promote, rollback = events
    assert start["candidate"] == URI and start["percent"] == 10 and start["dry_run"] is True
    assert start["stable_revision"] == "imagenette-serve-00041-xyz"
    assert start["alert_id"] == promote["alert_id"] == "window-7"
    assert start["training_run"] == "gh-run-1234" and "alert_id" not in rollback
    assert rollback["commands"] == [
        [
            "gcloud",
            "run",
            "services",
            "update-traffic",
            "s",
            "--region",
            "r",
            "--to-revisions",
            "s-00041-xyz=100",
        ]
    ]
    # `imagenette registry lineage` prints the release log, all of it or the events naming one version.
    capsys.readouterr()
    cli_main(["registry", "--registry", registry, "lineage"])
    assert capsys.readouterr().out.splitlines() == [json.dumps(e, sort_keys=True) for e in events]
    cli_main(["registry", "--registry", registry, "lineage", "--version", "0123456789ab"])
    assert capsys.readouterr().out.splitlines() == [json.dumps(promote, sort_keys=True)]


def test_without_dry_run_gcloud_runs_and_its_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recording `gcloud` first on PATH stands in for Google Cloud (it fails `--to-latest` with status 7)."""
    calls = fake_gcloud(tmp_path / "bin", fail_on="--to-latest")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DRY_RUN", "0")
    registry = ["--registry", str(tmp_path / "registry")]
    code, out, err = _canary(
        capsys, "start", *SERVICE, "--image", "img:1", "--candidate", URI, "--percent", "25", *registry
    )
    assert (code, out, err) == (0, "", "")
    assert calls.read_text().splitlines() == [
        f"run deploy imagenette-serve --region europe-west1 --project my-project --image img:1 "
        f"--update-env-vars MODEL_URI={URI} --tag canary --no-traffic",
        "run services update-traffic imagenette-serve --region europe-west1 --project my-project --to-tags canary=25",
    ]
    code, out, err = _canary(capsys, "promote", *SERVICE, *registry)
    assert code == 2
    assert err == (
        "imagenette canary: error: `gcloud run services update-traffic imagenette-serve --region europe-west1 "
        "--project my-project --to-latest` failed with exit status 7 (see gcloud's output above).\n"
    )
    events = read_events(open_registry(tmp_path / "registry"))
    assert [(e["event"], e["dry_run"]) for e in events] == [
        ("canary.start", False),
        ("canary.promote", False),
    ]
    assert "error" not in events[0] and events[1]["error"].startswith("`gcloud run services update-traffic")


def test_bad_requests_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.delenv("IMAGENETTE_REGISTRY", raising=False)
    code, _, err = _canary(capsys, "promote", *SERVICE)
    assert code == 2 and "--registry is required" in err
    registry = ["--registry", str(tmp_path / "registry")]
    code, _, err = _canary(
        capsys, "start", *SERVICE, "--image", "i", "--candidate", URI, "--percent", "0", *registry
    )
    assert code == 2 and err == "imagenette canary: error: --percent must be in 1..100, got 0.\n"
    code, _, err = _canary(
        capsys, "start", *SERVICE, "--image", "i", "--candidate", "0123456789ab", *registry
    )
    assert code == 2 and "version '0123456789ab' is not registered" in err and err.count("\n") == 1


def test_the_release_log_keeps_every_line_under_concurrent_appends(tmp_path: Path) -> None:
    """Eight writers append at once through the registry's compare-and-swap: no line is lost."""
    location = tmp_path / "registry"

    def write(writer: int) -> None:
        registry = open_registry(location)  # one per writer, as separate processes would have
        for i in range(5):
            append_event(registry, {"event": "test", "writer": writer, "i": i})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    append_event(open_registry(location), {"event": "last"})
    events = read_events(open_registry(location))
    assert len(events) == 41 and events[-1]["event"] == "last"
    assert {(e["writer"], e["i"]) for e in events[:-1]} == {(w, i) for w in range(8) for i in range(5)}
    assert all(json.loads(line) for line in (location / "lineage.jsonl").read_text().splitlines())


def test_the_release_log_on_gcs_keeps_every_line_under_concurrent_appends(use_emulator: object) -> None:
    """The same compare-and-swap on GCS (`if_generation_match`), in the emulator."""
    location = f"gs://{BUCKET}/release-log-test"

    def write(writer: int) -> None:
        registry = open_registry(location)
        for i in range(3):
            append_event(registry, {"event": "test", "writer": writer, "i": i})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    events = read_events(open_registry(location))
    assert sorted((e["writer"], e["i"]) for e in events) == [(w, i) for w in range(4) for i in range(3)]


def test_metrics_are_read_from_a_scraped_server_and_from_a_file(tmp_path: Path) -> None:
    """The server's own exposition (ServerMetrics): 5xx rate and p95 latency per route, summed over sources."""
    text = metrics_text(ok=90, errors=10, latency_s=0.03)
    with metrics_server(text) as url:
        scraped = read_metrics([url])
    saved = tmp_path / "metrics.txt"
    saved.write_text(text)
    assert scraped == read_metrics([str(saved)])
    assert (scraped.requests, scraped.errors_5xx, scraped.error_rate) == (100, 10, 0.1)
    # All 100 observations fall in the (0.025, 0.05] bucket: p95 interpolates to 0.025 + 0.95 * 0.025.
    assert scraped.latency_p95_s == pytest.approx(0.04875)
    assert scraped.latency_mean_s == pytest.approx(0.03)
    both = read_metrics([str(saved), str(saved)])  # two instances of one revision
    assert (both.requests, both.errors_5xx, both.sources) == (200, 20, 2)
    health = read_metrics([str(saved)], route="/health")
    assert (health.requests, health.errors_5xx) == (1, 0)


def test_histogram_quantile_matches_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.5, 60.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (50 - 10) / 50)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * (95 - 60) / 40)
    assert (
        histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1
    )  # open bucket: last finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_metrics_errors_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match=r"cannot read metrics file .*missing\.txt"):
        read_metrics([str(tmp_path / "missing.txt")])
    other = tmp_path / "other.txt"
    other.write_text("# TYPE up gauge\nup 1\n")
    with pytest.raises(MetricsError, match="has no imagenette_requests_total series"):
        read_metrics([str(other)])
    with metrics_server("x") as url, pytest.raises(MetricsError, match="answered HTTP 404"):
        read_metrics([url.replace("/metrics", "/nothing")])


def test_a_log_without_either_model_is_a_clear_error(tmp_path: Path) -> None:
    stable, canary = RevisionSelector("stable", "ab" * 32), RevisionSelector("canary", "cd" * 32, "svc-00002")
    with pytest.raises(UserError, match=r"holds no prediction records of stable \(model abababababab\) or "
                                        r"canary \(model cdcdcdcdcdcd on revision svc-00002\): check --log"):  # fmt: skip
        read_window(str(tmp_path / "empty-log"), stable, canary, 3600.0)
    with pytest.raises(UserError, match="pass --stable_revision and --canary_revision"):
        read_window(str(tmp_path), stable, RevisionSelector("canary", "ab" * 32), None)
