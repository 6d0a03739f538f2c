"""The inference-log writer and sinks in-process: real Parquet files on disk and in the GCS emulator."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.inference_log.schema import check_schema
from imagenette_drift.inference_log.sink import GcsSink, LocalSink
from imagenette_drift.inference_log.writer import InferenceLogWriter, PredictionPayload

SHA = "ab" * 32


def payload(rng: np.random.Generator, image: bytes | None = None) -> PredictionPayload:
    probs = rng.dirichlet(np.ones(10)).astype(np.float32)
    model_input = torch.from_numpy(rng.integers(0, 256, (1, 3, 40, 40), dtype=np.uint8))
    return PredictionPayload(
        predicted_wnid=f"n{int(probs.argmax()):08d}",
        confidence=float(probs.max()),
        probs=probs,
        embedding=rng.standard_normal(512).astype("<f2").tobytes(),
        image_stats=image_statistics(model_input)[0].numpy(),
        width=300,
        height=200,
        format="PNG",
        n_bytes=1234,
        image=image,
    )


def test_records_round_trip_through_parquet_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    writer = InferenceLogWriter(
        LocalSink(tmp_path / "log"), tmp_path / "spill", SHA, "host-1", "torch", flush_records=4
    )
    sent = [payload(rng, image=b"raw" if i == 0 else None) for i in range(10)]
    # familiarity, as a server whose card has a bank logs it (the others: a card without one, nulls)
    sent[1] = dataclasses.replace(sent[1], knn_distance=0.75, energy=-6.5, unfamiliar=True)
    day = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
    for i, item in enumerate(sent):
        # Two records after midnight: they belong to the next day's partition.
        stamp = day + dt.timedelta(seconds=2 if i >= 8 else 0)
        assert writer.submit_prediction(item, f"id-{i}", stamp, latency_ms=float(i))
    assert writer.submit_label("id-3", "n00000007", day)
    assert writer.close(timeout=30)
    assert not writer.submit_label("id-4", "n00000001", day)  # closed: refused and counted
    stats = writer.stats()
    assert stats.written == {"predictions": 10, "labels": 1} and stats.pending == 0
    assert stats.dropped == {"predictions": 0, "labels": 1}

    folder = tmp_path / "log" / "predictions"
    assert sorted(p.name for p in folder.iterdir()) == ["date=2026-03-01", "date=2026-03-02"]
    records = {}
    for path in folder.rglob("*.parquet"):
        assert path.parent.name == f"model={SHA[:12]}" and path.name.startswith("host-1-")
        check_schema(pq.read_schema(path), "predictions", str(path))
        records.update({r["request_id"]: r for r in pq.read_table(path).to_pylist()})
    assert len(records) == 10 and len(list(folder.rglob(".*"))) == 0
    for i, item in enumerate(sent):
        record = records[f"id-{i}"]
        assert record["embedding"] == item.embedding and record["latency_ms"] == i
        np.testing.assert_array_equal(np.float32(record["probs"]), item.probs)
        np.testing.assert_array_equal(np.float32(record["image_stats"]), item.image_stats)
        assert record["image"] == (b"raw" if i == 0 else None)
        familiarity = (record["knn_distance"], record["energy"], record["unfamiliar"])
        assert familiarity == ((0.75, -6.5, True) if i == 1 else (None, None, None))
    (label_file,) = (tmp_path / "log" / "labels").rglob("*.parquet")
    check_schema(pq.read_schema(label_file), "labels", str(label_file))
    assert pq.read_table(label_file).to_pylist()[0]["label_wnid"] == "n00000007"


def test_spilled_files_are_published_by_a_later_writer(tmp_path) -> None:
    """A restart picks up what an earlier process spilled (unique names: nothing written twice)."""
    rng = np.random.default_rng(1)
    blocked = tmp_path / "blocked"
    blocked.write_text("in the way")
    first = InferenceLogWriter(LocalSink(blocked / "log"), tmp_path / "spill", SHA, "a", "onnx")
    for i in range(3):
        first.submit_prediction(payload(rng), f"id-{i}", dt.datetime.now(dt.UTC), 1.0)
    assert first.close(timeout=30)
    assert first.stats().spilled["predictions"] == 3 and first.stats().written["predictions"] == 0
    os.remove(blocked)
    second = InferenceLogWriter(LocalSink(blocked / "log"), tmp_path / "spill", SHA, "b", "onnx")
    second.start()
    assert second.flush(timeout=30)
    assert second.close(timeout=30)
    assert second.stats().written["predictions"] == 3
    ids = {
        r["request_id"] for p in (blocked / "log").rglob("*.parquet") for r in pq.read_table(p).to_pylist()
    }
    assert ids == {"id-0", "id-1", "id-2"} and not list((tmp_path / "spill").rglob("*.parquet"))


def test_gcs_sink_uploads_once_with_a_does_not_exist_precondition(gcs) -> None:
    """The upload carries ifGenerationMatch=0 (the emulator ignores preconditions, so the request is checked)."""
    client = gcs.client()
    client.create_bucket("sink-test")
    sent: list[str] = []
    client._http.hooks["response"].append(lambda reply, *args, **kwargs: sent.append(reply.request.url))
    sink = GcsSink("gs://sink-test/some/prefix", client=client)
    sink.publish("predictions/date=2026-03-01/model=x/f.parquet", b"parquet bytes")
    blob = client.bucket("sink-test").get_blob("some/prefix/predictions/date=2026-03-01/model=x/f.parquet")
    assert blob.download_as_bytes() == b"parquet bytes"
    (upload,) = [url for url in sent if "/upload/" in url]
    assert "ifGenerationMatch=0" in upload


@pytest.mark.parametrize("bad", ["gs://", "s3://bucket"])
def test_gcs_sink_refuses_a_non_gcs_location(bad: str) -> None:
    with pytest.raises(ValueError, match="gs://BUCKET"):
        GcsSink(bad, client=object())


def test_writer_files_are_readable_as_one_dataset(tmp_path) -> None:
    rng = np.random.default_rng(2)
    writer = InferenceLogWriter(LocalSink(tmp_path), tmp_path / "spill", SHA, "r", "torch", flush_records=2)
    for i in range(5):
        writer.submit_prediction(payload(rng), f"id-{i}", dt.datetime.now(dt.UTC), 1.0)
    assert writer.close(timeout=30)
    table = pq.read_table(tmp_path / "predictions")  # hive partitions become columns
    assert table.num_rows == 5 and set(table.column("model").to_pylist()) == {SHA[:12]}
