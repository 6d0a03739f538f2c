"""The monitor's outputs: the window table (Parquet), monitor_report.json/.md/.png and Prometheus gauges."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from imagenette_drift.explanation.report import explanation_markdown
from imagenette_drift.io import atomic_path, write_text_atomic
from imagenette_drift.monitoring.stats import TABLE_SCHEMA, TESTS
from imagenette_drift.monitoring.status import MonitorStatus
from imagenette_drift.plots import save_png

TABLE_NAME = "windows.parquet"
REPORT_NAME = "monitor_report"
P_FLOOR = 1e-12  # the plot's lowest p-value


def read_table(out_dir: Path) -> list[dict[str, Any]]:
    """The window table's rows, oldest first (empty before the first closed window)."""
    path = out_dir / TABLE_NAME
    return pq.read_table(path).to_pylist() if path.is_file() else []


def write_table(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Write the window table atomically (earlier rows kept, new rows appended)."""
    with atomic_path(out_dir / TABLE_NAME) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=TABLE_SCHEMA), tmp)
    return out_dir / TABLE_NAME


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The window table as aligned text, one line per window (what the command prints)."""
    header = (
        f"{'window':>6} {'end (UTC)':<20} {'n':>6} {'repl':>4} {'mmd p':>7} {'inputs p':>8} "
        f"{'label p':>8} {'drift':>5} {'labelled':>8} {'acc':>6} {'est acc':>7}  looks like"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['window']:>6} {r['window_end']:%Y-%m-%d %H:%M:%S} {r['n']:>6} {r['n_replicas']:>4} "
            f"{_fmt(r['mmd_p_value']):>7} {_fmt(r['inputs_p_value']):>8} {_fmt(r['label_shift_p_value']):>8} "
            f"{'YES' if r['drift'] else 'no':>5} {r['n_labelled']:>8} {_fmt(r['realized_accuracy'], '.3f'):>6} "
            f"{_fmt(r.get('estimated_accuracy'), '.3f'):>7}  {_looks_like(r)}"
        )
    return "\n".join(lines)


def _looks_like(row: dict[str, Any]) -> str:
    """'fog (0.83)', 'no known signature (closest fog, 0.41)' or '-' (clean window, or no explanation)."""
    top, similarity = row.get("top_signature"), row.get("top_signature_similarity")
    if top is None:
        return "-"
    if similarity is None:
        return top
    return f"{top} ({similarity:.2f})"


def write_reports(out_dir: Path, status: MonitorStatus) -> list[Path]:
    """monitor_report.json (the `/status` contract), monitor_report.md and monitor_report.png."""
    json_path = write_text_atomic(out_dir / f"{REPORT_NAME}.json", status.model_dump_json(indent=2) + "\n")
    rows = [w.model_dump() for w in status.windows]
    alert = status.alert
    md = [
        f"# Monitor report: {status.log}",
        "",
        f"Checkpoint `{status.checkpoint_sha256[:12]}`, windows of {status.window}, engine {status.engine}, "
        f"alpha {status.alpha}. Alert: **{'ACTIVE' if alert.active else 'clear'}** "
        f"({alert.alert_k} drifting windows raise it, {alert.clear_k} clean ones clear it, cool-down "
        f"{alert.cooldown_s:g} s).",
        "",
        "| window | end (UTC) | n | replicas | MMD p | inputs KS p | label-shift p | drift | labelled | "
        "realized acc | estimated acc | unfamiliar | looks like | top moved class | BBSE max change |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['window']} | {r['window_end']:%Y-%m-%d %H:%M} | {r['n']} | {r['n_replicas']} | "
            f"{_fmt(r['mmd_p_value'])} | {_fmt(r['inputs_p_value'])} | {_fmt(r['label_shift_p_value'])} | "
            f"{'**yes**' if r['drift'] else 'no'} | {r['n_labelled']} | {_fmt(r['realized_accuracy'], '.3f')} | "
            f"{_fmt(r['estimated_accuracy'], '.3f')} | {_fmt(r['unfamiliar_share'], '.3f')} | "
            f"{_looks_like(r)} | {r['top_moved_class'] or '-'} | {_fmt(r['bbse_max_change'], '.3f')} |"
        )
    md += ["", f"![statistics and accuracy per window]({REPORT_NAME}.png)", ""]
    explained = [w for w in status.windows if w.explanation is not None]
    if explained:
        md += ["## Why the drifting windows drift", ""]
        for w in explained:
            md += explanation_markdown(
                w.explanation, f"Window {w.window} (ending {w.window_end:%Y-%m-%d %H:%M} UTC)"
            )
    md_path = write_text_atomic(out_dir / f"{REPORT_NAME}.md", "\n".join(md))
    return [json_path, md_path, _plot(rows, status, out_dir / f"{REPORT_NAME}.png")]


def _plot(rows: list[dict[str, Any]], status: MonitorStatus, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), dpi=100, sharex=True)
    x = [r["window"] for r in rows]
    for r in rows:
        if r["drift"]:
            for ax in (top, bottom):
                ax.axvspan(r["window"] - 0.5, r["window"] + 0.5, color="red", alpha=0.12, lw=0)
    for name, marker in zip(TESTS, "os^", strict=True):
        values = [
            (w, max(r[f"{name}_p_value"], P_FLOOR))  # p = 0 (asymptotic tests) drawn at the floor
            for w, r in zip(x, rows, strict=True)
            if r[f"{name}_p_value"] is not None
        ]
        if values:
            top.plot(*zip(*values, strict=True), marker + "-", label=name.replace("_", " "), alpha=0.8)
    top.axhline(status.alpha, color="red", linestyle="--", label=f"alpha = {status.alpha}")
    top.set_yscale("log")
    top.set_ylabel("p-value")
    top.legend(loc="lower left", fontsize=8)
    top.set_title(f"{len(rows)} windows of {status.window} (red: drifting)")
    for key, label in (("realized_accuracy", "realized (labels)"), ("estimated_accuracy", "estimated")):
        values = [(w, r[key]) for w, r in zip(x, rows, strict=True) if r[key] is not None]
        if values:
            bottom.plot(*zip(*values, strict=True), "o-", label=label)
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("top-1 accuracy")
    bottom.set_xlabel("window")
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(loc="lower left", fontsize=8)
    return save_png(fig, path)


class MonitorGauges:
    """Prometheus gauges of the latest window and the alert, in their own registry (`/metrics`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["test"]
        self.p_value = Gauge(
            "imagenette_monitor_p_value", "p-value of the latest window", labels, registry=self.registry
        )
        self.statistic = Gauge(
            "imagenette_monitor_statistic",
            "test statistic of the latest window",
            labels,
            registry=self.registry,
        )
        g = lambda name, text: Gauge(f"imagenette_monitor_{name}", text, registry=self.registry)  # noqa: E731
        self.window_n = g("window_records", "records in the latest window")
        self.drift = g("window_drift", "1 when the latest window drifts")
        self.accuracy = g(
            "realized_accuracy", "realized top-1 accuracy of the latest window (NaN: no labels)"
        )
        self.estimated = g(
            "estimated_accuracy", "label-free accuracy estimate of the latest window (NaN: none)"
        )
        self.labelled = g("window_labelled", "labelled records in the latest window")
        self.alert = g("alert_active", "1 while a drift alert is raised")
        self.windows = g("windows", "windows in the window table")
        self.pending = g("pending_records", "records waiting for their window to close")
        self.files = g("files_read", "prediction files read")
        self.skipped = g("files_skipped", "files skipped (foreign or truncated)")
        self.last_run = g("last_run_timestamp_seconds", "when the last run finished")

    def update(self, status: MonitorStatus) -> None:
        nan = float("nan")
        if status.windows:
            last = status.windows[-1]
            for name in TESTS:
                for gauge, key in ((self.p_value, "p_value"), (self.statistic, "statistic")):
                    value = getattr(last, f"{name}_{key}")
                    gauge.labels(name).set(nan if value is None else value)
            self.window_n.set(last.n)
            self.drift.set(int(last.drift))
            self.accuracy.set(nan if last.realized_accuracy is None else last.realized_accuracy)
            self.estimated.set(nan if last.estimated_accuracy is None else last.estimated_accuracy)
            self.labelled.set(last.n_labelled)
        self.alert.set(int(status.alert.active))
        self.windows.set(len(status.windows))
        self.pending.set(status.pending_records)
        self.files.set(status.files_read)
        self.skipped.set(len(status.files_skipped))
        self.last_run.set(status.updated_at.timestamp())

    def write(self, out_dir: Path) -> Path:
        """Write `metrics.prom` for node_exporter's textfile collector (one-shot runs have no /metrics)."""
        path = out_dir / "metrics.prom"
        write_to_textfile(str(path), self.registry)
        return path
