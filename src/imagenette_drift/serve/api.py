"""The LitAPI: load the checkpoint in `setup`, validate each request in `decode_request`, batch-predict."""

# No `from __future__ import annotations`: LitServe reads `encode_response`'s return annotation as an object.

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
import torch
from fastapi.responses import JSONResponse

from imagenette_drift.card import ModelCard
from imagenette_drift.checkpoint import load_for_inference
from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.familiarity.reference import FamiliarityReference
from imagenette_drift.inference_log.writer import PredictionPayload
from imagenette_drift.serve.batching import GreedyBatchedLoop
from imagenette_drift.serve.channel import EventChannel
from imagenette_drift.serve.decode import RequestError, RequestRejected, open_image, request_bytes
from imagenette_drift.serve.request_log import PredictionResponse
from imagenette_drift.serve.runtime import Runtime, RuntimeName, create_runtime
from imagenette_drift.serve_contract import TOP_K, FamiliarityAnswer, PredictionAnswer


@dataclasses.dataclass(frozen=True)
class _Input:
    """A decoded request: the model input (uint8 (3, S, S) after the eval transform) and facts of the file."""

    tensor: torch.Tensor
    width: int
    height: int
    format: str
    n_bytes: int
    data: bytes | None  # the original bytes, kept only with --log_images


@dataclasses.dataclass(frozen=True)
class _Output:
    """One image's softmax (C,) and penultimate embedding (D,), both float32, its input, familiarity and (with
    the inference log on) its input statistics."""

    probs: np.ndarray
    features: np.ndarray
    source: _Input
    familiarity: dict[str, Any] | None = None  # {"knn_distance", "energy", "unfamiliar"}, None without a bank
    image_stats: np.ndarray | None = None  # float32 (12,) `image_statistics` of the model input, log only


class ImagenetteAPI(ls.LitAPI):
    """Classify one image per request; LitServe groups concurrent requests into dynamic batches.

    Pitfalls: each inference worker is a separate (spawned) process with its own copy of the model, so
    `threads` is per worker: keep workers x threads <= cores. A bad request never raises inside a batch:
    `decode_request` returns a `RequestError` that `encode_response` turns into that request's 4xx alone.
    """

    def __init__(
        self,
        checkpoint: Path,
        channel: EventChannel,
        runtime: RuntimeName = "torch",
        tta: bool = True,
        threads: int = 1,
        max_pixels: int = 40_000_000,
        cache_dir: Path = Path(".cache"),
        max_batch_size: int = 8,
        batch_timeout: float = 0.005,
        log_records: bool = False,
        log_images: bool = False,
    ) -> None:
        """Configure (nothing is loaded until `setup`, which runs in each worker).

        Args:
            checkpoint: Local `.ckpt` path (already resolved from gs:// by the command).
            channel: Where each batch's embeddings go, for the drift monitor and batch-size metrics.
            runtime: `torch` (eager, channels_last), `bf16` (the same in bfloat16), `onnx` (ONNX Runtime,
                exported once and cached) or `cuda` (torch on the GPU); `auto` is resolved before, by the command.
            tta: Average with the mirror image when the checkpoint was evaluated so (its card's tta_flip);
                False serves one pass per image.
            threads: Intra-op threads of this worker.
            max_pixels: Largest width x height accepted (decompression-bomb guard); more is a 413.
            cache_dir: Folder for the exported ONNX model.
            max_batch_size: Most requests per forward pass.
            batch_timeout: Longest wait for more requests, only when others are already queued (greedy batching).
            log_records: Send each answer's inference-log payload (embedding, input statistics, image facts) back
                with its response, for the API process's log writer; the worker computes the input statistics,
                once per batch, on a thread of its own while the model runs (NumPy and the runtimes release
                the GIL), so they add CPU but almost no latency when a second core is free.
            log_images: Include the original image bytes in that payload (`--log_images`).
        """
        loop = GreedyBatchedLoop() if max_batch_size > 1 else "auto"
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, loop=loop)
        self.checkpoint = Path(checkpoint)
        self.channel = channel
        self.runtime_name = runtime
        self.tta = tta
        self.threads = threads
        self.max_pixels = max_pixels
        self.cache_dir = Path(cache_dir)
        self.log_records = log_records
        self.log_images = log_images

    def setup(self, device: str) -> None:
        # With ONNX Runtime (its own `threads`), torch only decodes and resizes one image at a time: one thread,
        # so that torch's OpenMP pool never spins on the cores ONNX Runtime's threads are about to use.
        torch.set_num_threads(1 if self.runtime_name in ("onnx", "cuda") else self.threads)
        model = load_for_inference(self.checkpoint, map_location="cpu", channels_last=True)
        if not self.tta:
            model.card = dataclasses.replace(model.card, tta_flip=False)
        self.card: ModelCard = model.card
        # Per-request familiarity needs only the embeddings (any runtime) and the card's bank: None without one.
        self.familiarity = (
            FamiliarityReference.from_state_dict(self.card.familiarity) if self.card.familiarity else None
        )
        # Corruption signatures in the card: the drift hub explains a drifting window with input statistics.
        explanation = self.card.explanation or {}
        self.publish_stats = bool(explanation.get("signatures"))
        self.transform = model.transform
        self.runtime: Runtime = create_runtime(self.runtime_name, model, self.cache_dir, self.threads)
        size = self.card.image_size
        self.runtime(torch.zeros(1, 3, size, size, dtype=torch.uint8))  # warm up before /health says 200
        self._stats_pool = (
            ThreadPoolExecutor(1, thread_name_prefix="input-statistics")
            if self.log_records or self.publish_stats
            else None
        )

    def decode_request(self, request) -> _Input | RequestError:
        # `request` stays unannotated: LitServe reads this annotation as the route's body type.
        try:
            data = request_bytes(request)
            image, image_format = open_image(data, self.max_pixels)
        except RequestRejected as e:
            return e.error
        return _Input(
            self.transform(image),
            width=image.shape[2],
            height=image.shape[1],
            format=image_format,
            n_bytes=len(data),
            data=data if self.log_images else None,
        )

    def batch(self, inputs: list) -> list:
        return list(inputs)  # stacked in `predict`, after setting bad requests aside

    def predict(self, x: Any) -> Any:
        if self.max_batch_size == 1:
            return self._predict_many([x])[0]
        return self._predict_many(x)

    def _predict_many(self, items: list[_Input | RequestError]) -> list[_Output | RequestError]:
        good = [i for i, item in enumerate(items) if not isinstance(item, RequestError)]
        outputs: list[_Output | RequestError] = list(items)
        if good:
            inputs = torch.stack([items[i].tensor for i in good])
            # Input statistics for the log and the drift hub's explanations, here where the model input already
            # is: 12 floats travel instead of the 3 x S x S image (0.2-0.6 ms of CPU per image, one call per
            # batch), computed on a thread beside the forward pass rather than after it.
            pending = self._stats_pool.submit(image_statistics, inputs) if self._stats_pool else None
            features, probs = self.runtime(inputs)
            stats = pending.result().numpy() if pending is not None else None
            self.channel.publish(features, probs, stats if self.publish_stats else None)
            familiarity = (
                self.familiarity.score_json(features) if self.familiarity is not None else [None] * len(good)
            )
            if stats is None or not self.log_records:
                stats = [None] * len(good)
            for row, i in enumerate(good):
                outputs[i] = _Output(probs[row], features[row], items[i], familiarity[row], stats[row])
        return outputs

    def encode_response(self, output: _Output | RequestError) -> PredictionAnswer:
        # LitServe makes this return annotation the route's response model (published at /docs); an error
        # is a response of its own, which FastAPI passes through as it is.
        if isinstance(output, RequestError):
            return JSONResponse({"detail": output.detail}, status_code=output.status_code)
        answer = prediction_json(output.probs, self.card, familiarity=output.familiarity)
        return PredictionResponse(answer, self._payload(output, answer) if self.log_records else None)

    @staticmethod
    def _payload(output: _Output, answer: dict[str, Any]) -> PredictionPayload:
        """The worker's part of the inference-log record (the API process adds id, time and latency)."""
        source = output.source
        familiarity = output.familiarity or {}
        return PredictionPayload(
            predicted_wnid=answer["wnid"],
            confidence=answer["confidence"],
            probs=np.asarray(output.probs, dtype=np.float32),
            embedding=np.asarray(output.features, dtype="<f2").tobytes(),
            image_stats=output.image_stats,
            width=source.width,
            height=source.height,
            format=source.format,
            n_bytes=source.n_bytes,
            image=source.data,
            knn_distance=familiarity.get("knn_distance"),
            energy=familiarity.get("energy"),
            unfamiliar=familiarity.get("unfamiliar"),
        )


def prediction_json(
    probs: np.ndarray, card: ModelCard, k: int = TOP_K, familiarity: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `/predict` answer (`PredictionAnswer`) for one image's probabilities (C,), as plain JSON data;
    `familiarity` is `{"knn_distance", "energy", "unfamiliar"}` (see `imagenette_drift.familiarity`), or None when the
    checkpoint's card has no familiarity bank."""
    answer = PredictionAnswer.from_probs(probs.tolist(), card.class_names, card.wnids, k)
    if familiarity is not None:
        answer = answer.model_copy(update={"familiarity": FamiliarityAnswer(**familiarity)})
    return answer.model_dump()
