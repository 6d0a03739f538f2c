"""The monitor's contract: `monitor_report.json` and `GET /status` of `imagenette monitor --follow`, defined once.

The monitor writes these models, the app's monitor tab parses them; like `serve_contract`, pydantic only, so
the Gradio Space ships this module beside the app.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator

from imagenette_drift.serve_contract import Answer, DriftExplanation

__all__ = ["AlertStatus", "MonitorStatus", "WindowRow"]


class WindowRow(Answer):
    """One window of the fleet's traffic (columns of `windows.parquet`); p-values are null when not tested."""

    window: int = Field(description="sequential window number, over every run of this monitor")
    window_start: dt.datetime = Field(
        description="UTC start (time windows: interval start; count: first record)"
    )
    window_end: dt.datetime = Field(description="UTC end (time windows: interval end; count: last record)")
    n: int = Field(description="records in the window, from every replica")
    n_replicas: int = Field(description="replicas that served them")
    mmd_statistic: float | None = Field(description="unbiased MMD^2 of the embeddings against the reference")
    mmd_p_value: float | None = Field(description="permutation p-value of the MMD test")
    inputs_statistic: float | None = Field(description="largest KS distance of the input statistics")
    inputs_p_value: float | None = Field(description="Bonferroni KS p-value of the input statistics")
    label_shift_statistic: float | None = Field(description="chi-squared of the predicted-class histogram")
    label_shift_p_value: float | None = Field(description="p-value of the label-shift test")
    drift: bool = Field(description="a test's p-value is below alpha / number of tests")
    mean_confidence: float | None = Field(description="mean top-1 softmax probability")
    n_labelled: int = Field(description="records with a label posted to /feedback (any replica)")
    realized_accuracy: float | None = Field(description="top-1 accuracy on the labelled records")
    estimated_accuracy: float | None = Field(None, description="label-free accuracy estimate, else null")
    unfamiliar_share: float | None = Field(None, description="share of unfamiliar requests, else null")
    top_signature: str | None = Field(
        None, description="drifting windows: best-matching corruption, or 'no known signature'"
    )
    top_signature_similarity: float | None = Field(None, description="its similarity")
    top_moved_class: str | None = Field(None, description="class with the largest |chi-squared residual|")
    bbse_max_change: float | None = Field(
        None, description="largest |BBSE true share - held-out true share| over classes"
    )
    explanation: DriftExplanation | None = Field(
        None, description="drifting windows: the full explanation (windows.parquet keeps it as JSON text)"
    )

    @field_validator("explanation", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            import json

            return json.loads(value)
        return value


class AlertStatus(Answer):
    """The alert's hysteresis state and its history."""

    active: bool
    drifting_run: int = Field(description="drifting windows in a row, ending with the latest")
    clean_run: int = Field(description="clean windows in a row, ending with the latest")
    raised_at: str | None = Field(description="window end of the last raised alert (UTC, ISO-8601)")
    raised_window: int | None
    suppressed: int = Field(description="alerts held back by the cool-down")
    history: list[dict] = Field(description="raised/cleared events, oldest first")
    alert_k: int
    clear_k: int
    cooldown_s: float


class MonitorStatus(Answer):
    """Everything a monitor run knows: the window table, the alert and how the log was read."""

    log: str = Field(description="the log location read (a folder or gs:// prefix)")
    checkpoint_sha256: str
    window: str = Field(description="the window rule, e.g. '500 records' or '3600 s'")
    engine: str
    alpha: float
    updated_at: dt.datetime = Field(description="when this run finished (UTC)")
    windows: list[WindowRow]
    alert: AlertStatus
    pending_records: int = Field(description="records waiting for their window to close")
    late_records: int = Field(description="records that arrived after their window closed (not tested)")
    files_read: int = Field(description="prediction files read so far")
    files_read_this_run: int
    files_skipped: dict[str, str] = Field(description="file -> why it was skipped (foreign, truncated)")
    files_other_models: int = Field(description="prediction files of other checkpoints in the log (not read)")
    files_deleted: int = Field(0, description="files deleted by --log_retention_days in this run")
