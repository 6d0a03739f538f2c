"""Fleet monitoring over the inference log: windows, statistics, alerts, sinks, reports and the /status service.

Imports are lazy (PEP 562): `imagenette_drift.monitoring.Monitor` pulls in DuckDB and torch only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AlertPolicy": "alerts",
    "AlertState": "alerts",
    "GitHubDispatchSink": "sinks",
    "Monitor": "service",
    "MonitorConfig": "service",
    "MonitorStatus": "status",
    "WebhookSink": "sinks",
    "WindowContext": "stats",
    "WindowSpec": "windows",
    "window_statistics": "stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"imagenette_drift.monitoring.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'imagenette_drift.monitoring' has no attribute {name!r}")
