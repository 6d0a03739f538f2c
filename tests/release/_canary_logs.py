"""Write a revision's inference log the way `imagenette serve --log` does: the real model on real images, the
server's own per-image outputs (softmax, fp16 embedding, familiarity from the card's bank, input statistics),
published by the real `InferenceLogWriter` to a `LocalSink`."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.data.images import read_image
from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.familiarity.reference import FamiliarityReference
from imagenette_drift.inference_log.sink import open_sink
from imagenette_drift.inference_log.writer import InferenceLogWriter, PredictionPayload
from imagenette_drift.serve.api import prediction_json
from imagenette_drift.serve.metrics import ServerMetrics


def serve_to_log(
    model: InferenceModel, images: Sequence[Path], log: str | Path, replica: str, start: dt.datetime,
    step: dt.timedelta = dt.timedelta(seconds=1), spill_dir: Path | None = None,
) -> list[str]:  # fmt: skip
    """Serve `images` one request every `step` from `start` and log each record to `log` (a folder or a gs://
    prefix, through `open_sink` as the server does); return the request ids."""
    familiarity = (
        FamiliarityReference.from_state_dict(model.card.familiarity) if model.card.familiarity else None
    )
    spill = spill_dir or Path(log).parent / f"spill-{replica}"
    writer = InferenceLogWriter(open_sink(str(log)), spill, model.sha256, replica, "torch", flush_records=16)
    inputs = torch.stack([model.transform(read_image(p)) for p in images])
    features, probs = model.embed_and_predict(inputs)
    scores = familiarity.score_json(features) if familiarity else [None] * len(images)
    stats = image_statistics(inputs).numpy()
    ids = []
    for i, path in enumerate(images):
        answer = prediction_json(probs[i].numpy(), model.card, familiarity=scores[i])
        score = scores[i] or {}
        payload = PredictionPayload(
            predicted_wnid=answer["wnid"], confidence=answer["confidence"],
            probs=probs[i].numpy().astype(np.float32), embedding=features[i].numpy().astype("<f2").tobytes(),
            image_stats=stats[i], width=160, height=160, format="JPEG", n_bytes=path.stat().st_size,
            knn_distance=score.get("knn_distance"), energy=score.get("energy"), unfamiliar=score.get("unfamiliar"),
        )  # fmt: skip
        ids.append(str(uuid.uuid4()))
        assert writer.submit_prediction(payload, ids[-1], start + i * step, latency_ms=5.0)
    assert writer.close(timeout=30)
    assert writer.stats().written["predictions"] == len(images)
    return ids


def metrics_text(ok: int, errors: int, latency_s: float) -> str:
    """The server's own /metrics exposition after `ok` 200s and `errors` 500s on /predict, each `latency_s`."""
    metrics = ServerMetrics()
    for status, count in ((200, ok), (500, errors)):
        for _ in range(count):
            metrics.observe_request("POST", "/predict", status, latency_s)
    metrics.observe_request("GET", "/health", 200, 0.001)
    return metrics.render().decode()


@contextmanager
def metrics_server(text: str) -> Iterator[str]:
    """A real HTTP server on loopback answering GET /metrics with `text`; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode() if self.path == "/metrics" else b"not found"
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def dispatch_recorder(status: int) -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on loopback standing in for GitHub's API: answers every POST with `status` and
    records its path, headers and JSON body; yields (its URL, the recorded requests)."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            requests.append({"path": self.path, "headers": headers, "body": json.loads(body)})
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def fake_gcloud(bin_dir: Path, fail_on: str | None = None) -> Path:
    """A `gcloud` executable in `bin_dir` (put it first on PATH) standing in for Google Cloud: it appends its
    arguments to the returned file, one call a line, and exits 7 when they contain `fail_on`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = bin_dir / "calls.txt"
    fail = f'case "$*" in *{fail_on}*) exit 7;; esac\n' if fail_on else ""
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n{fail}')
    gcloud.chmod(0o755)
    return calls
