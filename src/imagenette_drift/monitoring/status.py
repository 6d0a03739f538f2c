"""The monitor's one JSON contract (`monitor_report.json`, `GET /status`, the app's Fleet monitoring tab),
defined in `imagenette_drift.monitor_contract` beside the server's answers."""

from imagenette_drift.monitor_contract import AlertStatus, MonitorStatus, WindowRow

__all__ = ["AlertStatus", "MonitorStatus", "WindowRow"]
