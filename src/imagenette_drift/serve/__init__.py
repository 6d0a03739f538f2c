"""REST serving with LitServe: checkpoint resolution (local or gs://), decoding, runtimes, drift and metrics."""

from imagenette_drift.serve.api import ImagenetteAPI, prediction_json
from imagenette_drift.serve.app import ImagenetteServer, ServeConfig, build_server, model_info
from imagenette_drift.serve.decode import RequestError, decode_image, request_bytes
from imagenette_drift.serve.metrics import ServerMetrics
from imagenette_drift.serve.monitor import DriftHub, EventChannel
from imagenette_drift.serve.runtime import OnnxRuntime, TorchRuntime, create_runtime, export_onnx
from imagenette_drift.serve.storage import ResolvedCheckpoint, StorageError, parse_gs_uri, resolve_checkpoint

__all__ = [
    "DriftHub",
    "EventChannel",
    "ImagenetteAPI",
    "ImagenetteServer",
    "OnnxRuntime",
    "RequestError",
    "ResolvedCheckpoint",
    "ServeConfig",
    "ServerMetrics",
    "StorageError",
    "TorchRuntime",
    "build_server",
    "create_runtime",
    "decode_image",
    "export_onnx",
    "model_info",
    "parse_gs_uri",
    "prediction_json",
    "request_bytes",
    "resolve_checkpoint",
]
