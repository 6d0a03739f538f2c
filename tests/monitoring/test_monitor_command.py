"""`imagenette monitor` over a real multi-replica log: the model's real outputs on real (corrupted) images."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagenette_drift.checkpoint import InferenceModel, load_for_inference
from imagenette_drift.cli import cli_main
from imagenette_drift.monitoring.report import format_rows
from imagenette_drift.monitoring.status import MonitorStatus
from tests.monitoring._logs import Outputs, model_outputs, spread_over_replicas, write_labels

pytestmark = pytest.mark.slow

# Yesterday, so that --log_retention_days keeps these files whenever the test runs.
T0 = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
STEP = dt.timedelta(seconds=30)  # 40 images take 20 minutes; the noisy stream starts an hour later
REPLICAS = ("rev1-a", "rev1-b", "rev1-c")


def _predicted(model: InferenceModel, outputs: Outputs) -> list[str]:
    return [model.card.wnids[int(i)] for i in outputs.probs.argmax(dim=1)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, model: InferenceModel, clean_outputs: Outputs, noisy_outputs: Outputs) -> dict:
    """A log written by three replicas: a clean stream at 08:00, gaussian noise (severity 5) at 09:00."""
    root = tmp_path_factory.mktemp("fleet") / "inference-log"
    clean_ids = spread_over_replicas(root, model, clean_outputs, T0, STEP, REPLICAS, seed=1)
    noisy_ids = spread_over_replicas(
        root, model, noisy_outputs, T0 + dt.timedelta(hours=1), STEP, REPLICAS, seed=2
    )
    return {"root": root, "clean_ids": clean_ids, "noisy_ids": noisy_ids}


def _copy(fleet: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fleet["root"], tmp_path / "inference-log"))


def _monitor(log: Path, checkpoint: Path, out: Path, *extra: str) -> MonitorStatus:
    cli_main(["monitor", f"--log={log}", f"--ckpt_path={checkpoint}", f"--out={out}", "--threads=1", *extra])
    return MonitorStatus.model_validate_json((out / "monitor_report.json").read_text())


def _alert_lines(printed: str) -> list[dict]:
    return [json.loads(line) for line in printed.splitlines() if line.startswith("{")]


@pytest.mark.full_data
def test_corrupted_stream_over_three_replicas_is_flagged_and_the_clean_one_is_not(
    full_checkpoint: Path, full_val_paths: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("corrupt_tta")
    model = load_for_inference(full_checkpoint)
    log = tmp_path / "inference-log"
    clean = model_outputs(model, full_val_paths)
    noisy = model_outputs(model, full_val_paths, "gaussian_noise", 5)
    spread_over_replicas(log, model, clean, T0, STEP, REPLICAS, records_per_file=10, seed=1)
    spread_over_replicas(
        log, model, noisy, T0 + dt.timedelta(hours=1), STEP, REPLICAS, records_per_file=10, seed=2
    )
    status = _monitor(log, full_checkpoint, tmp_path / "out", "--window=60", "--alert_k=2")
    printed = capsys.readouterr().out
    windows = status.windows
    assert [w.n for w in windows] == [60] * 4 and all(w.n_replicas == 3 for w in windows)
    assert [w.drift for w in windows] == [False, False, True, True]
    assert all(w.mmd_p_value < 0.02 and w.inputs_p_value < 0.01 for w in windows[2:])
    assert all(w.label_shift_p_value is not None for w in windows)  # 60 records: 6 per class on average
    events = _alert_lines(printed)
    assert [(e["event"], e["window"]) for e in events] == [("alert_raised", 3)]  # the second drifting window
    assert events[0]["statistics"]["drift"] and events[0]["log"] == str(log)
    print(format_rows([w.model_dump() for w in windows]))  # shown with -s: what the monitor printed

    # Each replica saw 40 corrupted images over the hour: no replica alone fills a window of 60.
    per_replica = {}
    for path in log.rglob("predictions/**/*.parquet"):
        table = pq.read_table(path)
        if table["timestamp"][0].as_py() >= T0 + dt.timedelta(hours=1):
            per_replica[table["replica_id"][0].as_py()] = per_replica.get(
                table["replica_id"][0].as_py(), 0
            ) + len(table)
    assert max(per_replica.values()) < 60 and len(per_replica) == 3


def test_the_corrupted_hour_of_a_fleet_is_flagged_and_alerts(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    status = _monitor(fleet["root"], trained_checkpoint, tmp_path / "out", "--window=20", "--alert_k=2")
    printed = capsys.readouterr().out
    windows = status.windows
    assert [w.n for w in windows] == [20, 20, 20, 20] and all(w.n_replicas == 3 for w in windows)
    assert [w.drift for w in windows[2:]] == [True, True]  # the corrupted hour
    assert all(w.inputs_p_value < 0.01 for w in windows[2:])
    assert all(w.label_shift_p_value is None for w in windows)  # 20 records < 5 per class: not tested
    # the card's primary estimate (COT on the held-out class shares; ATC-MC on older cards), without any label
    assert all(w.estimated_accuracy is not None and 0.0 <= w.estimated_accuracy <= 1.0 for w in windows)
    # The clean hour against the 40 held-out images of the reference: one alert, raised by the corrupted hour.
    events = _alert_lines(printed)
    assert [e["event"] for e in events] == ["alert_raised"] and events[0]["window"] in (2, 3)
    assert status.alert.active and status.files_read == 2 * 3 * 3  # 14/13/13 records per replica, 5 per file
    table = pq.read_table(tmp_path / "out" / "windows.parquet")
    assert table.num_rows == 4 and table["window"].to_pylist() == [0, 1, 2, 3]
    for name in ("monitor_report.png", "monitor_report.md", "metrics.prom"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "imagenette_monitor_alert_active 1.0" in (tmp_path / "out" / "metrics.prom").read_text()


def test_one_replica_alone_is_too_thin_for_a_window(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path
) -> None:
    # One replica's share of the corrupted stream is too thin for a window of 20: nothing can be tested.
    single = tmp_path / "one-replica"
    for path in fleet["root"].rglob("rev1-a-*.parquet"):
        if pq.read_table(path)["timestamp"][0].as_py() >= T0 + dt.timedelta(hours=1):
            dest = single / path.relative_to(fleet["root"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
    alone = _monitor(single, trained_checkpoint, tmp_path / "out-one", "--window=20")
    assert alone.windows == [] and 0 < alone.pending_records < 20


def test_hour_windows_hold_every_record_of_their_hour(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path
) -> None:
    hourly = _monitor(fleet["root"], trained_checkpoint, tmp_path / "out-1h", "--window=1h", "--flush")
    assert [w.n for w in hourly.windows] == [40, 40]
    # 40 records a window need a 200-image reference for MMD; the sample's 40 held-out images cannot calibrate
    # it, so the hour windows are left untested rather than tested uncalibrated.
    assert all(w.mmd_p_value is None and w.inputs_p_value is None and not w.drift for w in hourly.windows)

    assert hourly.windows[0].window_start == T0 and hourly.windows[1].window_end == T0 + dt.timedelta(hours=2)


def test_reruns_change_nothing_and_new_files_append_windows(
    fleet: dict,
    model: InferenceModel,
    noisy_outputs: Outputs,
    trained_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    log, out = _copy(fleet, tmp_path), tmp_path / "out"
    first = _monitor(log, trained_checkpoint, out, "--window=20", "--alert_k=2")
    table = (out / "windows.parquet").read_bytes()
    capsys.readouterr()
    again = _monitor(log, trained_checkpoint, out, "--window=20", "--alert_k=2")
    printed = capsys.readouterr().out
    assert (out / "windows.parquet").read_bytes() == table
    assert again.windows == first.windows and again.files_read_this_run == 0
    assert _alert_lines(printed) == []  # the alert is not sent twice
    assert "0 new file(s) read" in printed

    # Another hour of corrupted traffic: two more windows, the earlier ones unchanged.
    spread_over_replicas(log, model, noisy_outputs, T0 + dt.timedelta(hours=2), STEP, REPLICAS, seed=3)
    more = _monitor(log, trained_checkpoint, out, "--window=20", "--alert_k=2")
    assert more.windows[:4] == first.windows
    assert [w.window for w in more.windows] == [0, 1, 2, 3, 4, 5] and all(w.drift for w in more.windows[4:])
    assert more.files_read_this_run == 9


def test_realized_accuracy_is_exact_with_labels_posted_to_any_replica_later(
    fleet: dict,
    model: InferenceModel,
    clean_outputs: Outputs,
    trained_checkpoint: Path,
    tmp_path: Path,
) -> None:
    log, out = _copy(fleet, tmp_path), tmp_path / "out"
    ids = fleet["clean_ids"]  # in image order; request i served image i
    predicted = _predicted(model, clean_outputs)
    truth = clean_outputs.wnids
    labelled = list(range(0, 40, 2))  # half of the images get a label, posted to replica c
    write_labels(
        log, [ids[i] for i in labelled], [truth[i] for i in labelled], T0 + dt.timedelta(hours=3), "rev1-c"
    )
    status = _monitor(log, trained_checkpoint, out, "--window=20")

    served = pq.read_table(sorted(log.rglob("predictions/**/*.parquet")))
    order = served.sort_by([("timestamp", "ascending"), ("request_id", "ascending")])[
        "request_id"
    ].to_pylist()
    position = {rid: k for k, rid in enumerate(order)}

    def expected(label_set: list[int]) -> list[tuple[int, float]]:
        result = []
        for w in (0, 1):
            mine = [i for i in label_set if position[ids[i]] // 20 == w]
            result.append((len(mine), float(np.mean([predicted[i] == truth[i] for i in mine]))))
        return result

    assert [(w.n_labelled, w.realized_accuracy) for w in status.windows[:2]] == expected(labelled)
    assert all(w.n_labelled == 0 and w.realized_accuracy is None for w in status.windows[2:])

    # The other half arrives a day later on replica a: the same windows' accuracy is refreshed, exactly.
    rest = list(range(1, 40, 2))
    write_labels(log, [ids[i] for i in rest], [truth[i] for i in rest], T0 + dt.timedelta(hours=20), "rev1-a")
    status = _monitor(log, trained_checkpoint, out, "--window=20")
    assert [(w.n_labelled, w.realized_accuracy) for w in status.windows[:2]] == expected(list(range(40)))


def test_foreign_and_truncated_files_are_skipped_with_a_warning_naming_them(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log = _copy(fleet, tmp_path)
    a_file = sorted(log.rglob("predictions/**/*.parquet"))[0]
    foreign = a_file.with_name("someone-else.parquet")
    pq.write_table(pa.table({"request_id": ["x"], "score": [1.0]}), foreign)
    truncated = a_file.with_name("cut-short.parquet")
    truncated.write_bytes(a_file.read_bytes()[:-200])
    status = _monitor(log, trained_checkpoint, tmp_path / "out", "--window=20")
    err = capsys.readouterr().err
    assert "someone-else.parquet" in err and "not an inference-log file" in err
    assert "cut-short.parquet" in err and "not a readable Parquet file" in err
    assert sorted(Path(k).name for k in status.files_skipped) == ["cut-short.parquet", "someone-else.parquet"]
    assert [w.n for w in status.windows] == [20, 20, 20, 20]  # the valid files were all read


def test_retention_deletes_older_files_and_says_how_many(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log = _copy(fleet, tmp_path)
    old_day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).date().isoformat()
    olds = []
    for src in sorted(log.rglob("predictions/**/*.parquet"))[:2]:
        dest = Path(str(src).replace(f"date={T0.date().isoformat()}", f"date={old_day}"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        olds.append(Path(shutil.copy(src, dest)))
    n_before = len(list(log.rglob("*.parquet")))
    status = _monitor(log, trained_checkpoint, tmp_path / "out", "--window=20", "--log_retention_days=30")
    assert "retention: deleted 2 log file(s) older than 30 days" in capsys.readouterr().out
    assert not any(p.exists() for p in olds) and len(list(log.rglob("*.parquet"))) == n_before - 2
    assert status.files_deleted == 2 and [w.n for w in status.windows] == [20, 20, 20, 20]


@pytest.mark.parametrize("window", ["nonsense", "1"])
def test_bad_flags_are_one_line_errors(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, window: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _monitor(tmp_path, trained_checkpoint, tmp_path / "out", f"--window={window}")
    assert exit_info.value.code == 2 and "--window" in capsys.readouterr().err


def test_github_repo_without_a_token_is_refused(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        _monitor(tmp_path, trained_checkpoint, tmp_path / "out", "--github_repo=acme/models")
    assert "GITHUB_TOKEN" in capsys.readouterr().err


def test_a_gs_log_in_the_storage_emulator_is_read_and_retention_deletes_there(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    from tests.serve._gcs import StorageEmulator

    emulator = StorageEmulator(tmp_path / "emulator.log").start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        old_day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).date().isoformat()
        names = []
        for path in sorted(fleet["root"].rglob("*.parquet")):
            names.append(f"inference-log/{path.relative_to(fleet['root'])}")
            emulator.upload("fleet-log", names[-1], path)
        old = names[0].replace(f"date={T0.date().isoformat()}", f"date={old_day}")
        emulator.upload("fleet-log", old, fleet["root"] / names[0].removeprefix("inference-log/"))
        status = _monitor(
            "gs://fleet-log/inference-log",
            trained_checkpoint,
            tmp_path / "out",
            "--window=20",
            "--log_retention_days=30",
        )
        assert "retention: deleted 1 log file(s)" in capsys.readouterr().out
        remaining = {b.name for b in emulator.client().list_blobs("fleet-log")}
        assert old not in remaining and remaining == set(names)
        assert [w.n for w in status.windows] == [
            20,
            20,
            20,
            20,
        ] and status.log == "gs://fleet-log/inference-log"
    finally:
        emulator.stop()


def _wandb_history(run_file: Path, timeout_s: float = 120.0) -> list[dict]:
    """The `history` records of an offline W&B run file, once its `exit` record is written (W&B's service
    process writes the file behind `run.finish()`, later on a loaded machine)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        history, finished = _wandb_records(run_file)
        if finished or time.monotonic() > deadline:
            return history
        time.sleep(0.5)


def _wandb_records(run_file: Path) -> tuple[list[dict], bool]:
    """(history records, whether the `exit` record is there) of an offline W&B run file (LevelDB log format:
    7-byte header, 32 KiB blocks of chunks with a 7-byte header each; chunk types 1 full, 2 first, 3 middle,
    4 last), as `wandb sync` reads it."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, chunks, history, finished = run_file.read_bytes(), 7, 32768, b"", [], False
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            finished = finished or record.WhichOneof("record_type") == "exit"
            if record.WhichOneof("record_type") == "history":
                history.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return history, finished


def test_wandb_run_holds_the_window_series(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--wandb` without a key: an offline run (synced later with `wandb sync`) with one step per window and
    the window table's values."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    status = _monitor(fleet["root"], trained_checkpoint, out, "--window=20", "--wandb")
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    history = _wandb_history(run_file)
    assert [h["_step"] for h in history] == [w.window for w in status.windows] == [0, 1, 2, 3]
    for step, window in zip(history, status.windows, strict=True):
        assert step["monitor/n"] == window.n
        assert step["monitor/mmd_p_value"] == pytest.approx(window.mmd_p_value)
        assert step["monitor/drift"] == float(window.drift)
        assert step["monitor/estimated_accuracy"] == pytest.approx(window.estimated_accuracy)


def test_a_missing_local_log_is_a_one_line_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "no-such-log"
    with pytest.raises(SystemExit) as exit_info:
        _monitor(missing, tmp_path / "model.ckpt", tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert (
        err[-1].startswith("imagenette monitor: error: ") and f"the log {missing} does not exist" in err[-1]
    )


def test_reusing_out_with_another_log_is_refused_in_one_line(
    fleet: dict, trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = _copy(fleet, tmp_path)
    other = Path(shutil.copytree(fleet["root"], tmp_path / "other-log"))
    next(other.rglob("*.parquet")).unlink()  # a log whose files the first run's manifest does not match
    _monitor(first, trained_checkpoint, tmp_path / "out", "--window=20")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _monitor(other, trained_checkpoint, tmp_path / "out", "--window=20")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("imagenette monitor: error: ")
    assert "holds a monitor of log" in err[-1] and "pass another --out" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_an_empty_log_says_nothing_was_read_rather_than_all_clear(
    trained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log = tmp_path / "inference-log"  # a server started with --log that has served nothing yet
    log.mkdir()
    status = _monitor(log, trained_checkpoint, tmp_path / "out", "--window=20")
    out = capsys.readouterr().out
    assert status.windows == [] and status.files_read == 0 and not status.alert.active
    assert f"no prediction records of this checkpoint in {log} yet" in out and "alert clear" not in out
