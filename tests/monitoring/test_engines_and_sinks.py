"""DuckDB and Ray Data give the same window table; alerts reach a webhook and GitHub's repository_dispatch."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.cli import cli_main
from imagenette_drift.commands.monitor import load_context
from imagenette_drift.monitoring.service import Monitor, MonitorConfig
from imagenette_drift.monitoring.sinks import StdoutSink
from imagenette_drift.monitoring.windows import WindowSpec
from tests.monitoring._logs import Outputs, spread_over_replicas, write_labels

pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=45)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory, model: InferenceModel, clean_outputs: Outputs, noisy_outputs: Outputs) -> Path:
    root = tmp_path_factory.mktemp("engines") / "inference-log"
    ids = spread_over_replicas(root, model, clean_outputs, T0, STEP, seed=4)
    spread_over_replicas(root, model, noisy_outputs, T0 + dt.timedelta(minutes=30), STEP, seed=5)
    write_labels(root, ids[::3], clean_outputs.wnids[::3], T0 + dt.timedelta(hours=5), "rev1-b")
    return root


def _table(engine: str, spec: str, log: Path | str, checkpoint: Path, out: Path) -> list[dict]:
    context, sha = load_context(str(checkpoint), out / "cache", 0.05)
    config = MonitorConfig(str(log), out, WindowSpec.parse(spec), sha, engine=engine, flush=True)
    return [w.model_dump() for w in Monitor(config, context, [StdoutSink()]).run_once().windows]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and a
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a.keys() == row_b.keys()
        for key, value in row_a.items():
            if isinstance(value, float):
                assert math.isclose(value, row_b[key], rel_tol=1e-6, abs_tol=1e-9), key
            else:
                assert value == row_b[key], key


def test_duckdb_and_ray_give_the_same_window_table(
    log_dir: Path, trained_checkpoint: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for spec in ("16", "30m"):
            duck = _table("duckdb", spec, log_dir, trained_checkpoint, tmp_path / f"duck-{spec}")
            on_ray = _table("ray", spec, log_dir, trained_checkpoint, tmp_path / f"ray-{spec}")
            _same(duck, on_ray)
            assert sum(r["n_labelled"] for r in duck) == 14  # every third clean request got a label
    finally:
        ray.shutdown()
    assert [r["n"] for r in duck] == [40, 40]  # the 30 min windows: clean, then noisy


def test_ray_reads_a_gs_log_in_the_storage_emulator_as_duckdb_reads_it_from_disk(
    log_dir: Path, trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same files uploaded to the emulator: Ray Data's workers reach gs:// through gcsfs (started after
    STORAGE_EMULATOR_HOST is set, so the workers inherit it), and give the local DuckDB table."""
    ray = pytest.importorskip("ray")
    from tests.serve._gcs import StorageEmulator

    emulator = StorageEmulator(tmp_path / "emulator.log").start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        for path in sorted(log_dir.rglob("*.parquet")):
            emulator.upload("fleet-log", f"inference-log/{path.relative_to(log_dir)}", path)
        duck = _table("duckdb", "16", log_dir, trained_checkpoint, tmp_path / "duck")
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            on_ray = _table("ray", "16", "gs://fleet-log/inference-log", trained_checkpoint, tmp_path / "ray")
        finally:
            ray.shutdown()
        _same(duck, on_ray)
        assert len(duck) == 5 and sum(r["n_labelled"] for r in on_ray) == 14
    finally:
        emulator.stop()


class Recorder:
    """A real HTTP server on loopback that records every request (method, path, headers, JSON body)."""

    def __init__(self, status: int = 204) -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                recorder.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": json.loads(body),
                    }
                )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def test_alert_goes_to_repository_dispatch_and_webhook_and_the_token_never_shows(
    log_dir: Path,
    trained_checkpoint: Path,
    tmp_path: Path,
    recorder: Recorder,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "ghp_s3cr3t-token-for-the-test"
    monkeypatch.setenv("GITHUB_TOKEN", token)
    monkeypatch.setenv("GITHUB_API_URL", recorder.url)
    out = tmp_path / "out"
    argv = [
        "monitor",
        f"--log={log_dir}",
        f"--ckpt_path={trained_checkpoint}",
        f"--out={out}",
        "--window=20",
    ]
    argv += ["--alert_k=2", "--github_repo=acme/imagenette", f"--webhook={recorder.url}/hooks/drift"]
    cli_main(argv)
    printed = capsys.readouterr()

    dispatches = [r for r in recorder.requests if r["path"] == "/repos/acme/imagenette/dispatches"]
    hooks = [r for r in recorder.requests if r["path"] == "/hooks/drift"]
    assert len(dispatches) == 1 and len(hooks) == 1
    request = dispatches[0]
    assert request["headers"]["authorization"] == f"Bearer {token}"
    assert request["headers"]["accept"] == "application/vnd.github+json"
    assert request["headers"]["x-github-api-version"] == "2022-11-28"
    body = request["body"]
    assert body["event_type"] == "retrain" and set(body["client_payload"]) == {
        "window",
        "at",
        "statistics",
        "log",
    }
    payload = body["client_payload"]
    assert payload["log"] == str(log_dir) and payload["statistics"]["drift"] is True
    assert payload["statistics"]["window"] == payload["window"] and payload["statistics"]["n"] == 20
    assert hooks[0]["body"]["event"] == "alert_raised" and hooks[0]["body"]["window"] == payload["window"]

    # The token appears in no output, report or state file.
    assert token not in printed.out + printed.err
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_a_failing_sink_is_reported_and_the_run_completes(
    log_dir: Path,
    trained_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    failing = Recorder(status=500)
    try:
        out = tmp_path / "out"
        argv = ["monitor", f"--log={log_dir}", f"--ckpt_path={trained_checkpoint}", f"--out={out}"]
        cli_main([*argv, "--window=20", "--alert_k=2", f"--webhook={failing.url}/hook"])
    finally:
        failing.close()
    printed = capsys.readouterr()
    # The refused webhook was tried, the other sink (stdout) still got the event, and the run went on.
    assert [r["body"]["event"] for r in failing.requests][:1] == ["alert_raised"]
    assert '"event": "alert_raised"' in printed.out
    assert (out / "windows.parquet").is_file()
