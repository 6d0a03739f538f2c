"""The inference log written by real `imagenette serve` replicas: records, SIGTERM flush, feedback, failing sinks."""

from __future__ import annotations

import io
import itertools
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests

from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.inference_log.schema import check_schema
from tests.serve._server import ServeProcess

pytestmark = pytest.mark.slow

TOKEN = "s3cret-feedback-token"
BUCKET = "inference-log"


def predict(url: str, data: bytes, request_id: str | None = None, timeout: float = 60) -> requests.Response:
    headers = {} if request_id is None else {"X-Request-ID": request_id}
    return requests.post(
        f"{url}/predict", files={"file": ("x.jpg", data, "image/jpeg")}, headers=headers, timeout=timeout
    )


def local_tables(root: Path, kind: str) -> list:
    """Every Parquet file of `kind` under a local log, schema-checked, as pyarrow tables."""
    tables = []
    for path in sorted((root / kind).rglob("*.parquet")):
        assert not path.name.startswith("."), f"a temporary file was left behind: {path}"
        check_schema(pq.read_schema(path), kind, str(path))
        tables.append(pq.read_table(path))
    return tables


def gcs_tables(client, prefix: str, kind: str) -> list:
    tables = []
    for blob in client.list_blobs(BUCKET, prefix=f"{prefix}/{kind}/"):
        assert blob.name.endswith(".parquet"), blob.name
        table = pq.read_table(io.BytesIO(blob.download_as_bytes()))
        check_schema(table.schema, kind, f"gs://{BUCKET}/{blob.name}")
        tables.append(table)
    return tables


def rows(tables: list) -> list[dict]:
    return [row for table in tables for row in table.to_pylist()]


def metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_three_replicas_log_every_answer_exactly_once(
    where: str, trained_checkpoint: Path, val_images: list[Path], tmp_path: Path, request
) -> None:
    """Traffic over three replicas writing one log; one gets SIGTERM mid-traffic. Every 200 has one record."""
    env: dict[str, str] = {}
    if where == "gcs":
        gcs = request.getfixturevalue("gcs")
        gcs.client().create_bucket(BUCKET)
        log, env = f"gs://{BUCKET}/fleet", {"STORAGE_EMULATOR_HOST": gcs.host}
    else:
        log = str(tmp_path / "log")
    # A timer that never fires during the test: files come from the record count and from SIGTERM's flush.
    flags = ["--log", log, "--log_flush_records", "7", "--log_flush_seconds", "600"]
    replicas = [
        ServeProcess(
            trained_checkpoint,
            tmp_path / f"replica{i}.log",
            *flags,
            "--cache_dir",
            str(tmp_path / f"cache{i}"),
            env=env,
        )
        for i in range(3)
    ]
    for replica in replicas:
        replica.start()
    try:
        for replica in replicas:
            replica.wait_healthy(timeout=180)
        bodies = [path.read_bytes() for path in val_images]
        n_requests, victim = 60, replicas[1]
        answers: dict[str, dict] = {}  # request id -> 200 JSON
        attempted: set[str] = set()
        done, lock = itertools.count(1), threading.Lock()
        killed = threading.Event()
        stopper = threading.Thread(target=victim.stop)  # SIGTERM to its process group

        def send(i: int) -> None:
            replica = replicas[i % 3]
            request_id = None if i % 4 == 0 else f"req-{i}-{uuid.uuid4().hex[:8]}"  # some ids from the server
            try:
                reply = predict(replica.url, bodies[i % len(bodies)], request_id, timeout=40)
            except requests.RequestException:
                return  # the SIGTERMed replica: no answer, so no record is owed
            finally:
                if next(done) == n_requests // 2 and not killed.is_set():
                    killed.set()
                    stopper.start()
            if reply.status_code == 200:
                body = reply.json()
                assert reply.headers["X-Request-ID"] == body["request_id"]
                assert request_id is None or body["request_id"] == request_id
                with lock:
                    answers[body["request_id"]] = body
            if request_id is not None:
                with lock:
                    attempted.add(request_id)

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(send, range(n_requests)))
        stopper.join()
        for replica in replicas:
            replica.stop()  # SIGTERM: each flushes what it buffered
    finally:
        for replica in replicas:
            replica.stop()

    tables = (
        gcs_tables(gcs.client(), "fleet", "predictions")
        if where == "gcs"
        else local_tables(Path(log), "predictions")
    )
    records = rows(tables)
    ids = [record["request_id"] for record in records]
    assert len(ids) == len(set(ids)), "a record was written twice"
    assert len(answers) >= n_requests // 2
    missing = set(answers) - set(ids)
    assert not missing, f"{len(missing)} answered requests have no record"
    by_id = {record["request_id"]: record for record in records}
    assert len({record["replica_id"] for record in records}) == 3
    for request_id, body in answers.items():
        record = by_id[request_id]
        assert record["predicted_wnid"] == body["wnid"]
        assert record["confidence"] == pytest.approx(body["confidence"], rel=1e-6)
        assert len(np.frombuffer(record["embedding"], "<f2")) == 512 and record["image"] is None
    # Records with ids the client chose but never got an answer for (cut off by SIGTERM) are allowed; unknown
    # client ids are not.
    client_ids = {i for i in ids if i.startswith("req-")}
    assert client_ids <= attempted


def test_record_fields_match_the_image(
    trained_checkpoint: Path, inference_model, val_images: list[Path], tmp_path: Path
) -> None:
    """Input statistics are those of the model-input image (as the drift reference computes them); images are
    stored only with --log_images; /feedback with its token appends label records, and nothing else does."""
    log = tmp_path / "log"
    process = ServeProcess(
        trained_checkpoint,
        tmp_path / "server.log",
        "--log", str(log), "--log_images", "--log_flush_seconds", "0.5",
        "--cache_dir", str(tmp_path / "cache"),
        env={"IMAGENETTE_FEEDBACK_TOKEN": TOKEN},
    )  # fmt: skip
    from imagenette_drift.data import read_image

    with process:
        path = val_images[3]
        reply = predict(process.url, path.read_bytes())
        assert reply.status_code == 200
        request_id = reply.json()["request_id"]
        uuid.UUID(request_id)  # a UUID when the client sends none
        runtime = requests.get(f"{process.url}/info", timeout=10).json()["serving"]["runtime"]
        assert predict(process.url, path.read_bytes(), "has spaces in it").status_code == 400

        url, good = f"{process.url}/feedback", {"Authorization": f"Bearer {TOKEN}"}
        body = {"request_id": request_id, "label": "n03888257"}
        assert requests.post(url, json=body, timeout=10).status_code == 401
        wrong = requests.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403 and "token" in wrong.json()["detail"]
        bad_bodies = [
            (b"{not json", 400),
            (b"[1, 2]", 400),
            (b'{"request_id": "x"}', 400),
            (b'{"request_id": "no spaces allowed", "label": "tench"}', 400),
            (b'{"request_id": 5, "label": "tench"}', 400),
            (b'{"request_id": "abc", "label": 3}', 400),
            (b'{"request_id": "abc", "label": "n99999999"}', 422),
            (b'{"request_id": "abc", "label": "dog"}', 422),
            (b"x" * 5000, 413),
        ]
        for data, status in bad_bodies:
            answer = requests.post(url, data=data, headers=good, timeout=10)
            assert answer.status_code == status, (data[:40], answer.text)
            assert answer.json()["detail"]
        accepted = requests.post(url, json=body, headers=good, timeout=10)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json() == {"request_id": request_id, "label_wnid": "n03888257", "status": "accepted"}
        by_name = requests.post(
            url, json={"request_id": "other-1", "label": "Parachute"}, headers=good, timeout=10
        )
        assert by_name.status_code == 202 and by_name.json()["label_wnid"] == "n03888257"
        deadline = time.monotonic() + 20
        while metric(process.url, "imagenette_log_records_written_total") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric(process.url, 'imagenette_log_records_written_total{kind="labels"}') == 2

    (record,) = rows(local_tables(log, "predictions"))
    assert record["request_id"] == request_id and record["image"] == path.read_bytes()
    image = read_image(path)
    assert (record["width"], record["height"]) == (image.shape[2], image.shape[1])
    assert record["format"] == "JPEG" and record["n_bytes"] == len(path.read_bytes())
    expected = image_statistics(inference_model.transform(image)[None])[0].numpy()
    np.testing.assert_allclose(record["image_stats"], expected, rtol=1e-5, atol=1e-6)
    assert record["model_sha256"] == inference_model.sha256 and record["runtime"] == runtime
    assert record["latency_ms"] > 0
    # the answer's familiarity, logged beside it (the checkpoint's card has a familiarity bank)
    assert record["knn_distance"] > 0 and isinstance(record["unfamiliar"], bool)
    assert record["energy"] is not None
    labels = rows(local_tables(log, "labels"))
    assert sorted((r["request_id"], r["label_wnid"]) for r in labels) == sorted(
        [("other-1", "n03888257"), (request_id, "n03888257")]
    )


def test_failing_sink_never_fails_a_prediction(
    trained_checkpoint: Path, val_images: list[Path], tmp_path: Path
) -> None:
    """A log path that becomes a file after start: predictions stay 200. With a working spill folder the
    records wait there and land once the path is fixed; without one they are dropped and counted. /feedback is
    off without a token. (A log that cannot be written at start is refused: test_command.py.)"""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    common = ("--log_flush_records", "2", "--log_flush_seconds", "0.5")
    spilling = ServeProcess(
        trained_checkpoint,
        tmp_path / "spilling.log",
        "--log", str(blocker / "log"), "--log_spill_dir", str(tmp_path / "spill"), *common,
        "--cache_dir", str(tmp_path / "cache1"),
    )  # fmt: skip
    dropping = ServeProcess(
        trained_checkpoint,
        tmp_path / "dropping.log",
        "--log", str(blocker / "log"), "--log_spill_dir", str(blocker / "spill"), *common,
        "--cache_dir", str(tmp_path / "cache2"),
    )  # fmt: skip
    spilling.start(), dropping.start()
    try:
        spilling.wait_healthy(timeout=180), dropping.wait_healthy(timeout=180)
        shutil.rmtree(blocker)
        blocker.write_text("a file where the log's folder should be")
        ids = []
        for process in (spilling, dropping):
            for path in val_images[:4]:
                reply = predict(process.url, path.read_bytes())
                assert reply.status_code == 200, reply.text
                ids.append(reply.json()["request_id"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            metric(spilling.url, "imagenette_log_records_spilled_total") < 4
            or metric(dropping.url, "imagenette_log_records_dropped_total") < 4
        ):
            time.sleep(0.2)
        assert metric(spilling.url, "imagenette_log_records_spilled_total") == 4
        assert metric(spilling.url, "imagenette_log_records_written_total") == 0
        assert metric(dropping.url, "imagenette_log_records_dropped_total") == 4
        assert metric(dropping.url, "imagenette_log_records_written_total") == 0
        off = requests.post(
            f"{dropping.url}/feedback", json={"request_id": ids[0], "label": "tench"}, timeout=10
        )
        assert off.status_code == 404 and "IMAGENETTE_FEEDBACK_TOKEN" in off.json()["detail"]

        blocker.unlink()  # the sink works again: the spilled files are published on the next retry
        deadline = time.monotonic() + 30
        while (
            metric(spilling.url, "imagenette_log_records_written_total") < 4 and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert metric(spilling.url, "imagenette_log_records_written_total") == 4
    finally:
        spilling.stop(), dropping.stop()
    logged = {record["request_id"] for record in rows(local_tables(blocker / "log", "predictions"))}
    assert logged == set(ids[:4])  # the spilled ones; the dropping replica's never arrive
    assert not list((tmp_path / "spill").rglob("*.parquet"))
