"""One monitor run over the log (`Monitor.run_once`), and `--follow`: runs on a schedule behind /status, /metrics.

A run: delete files past retention, find new files (manifest), read them with the chosen engine together with
the records still pending from earlier runs, append the closed windows to the table, refresh realized accuracy
of every window from all labels posted so far, update the alert, deliver its events, write the outputs, and
only then commit the state (cursor, pending records, manifest). A run interrupted before that commit is
repeated in full by the next one (window numbers are reused, so rows are replaced, never duplicated).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imagenette_drift.errors import UserError, one_line
from imagenette_drift.inference_log.reader import LogLocation, latest_labels, partition_date
from imagenette_drift.io import atomic_path, write_text_atomic
from imagenette_drift.monitoring.alerts import AlertPolicy, AlertState
from imagenette_drift.monitoring.engines import Engine, EngineInput, run_engine
from imagenette_drift.monitoring.explain import add_witness_thumbnails
from imagenette_drift.monitoring.manifest import Manifest, scan
from imagenette_drift.monitoring.report import (
    MonitorGauges,
    format_rows,
    read_table,
    write_reports,
    write_table,
)
from imagenette_drift.monitoring.sinks import Sink, StdoutSink, deliver
from imagenette_drift.monitoring.stats import WindowContext
from imagenette_drift.monitoring.status import AlertStatus, MonitorStatus, WindowRow
from imagenette_drift.monitoring.windows import WindowCursor, WindowSpec

log = logging.getLogger(__name__)
TEXT_COLUMNS = ("top_signature", "top_moved_class", "explanation")  # not logged as W&B numbers
PRINTED_ROWS = 50  # new windows printed per run; the table has them all


@dataclass
class MonitorConfig:
    """Everything one monitor needs besides the reference (see `imagenette monitor --help`)."""

    log: str
    out_dir: Path
    spec: WindowSpec
    model_sha256: str
    engine: Engine = "duckdb"
    ray_address: str | None = None
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    lateness_s: float = 0.0
    flush: bool = False
    retention_days: int | None = None
    threads: int = 1
    reference_root: Path | None = None  # training data root: thumbnails of witnesses' nearest held-out images


class Monitor:
    """Runs `run_once` repeatedly over one log into one output folder (its state lives in `out_dir/state`)."""

    def __init__(
        self, config: MonitorConfig, context: WindowContext, sinks: list[Sink] | None = None
    ) -> None:
        self.config = config
        self.context = context
        self.sinks = sinks if sinks is not None else [StdoutSink()]
        self.location = LogLocation(config.log)
        self.out = Path(config.out_dir)
        self.state_dir = self.out / "state"
        self.gauges = MonitorGauges()
        self.status: MonitorStatus | None = None
        self.wandb_run: Any = None
        self._lock = threading.Lock()
        self._check_spec()

    # -- state ----------------------------------------------------------------------------------------
    def _check_spec(self) -> None:
        path = self.state_dir / "state.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            checks = [("window", self.config.spec.describe()), ("model", self.config.model_sha256)]
            if "log" in saved:  # state written before the log was recorded: nothing to compare
                checks.append(("log", self._log_id()))
            for key, value in checks:
                if saved.get(key) != value:
                    raise ValueError(
                        f"{self.out} holds a monitor of {key} {saved.get(key)!r}, not {value!r}; pass another --out "
                        "(or delete that folder to start over)."
                    )

    def _log_id(self) -> str:
        """The log root as stored in the state: a gs:// URL, or the local folder's absolute path."""
        return self.location.url if not self.location.is_local else str(Path(self.location.url).resolve())

    def _load_state(self) -> tuple[WindowCursor, AlertState, Manifest]:
        path = self.state_dir / "state.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        cursor = WindowCursor(**data.get("cursor", {}))
        alert = AlertState.from_dict(data["alert"]) if "alert" in data else AlertState()
        return cursor, alert, Manifest.load(self.state_dir / "manifest.json")

    def _save_state(self, cursor: WindowCursor, alert: AlertState, manifest: Manifest) -> None:
        manifest.save(self.state_dir / "manifest.json")
        state = {
            "window": self.config.spec.describe(),
            "model": self.config.model_sha256,
            "log": self._log_id(),
            "cursor": cursor.__dict__,
            "alert": alert.to_dict(),
        }
        write_text_atomic(self.state_dir / "state.json", json.dumps(state, indent=1, default=str) + "\n")

    # -- retention ------------------------------------------------------------------------------------
    def apply_retention(self, manifest: Manifest, today: dt.date | None = None) -> int:
        """Delete log files whose `date=` partition is older than `retention_days`; return how many."""
        days = self.config.retention_days
        if days is None:
            return 0
        cutoff = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=days)
        deleted = 0
        for kind in ("predictions", "labels"):
            for relative in self.location.list(kind):
                day = partition_date(relative)
                if day is not None and day < cutoff:
                    self.location.delete(relative)
                    deleted += 1
                    for known in (manifest.read, manifest.labels, manifest.skipped):
                        known.pop(relative, None)
        return deleted

    # -- labels ---------------------------------------------------------------------------------------
    def _labels(self, manifest: Manifest) -> pa.Table:
        """The latest label of each request_id, from every label file read so far (labels are small)."""
        return latest_labels(self.location, sorted(manifest.labels))

    def _refresh_accuracy(self, rows: list[dict[str, Any]], labels: pa.Table) -> None:
        """Recompute n labelled and realized accuracy of every window from all labels (late labels count)."""
        folder = self.state_dir / "assignments"
        if not rows or not folder.is_dir() or not labels.num_rows:
            return
        assigned = pq.read_table(folder)
        index = pc.index_in(assigned["request_id"], value_set=labels["request_id"])
        labelled = pc.is_valid(index).to_numpy(zero_copy_only=False)
        if not labelled.any():
            return
        window = assigned["window"].to_numpy()[labelled]
        truth = labels["label_wnid"].take(index.filter(pc.is_valid(index)))
        correct = pc.equal(assigned["predicted_wnid"].filter(pa.array(labelled)), truth).to_numpy(
            zero_copy_only=False
        )
        size = max(int(window.max()), max(r["window"] for r in rows)) + 1
        n_labelled = np.bincount(window, minlength=size)
        n_correct = np.bincount(window, weights=correct.astype(float), minlength=size)
        for row in rows:
            k = row["window"]
            row["n_labelled"] = int(n_labelled[k])
            row["realized_accuracy"] = float(n_correct[k] / n_labelled[k]) if n_labelled[k] else None

    # -- one run --------------------------------------------------------------------------------------
    def run_once(self) -> MonitorStatus:
        """Read what is new, update the window table, alerts and outputs; return the status."""
        with self._lock:
            return self._run_once()

    def _run_once(self) -> MonitorStatus:
        cursor, alert, manifest = self._load_state()
        deleted = self.apply_retention(manifest)
        if deleted:
            print(
                f"retention: deleted {deleted} log file(s) older than {self.config.retention_days} days",
                flush=True,
            )
        new = scan(self.location, manifest, self.config.model_sha256)
        manifest.skipped |= new.skipped
        manifest.labels |= new.labels
        labels = self._labels(manifest)
        pending_path = self.state_dir / "pending.parquet"
        files = [self.location.full(rel) for rel in sorted(new.predictions)]
        if pending_path.is_file():
            files.append(str(pending_path))
        job = EngineInput(
            files=files,
            labels=labels,
            spec=self.config.spec,
            cursor=cursor,
            context=self.context,
            lateness_s=self.config.lateness_s,
            flush=self.config.flush,
            filesystem=None if self.location.is_local else self.location.fs,
            threads=self.config.threads,
        )
        result = run_engine(self.config.engine, job, self.config.ray_address)
        if self.context.explainer is not None:  # witness thumbnails, from a log written with --log_images
            add_witness_thumbnails(
                result.rows, self.location, sorted(new.predictions), self.out, self.config.reference_root
            )
        new_numbers = {r["window"] for r in result.rows}
        rows = [r for r in read_table(self.out) if r["window"] not in new_numbers] + result.rows
        rows.sort(key=lambda r: r["window"])
        if result.assignments.num_rows:
            first = min(new_numbers)
            with atomic_path(self.state_dir / "assignments" / f"part-{first:09d}.parquet") as tmp:
                pq.write_table(result.assignments, tmp)
        self._refresh_accuracy(rows, labels)
        events = [event for row in result.rows if (event := alert.update(row, self.config.policy))]
        if rows:
            write_table(self.out, rows)
        manifest.read |= new.predictions
        status = self._status(rows, alert, result, manifest, len(new.predictions), new.other_models, deleted)
        write_reports(self.out, status)
        self.gauges.update(status)
        self.gauges.write(self.out)
        if result.rows:
            shown = result.rows[-PRINTED_ROWS:]
            if len(result.rows) > len(shown):
                print(f"... {len(result.rows) - len(shown)} earlier new window(s): see windows.parquet")
            print(format_rows(shown), flush=True)
        for event in events:
            deliver(self.sinks, event, self.config.log)
        self._log_wandb(result.rows)
        # Commit last: the pending records, then the manifest and cursor that say they were read.
        with atomic_path(pending_path) as tmp:
            pq.write_table(result.pending, tmp)
        self._save_state(result.cursor, alert, manifest)
        self.status = status
        return status

    def _status(
        self,
        rows: list[dict[str, Any]],
        alert: AlertState,
        result: Any,
        manifest: Manifest,
        n_new: int,
        other_models: int,
        deleted: int,
    ) -> MonitorStatus:
        policy = self.config.policy
        return MonitorStatus(
            log=self.config.log,
            checkpoint_sha256=self.config.model_sha256,
            window=self.config.spec.describe(),
            engine=self.config.engine,
            alpha=self.context.alpha,
            updated_at=dt.datetime.now(dt.UTC),
            windows=[WindowRow(**r) for r in rows],
            alert=AlertStatus(
                **alert.to_dict(),
                alert_k=policy.alert_k,
                clear_k=policy.clear_k,
                cooldown_s=policy.cooldown_s,
            ),
            pending_records=result.pending.num_rows,
            late_records=result.n_late,
            files_read=len(manifest.read),
            files_read_this_run=n_new,
            files_skipped=manifest.skipped,
            files_other_models=other_models,
            files_deleted=deleted,
        )

    def _log_wandb(self, rows: list[dict[str, Any]]) -> None:
        if self.wandb_run is None:
            return
        for row in rows:
            metrics = {
                f"monitor/{k}": (float(v) if v is not None else float("nan"))
                for k, v in row.items()
                if k not in ("window", "window_start", "window_end", *TEXT_COLUMNS)
            }
            self.wandb_run.log(metrics, step=row["window"])


def start_wandb(monitor: Monitor, project: str = "imagenette-drift-monitor") -> None:
    """Attach a W&B run (offline without WANDB_API_KEY) that logs every new window row."""
    import os

    import wandb

    offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled")
    monitor.wandb_run = wandb.init(
        project=project,
        dir=str(monitor.out),
        mode="offline" if offline else "online",
        config={
            "log": monitor.config.log,
            "window": monitor.config.spec.describe(),
            "engine": monitor.config.engine,
        },
        job_type="monitor",
    )


def create_status_app(monitor: Monitor):
    """FastAPI app: `GET /status` (the `MonitorStatus` contract, also at /docs) and `GET /metrics`."""
    from fastapi import FastAPI, HTTPException, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    app = FastAPI(title="imagenette monitor", description="Fleet drift monitor over the inference log.")

    @app.get("/status", response_model=MonitorStatus)
    def status() -> MonitorStatus:
        if monitor.status is None:
            raise HTTPException(503, "the first monitor run has not finished yet; try again in a moment")
        return monitor.status

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(monitor.gauges.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def follow(monitor: Monitor, every_s: float, host: str, port: int) -> None:
    """Run the monitor every `every_s` seconds in a background thread and serve /status and /metrics until
    SIGTERM/SIGINT; a failed run is logged and retried at the next tick."""
    import uvicorn

    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                monitor.run_once()
            except UserError as e:  # e.g. GCS unreachable: one line; the next tick retries
                log.error("monitor run failed: %s", one_line(e))
            except Exception:  # a bug: keep serving the last good status; the next tick retries
                log.exception("monitor run failed")
            stop.wait(every_s)

    worker = threading.Thread(target=loop, name="monitor-runs", daemon=True)
    worker.start()
    try:
        uvicorn.run(create_status_app(monitor), host=host, port=port, log_level="warning")
    finally:
        stop.set()
        worker.join(timeout=60)
