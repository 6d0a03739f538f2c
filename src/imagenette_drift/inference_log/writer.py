"""The replica side of the inference log: a background thread that batches records into Parquet files.

The request path only calls `submit_prediction` / `submit_label`, which put a tuple on a bounded queue and
never block or raise: when the queue is full the record is dropped and counted. The writer thread buffers
rows and every `flush_records` rows or `flush_seconds` (and on `flush`/`close`, which SIGTERM calls) writes
one Parquet file per (kind, date) partition and publishes it through the sink. A file the sink refuses is
spilled to a local folder and retried later; a file that cannot be spilled either is dropped and counted.
Memory is bounded by the queue (`max_queue` compact records) plus one batch of rows. The input statistics
of `drift.image_stats` arrive computed: the inference worker runs them on each batch it has just served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from imagenette_drift.inference_log.schema import (
    KINDS,
    LABEL_SCHEMA,
    PREDICTION_SCHEMA,
    RecordKind,
    file_name,
    partition_dir,
)
from imagenette_drift.inference_log.sink import LogSink, SinkError

log = logging.getLogger(__name__)

TAKE_CHUNK = 64  # queued records taken per wake-up, at least
COMPRESSION = "zstd"
MAX_RETRY_S = 60.0  # longest wait between retries of spilled files


@dataclass(frozen=True)
class PredictionPayload:
    """What an inference worker knows about one served image (picklable: numpy and bytes only).

    `image_stats` are `drift.image_stats.image_statistics` of the model input (the uint8 (3, S, S) image
    after the eval transform, the image the drift reference's input statistics were computed on), computed by
    the worker on its batch.
    """

    predicted_wnid: str
    confidence: float
    probs: np.ndarray  # float32 (C,), the card's class order
    embedding: bytes  # float16 little-endian (D,)
    image_stats: np.ndarray  # float32 (12,), drift.image_stats.FEATURE_NAMES
    width: int
    height: int
    format: str
    n_bytes: int
    image: bytes | None = None  # the original bytes, only with --log_images
    knn_distance: float | None = (
        None  # familiarity (familiarity/reference.py), None without a bank in the card
    )
    energy: float | None = None
    unfamiliar: bool | None = None


@dataclass
class WriterStats:
    """Record counts by kind since start (what /metrics exposes)."""

    written: dict[str, int]
    dropped: dict[str, int]
    spilled: dict[str, int]
    pending: int


class InferenceLogWriter:
    """Batch records into Parquet files under `sink` from a background thread (see the module docstring).

    Create it in the process that receives the records; `start` is called lazily by the first submit (so a
    writer built before a fork runs in the child). Thread-safe: submits may come from any thread.
    """

    def __init__(
        self,
        sink: LogSink,
        spill_dir: str | Path,
        model_sha256: str,
        replica_id: str,
        runtime: str,
        flush_records: int = 1000,
        flush_seconds: float = 30.0,
        max_queue: int = 512,
        retry_seconds: float = 5.0,
    ) -> None:
        """Args:
        sink: Where files are published (`open_sink`).
        spill_dir: Local folder for files the sink refused, retried every `retry_seconds` (with backoff).
        model_sha256: The served checkpoint's sha256 (a column, and the `model=<sha12>` partition).
        replica_id: This replica (a column and the file-name prefix).
        runtime: The serving runtime (`torch`, `bf16`, `onnx`).
        flush_records: Write a file once this many rows are buffered.
        flush_seconds: ... or once the oldest buffered row is this old (seconds).
        max_queue: Most records waiting for the writer thread; more are dropped and counted.
        retry_seconds: First wait before re-publishing spilled files (doubles on failure, up to a minute).
        """
        if flush_records < 1 or flush_seconds <= 0 or max_queue < 1:
            raise ValueError("flush_records and max_queue must be >= 1 and flush_seconds > 0.")
        self.sink = sink
        self.spill_dir = Path(spill_dir)
        self.model_sha256 = model_sha256
        self.replica_id = replica_id
        self.runtime = runtime
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._written = dict.fromkeys(KINDS, 0)
        self._dropped = dict.fromkeys(KINDS, 0)
        self._spilled = dict.fromkeys(KINDS, 0)
        self._rows: dict[RecordKind, list[tuple]] = {kind: [] for kind in KINDS}
        self._oldest: float | None = None
        self._flush_requested = threading.Event()
        self._flushed = threading.Condition(self._lock)
        self._flush_generation = 0
        self._stopping = False
        self._draining = False
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._next_retry = 0.0
        self._retry_backoff = retry_seconds
        self._sink_failing = False

    # -- the request path -------------------------------------------------------------------------------
    def submit_prediction(
        self, payload: PredictionPayload, request_id: str, timestamp: dt.datetime, latency_ms: float
    ) -> bool:
        """Queue one prediction record; False (and counted as dropped) when the queue is full or closed."""
        return self._submit("predictions", (payload, request_id, timestamp, latency_ms))

    def submit_label(self, request_id: str, label_wnid: str, timestamp: dt.datetime) -> bool:
        """Queue one label record (from /feedback); False when it was dropped."""
        return self._submit("labels", (request_id, timestamp, label_wnid, self.replica_id))

    def _submit(self, kind: RecordKind, item: tuple) -> bool:
        self.start()
        if self._stopping:
            self._count(self._dropped, kind, 1)
            return False
        try:
            self._queue.put_nowait((kind, item))
        except queue.Full:
            self._count(self._dropped, kind, 1)
            return False
        if self._draining:
            self._flush_requested.set()
        return True

    # -- control ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread in this process (once per process)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    @property
    def started(self) -> bool:
        return self._pid == os.getpid()

    def drain(self) -> None:
        """Flush now and after every later record (shutdown has begun: nothing should wait for the timer)."""
        self._draining = True
        self._flush_requested.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything submitted so far; True when it finished within `timeout` seconds."""
        if not self.started:
            return True
        with self._lock:
            target = self._flush_generation + 1
            self._flush_requested.set()
            return self._flushed.wait_for(lambda: self._flush_generation >= target, timeout)

    def close(self, timeout: float = 8.0) -> bool:
        """Flush and stop the thread (SIGTERM calls this); later submits are dropped. True if all was written."""
        if not self.started:
            return True
        self._stopping = True
        self._flush_requested.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> WriterStats:
        with self._lock:
            buffered = sum(len(rows) for rows in self._rows.values())
            return WriterStats(
                written=dict(self._written),
                dropped=dict(self._dropped),
                spilled=dict(self._spilled),
                pending=buffered + self._queue.qsize(),
            )

    # -- the writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._absorb_safely(self._take(self._wait_seconds()))
            stopping = self._stopping
            requested = self._flush_requested.is_set()
            if requested or stopping:
                # Everything submitted before the request is queued by now: take all of it first.
                self._flush_requested.clear()
                while items := self._take(0.0):
                    self._absorb_safely(items)
            if requested or stopping or self._due():
                self._write_all()
                if requested or stopping:
                    with self._lock:
                        self._flush_generation += 1
                        self._flushed.notify_all()
            if stopping:
                return
            if time.monotonic() >= self._next_retry:
                self._retry_spilled()

    def _absorb_safely(self, items: list[tuple]) -> None:
        try:
            self._absorb(items)
        except Exception:  # a bug here must not kill the thread: the batch is lost, counted, and logged
            log.exception("Inference log: could not turn %d records into rows", len(items))
            for kind, _ in items:
                self._count(self._dropped, kind, 1)

    def _wait_seconds(self) -> float:
        if self._stopping or self._flush_requested.is_set():
            return 0.0
        wait = (
            self.flush_seconds
            if self._oldest is None
            else self._oldest + self.flush_seconds - time.monotonic()
        )
        return max(0.0, min(wait, 0.25))  # short, so flush requests and stops are seen promptly

    def _take(self, wait: float) -> list[tuple]:
        items = []
        try:
            items.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
        except queue.Empty:
            return items
        while len(items) < max(TAKE_CHUNK, self.flush_records):
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _due(self) -> bool:
        buffered = sum(len(rows) for rows in self._rows.values())
        if buffered >= self.flush_records:
            return True
        return self._oldest is not None and time.monotonic() - self._oldest >= self.flush_seconds

    def _absorb(self, items: list[tuple]) -> None:
        """Turn queued items into rows."""
        if not items:
            return
        predictions = [item for kind, item in items if kind == "predictions"]
        labels = [item for kind, item in items if kind == "labels"]
        rows = [
            (request_id, timestamp, payload, payload.image_stats, latency_ms)
            for payload, request_id, timestamp, latency_ms in predictions
        ]
        with self._lock:
            self._rows["predictions"].extend(rows)
            self._rows["labels"].extend(labels)
            if self._oldest is None:
                self._oldest = time.monotonic()

    def _write_all(self) -> None:
        with self._lock:
            batches = {kind: rows for kind, rows in self._rows.items() if rows}
            self._rows = {kind: [] for kind in KINDS}
            self._oldest = None
        for kind, rows in batches.items():
            by_day: dict[dt.date, list[tuple]] = {}
            for row in rows:
                by_day.setdefault(row[1].astimezone(dt.UTC).date(), []).append(row)
            for day, day_rows in by_day.items():
                self._write_file(kind, day, day_rows)

    def _write_file(self, kind: RecordKind, day: dt.date, rows: list[tuple]) -> None:
        relative = "/".join(
            (
                partition_dir(kind, day, self.model_sha256 if kind == "predictions" else None),
                file_name(self.replica_id, dt.datetime.now(dt.UTC)),
            )
        )
        try:
            table = self._prediction_table(rows) if kind == "predictions" else _label_table(rows)
            data = _parquet_bytes(table)
        except Exception:
            log.exception("Inference log: could not encode %d %s records", len(rows), kind)
            self._count(self._dropped, kind, len(rows))
            return
        try:
            self.sink.publish(relative, data)
        except Exception as e:  # SinkError, or anything else a sink raises: never lose the thread
            self._spill(kind, relative, data, len(rows), e)
            return
        self._count(self._written, kind, len(rows))
        if self._sink_failing:
            log.warning("Inference log: %s accepts files again", self.sink.location)
            self._sink_failing = False

    def _spill(self, kind: RecordKind, relative: str, data: bytes, n: int, error: Exception) -> None:
        if not self._sink_failing:
            log.warning("Inference log: %s; spilling to %s and retrying later", error, self.spill_dir)
            self._sink_failing = True
        dest = self.spill_dir / relative
        tmp = dest.with_name(f".tmp-{dest.name}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.error(
                "Inference log: cannot spill to %s either (%s); dropped %d %s records", dest, e, n, kind
            )
            self._count(self._dropped, kind, n)
            return
        self._count(self._spilled, kind, n)
        self._next_retry = min(self._next_retry, time.monotonic() + self._retry_backoff)

    def _retry_spilled(self) -> None:
        """Publish spilled files (oldest first); stop at the first failure and back off."""
        self._next_retry = time.monotonic() + self._retry_backoff
        if not self.spill_dir.is_dir():
            return
        for path in sorted(self.spill_dir.rglob("*.parquet")):
            if path.name.startswith("."):
                continue
            claimed = path.with_name(f".claimed-{os.getpid()}-{path.name}")
            try:
                os.replace(path, claimed)  # another replica sharing the folder may be retrying too
            except OSError:
                continue
            relative = path.relative_to(self.spill_dir).as_posix()
            kind: RecordKind = "labels" if relative.startswith("labels/") else "predictions"
            try:
                data = claimed.read_bytes()
                n = pq.read_metadata(pa.BufferReader(data)).num_rows
                self.sink.publish(relative, data)
            except SinkError:
                os.replace(claimed, path)  # back in line for the next retry
                self._retry_backoff = min(self._retry_backoff * 2, MAX_RETRY_S)
                self._next_retry = time.monotonic() + self._retry_backoff
                return
            except Exception as e:  # an unreadable spilled file: keep it aside, never retry it forever
                log.error("Inference log: spilled file %s is unreadable (%s); left as %s", path, e, claimed)
                continue
            claimed.unlink(missing_ok=True)
            self._count(self._written, kind, n)
        self._retry_backoff = self.retry_seconds

    def _count(self, counter: dict[str, int], kind: str, n: int) -> None:
        with self._lock:
            counter[kind] += n

    def _prediction_table(self, rows: list[tuple]) -> pa.Table:
        n = len(rows)
        payloads: list[PredictionPayload] = [row[2] for row in rows]
        probs = np.stack([p.probs for p in payloads]).astype(np.float32, copy=False)
        stats = np.stack([row[3] for row in rows]).astype(np.float32, copy=False)
        return pa.Table.from_arrays(
            [
                pa.array([row[0] for row in rows], pa.string()),
                pa.array([row[1] for row in rows], PREDICTION_SCHEMA.field("timestamp").type),
                pa.array([self.model_sha256] * n, pa.string()),
                pa.array([self.replica_id] * n, pa.string()),
                pa.array([self.runtime] * n, pa.string()),
                pa.array([p.predicted_wnid for p in payloads], pa.string()),
                pa.array([p.confidence for p in payloads], pa.float32()),
                _list_column(probs),
                pa.array([p.embedding for p in payloads], pa.binary()),
                _list_column(stats),
                pa.array([p.width for p in payloads], pa.int32()),
                pa.array([p.height for p in payloads], pa.int32()),
                pa.array([p.format for p in payloads], pa.string()),
                pa.array([p.n_bytes for p in payloads], pa.int64()),
                pa.array([row[4] for row in rows], pa.float32()),
                pa.array([p.knn_distance for p in payloads], pa.float32()),
                pa.array([p.energy for p in payloads], pa.float32()),
                pa.array([p.unfamiliar for p in payloads], pa.bool_()),
                pa.array([p.image for p in payloads], pa.binary()),
            ],
            schema=PREDICTION_SCHEMA,
        )


def _label_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    return pa.Table.from_arrays(
        [pa.array(col, field.type) for col, field in zip(columns, LABEL_SCHEMA, strict=True)],
        schema=LABEL_SCHEMA,
    )


def _list_column(matrix: np.ndarray) -> pa.Array:
    """(N, K) float32 -> a list<float32> column of N rows."""
    offsets = np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)))


def _parquet_bytes(table: pa.Table) -> bytes:
    out = pa.BufferOutputStream()
    pq.write_table(table, out, compression=COMPRESSION)
    return out.getvalue().to_pybytes()
