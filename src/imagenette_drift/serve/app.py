"""Assemble the LitServer: the LitAPI, the middlewares, /info, /drift, /metrics, /feedback and the inference log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response

from imagenette_drift.card import ModelCard
from imagenette_drift.drift.live import LiveWindow
from imagenette_drift.inference_log.replica import replica_id
from imagenette_drift.inference_log.sink import open_sink
from imagenette_drift.inference_log.writer import InferenceLogWriter
from imagenette_drift.serve.api import ImagenetteAPI
from imagenette_drift.serve.channel import EventChannel
from imagenette_drift.serve.feedback import feedback_endpoint
from imagenette_drift.serve.litserve_adapter import LitServerStartingEarly
from imagenette_drift.serve.metrics import CONTENT_TYPE, ServerMetrics
from imagenette_drift.serve.middleware import MetricsMiddleware, PredictGuard
from imagenette_drift.serve.monitor import DriftHub
from imagenette_drift.serve.request_log import RequestIdMiddleware
from imagenette_drift.serve.runtime import RuntimeName
from imagenette_drift.serve_contract import (
    CheckpointInfo,
    DriftStatus,
    InferenceLogInfo,
    ModelInfo,
    ServingInfo,
)

ROUTES = ("/", "/predict", "/health", "/info", "/drift", "/metrics", "/feedback")
PROMETHEUS_TYPE = CONTENT_TYPE


@dataclass(frozen=True)
class ServeConfig:
    """Everything `imagenette serve` configures (see its --help)."""

    checkpoint: Path
    source: str
    workers: int = 1
    threads: int = 1
    max_batch_size: int = 8
    batch_timeout: float = 0.005
    runtime: RuntimeName = "torch"
    runtime_reason: str = "requested"
    tta: bool = True
    max_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    cache_dir: Path = Path(".cache")
    timeout: float = 30.0
    log: str | None = None  # inference-log root: a folder or gs://BUCKET[/PREFIX]; None logs nothing
    log_images: bool = False
    log_flush_records: int = 1000
    log_flush_seconds: float = 30.0
    log_spill_dir: Path | None = None  # default: <cache_dir>/inference-log-spill
    feedback_token: str | None = field(default=None, repr=False)


class ImagenetteServer(LitServerStartingEarly):
    """LitServer that starts answering HTTP while the model loads, so `/health` says 503 instead of refusing.

    Its `hub` (the drift monitor's consumer thread) starts with each API-server process, in its lifespan. A
    worker that fails to load still stops the server: `run` raises `WorkerStartError`.
    """

    def __init__(self, *args: Any, hub: DriftHub, **kwargs: Any) -> None:
        self.hub = hub
        super().__init__(*args, **kwargs)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.hub.ensure_started()  # in the API-server process, which the workers' events reach
        async with super().lifespan(app):
            yield


def build_server(config: ServeConfig, card: ModelCard, sha256: str) -> ImagenetteServer:
    """The server for one checkpoint; call `.run(host=..., port=..., num_api_servers=1, ...)` to serve.

    With `config.log`, `server.inference_log` is the writer (its thread starts in the API-server process with
    the first request; call its `close` on shutdown), else None.
    """
    channel = EventChannel()
    metrics = ServerMetrics()
    live = LiveWindow(card) if card.estimation or card.explanation else None
    hub = DriftHub(card.drift, channel, metrics, live)
    writer = None
    if config.log:
        writer = InferenceLogWriter(
            open_sink(config.log),
            config.log_spill_dir or config.cache_dir / "inference-log-spill",
            model_sha256=sha256,
            replica_id=replica_id(),
            runtime=config.runtime,
            flush_records=config.log_flush_records,
            flush_seconds=config.log_flush_seconds,
        )
        metrics.add_log(writer.stats)
    metrics.add_drift(lambda: hub.status(wait_s=0).model_dump())  # a scrape never waits on the hub
    api = ImagenetteAPI(
        config.checkpoint,
        channel,
        runtime=config.runtime,
        tta=config.tta,
        threads=config.threads,
        max_pixels=config.max_pixels,
        cache_dir=config.cache_dir,
        max_batch_size=config.max_batch_size,
        batch_timeout=config.batch_timeout,
        log_records=writer is not None,
        log_images=config.log_images,
    )
    server = ImagenetteServer(
        api,
        accelerator="cpu",
        workers_per_device=config.workers,
        timeout=config.timeout,
        info_path="/litserve/info",
        middlewares=[
            (PredictGuard, {"path": "/predict", "max_bytes": config.max_bytes}),
            (RequestIdMiddleware, {"path": "/predict", "writer": writer}),
            (MetricsMiddleware, {"metrics": metrics, "routes": ROUTES}),
        ],
        hub=hub,
    )
    info = model_info(config, card, sha256)

    def get_info() -> ModelInfo:
        return info

    server.app.add_api_route("/info", get_info, methods=["GET"], response_model=ModelInfo)
    server.app.add_api_route("/drift", hub.status, methods=["GET"], response_model=DriftStatus)
    server.app.add_api_route(
        "/metrics",
        lambda: Response(metrics.render(), media_type=PROMETHEUS_TYPE),
        methods=["GET"],
        response_class=PlainTextResponse,
    )
    server.app.add_api_route(
        "/feedback", feedback_endpoint(card, writer, config.feedback_token), methods=["POST"]
    )
    server.inference_log = writer
    return server


def model_info(config: ServeConfig, card: ModelCard, sha256: str) -> ModelInfo:
    """The `/info` answer: what model this is, where it came from, and how it was trained and is served."""
    return ModelInfo(
        model_name=card.model_name,
        class_names=list(card.class_names),
        wnids=list(card.wnids),
        num_classes=card.num_classes,
        input_size=card.image_size,
        mean=list(card.mean),
        std=list(card.std),
        checkpoint=CheckpointInfo(source=config.source, sha256=sha256),
        metrics={key: float(value) for key, value in card.metrics.items()},
        drift_reference=card.drift is not None,
        serving=ServingInfo(
            runtime=config.runtime,
            runtime_reason=config.runtime_reason,
            tta_flip=card.tta_flip and config.tta,
            workers=config.workers,
            threads_per_worker=config.threads,
            max_batch_size=config.max_batch_size,
            batch_timeout=config.batch_timeout,
            max_bytes=config.max_bytes,
            max_pixels=config.max_pixels,
        ),
        inference_log=InferenceLogInfo(
            enabled=config.log is not None,
            location=config.log,
            images=config.log is not None and config.log_images,
            feedback=config.log is not None and bool(config.feedback_token),
        ),
    )
