"""`imagenette monitor --follow`: a real service that re-reads the log on a schedule behind /status and /metrics."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import requests

from imagenette_drift.checkpoint import InferenceModel
from imagenette_drift.monitoring.status import MonitorStatus
from tests.monitoring._follow import follow_monitor
from tests.monitoring._logs import Outputs, spread_over_replicas

pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=20)


def test_follow_serves_status_and_metrics_and_picks_up_new_files(
    model: InferenceModel,
    clean_outputs: Outputs,
    noisy_outputs: Outputs,
    trained_checkpoint: Path,
    tmp_path: Path,
) -> None:
    log = tmp_path / "inference-log"
    spread_over_replicas(log, model, clean_outputs, T0, STEP, seed=6)
    with follow_monitor(log, trained_checkpoint, tmp_path / "out", "--window=20", "--alert_k=2") as url:
        status = MonitorStatus.model_validate(requests.get(f"{url}/status", timeout=10).json())
        assert [w.n for w in status.windows] == [20, 20] and status.files_read == 9
        metrics = requests.get(f"{url}/metrics", timeout=10)
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "imagenette_monitor_windows 2.0" in metrics.text
        assert 'imagenette_monitor_p_value{test="mmd"}' in metrics.text

        # The corrupted stream lands while the service runs: the next scheduled run adds its windows.
        spread_over_replicas(log, model, noisy_outputs, T0 + dt.timedelta(hours=1), STEP, seed=7)
        deadline = time.monotonic() + 120
        while len(status.windows) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = MonitorStatus.model_validate(requests.get(f"{url}/status", timeout=10).json())
        assert [w.window for w in status.windows] == [0, 1, 2, 3]
        assert status.windows[2].drift and status.windows[3].drift and status.alert.active
        assert "imagenette_monitor_alert_active 1.0" in requests.get(f"{url}/metrics", timeout=10).text
    assert (tmp_path / "out" / "windows.parquet").is_file()
