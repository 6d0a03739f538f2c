"""REST serving with LitServe: decoding, runtimes, drift and metrics (checkpoints come from `storage`).

Imports the inference core only (card, checkpoint, network, decoding, drift statistics), never Lightning.
Names are re-exported lazily (PEP 562), so an inference worker loads only the modules it uses.
"""

from __future__ import annotations

from imagenette_drift._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "DriftHub": "monitor",
        "EventChannel": "channel",
        "ImagenetteAPI": "api",
        "ImagenetteServer": "app",
        "OnnxRuntime": "runtime",
        "RequestError": "decode",
        "ServeConfig": "app",
        "ServerMetrics": "metrics",
        "TorchRuntime": "runtime",
        "build_server": "app",
        "create_runtime": "runtime",
        "decode_image": "decode",
        "export_onnx": "runtime",
        "model_info": "app",
        "prediction_json": "api",
        "request_bytes": "decode",
    },
)
