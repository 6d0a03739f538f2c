"""`imagenette monitor`: drift, label shift and accuracy of the whole fleet, window by window, from the inference log."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from imagenette_drift.commands._options import CommandParser
from imagenette_drift.errors import UserError
from imagenette_drift.monitoring.alerts import AlertPolicy
from imagenette_drift.monitoring.windows import WindowSpec, parse_duration


@dataclass
class MonitorOptions:
    """Options of `imagenette monitor`.

    Args:
        ckpt_path: The served checkpoint: a path or gs:// URI.
        log: Log root: a folder or gs://bucket/prefix.
        window: Records per window (e.g. 500) or a UTC-aligned duration (e.g. 1h, 30m).
        out: Output and state folder.
        engine: Query engine.
        ray_address: Ray cluster to join (e.g. auto); default: a local Ray instance.
        alpha: Family-wise significance level per window.
        alert_k: Drifting windows in a row that raise an alert.
        clear_k: Clean windows in a row that clear it.
        cooldown: No new alert this long after one was raised.
        lateness: Time windows: wait this long past a window's end for late files.
        flush: Close the last, incomplete window too (a finished log).
        webhook: POST alert events as JSON to this URL.
        github_repo: owner/name: send repository_dispatch (event 'retrain') on each raised alert; the token is
            read from the GITHUB_TOKEN environment variable only.
        log_retention_days: Delete log files older than this many days.
        follow: Run on a schedule and serve /status and /metrics.
        every: With --follow: time between runs.
        host: With --follow: interface to listen on.
        port: With --follow: port of /status and /metrics.
        wandb: Log each window to a W&B run (offline without a key).
        threads: CPU threads for torch and the engine.
        reference_root: The training data root: the report shows each witness image (logged with
            --log_images) beside a thumbnail of its nearest held-out image from this folder.
        cache_dir: Where gs:// checkpoints download (default: ~/.cache/imagenette-drift).
    """

    ckpt_path: str
    log: str = "outputs/inference-log"
    window: str = "1h"
    out: Path = Path("outputs/monitor")
    engine: Literal["duckdb", "ray"] = "duckdb"
    ray_address: str | None = None
    alpha: float = 0.05
    alert_k: int = AlertPolicy.alert_k
    clear_k: int = AlertPolicy.clear_k
    cooldown: str = "6h"
    lateness: str = "2m"
    flush: bool = False
    webhook: str | None = None
    github_repo: str | None = None
    log_retention_days: int | None = None
    follow: bool = False
    every: str = "5m"
    host: str = "127.0.0.1"
    port: int = 8010
    wandb: bool = False
    threads: int = 1
    reference_root: Path | None = None
    cache_dir: Path | None = None


def build_parser() -> CommandParser:
    return CommandParser(
        "imagenette monitor",
        "Read every replica's inference-log files (incrementally), test each window of traffic against the "
        "checkpoint's drift reference, raise alerts with hysteresis, and write the window table "
        "(windows.parquet), monitor_report.json/.md/.png and metrics.prom to --out.",
        MonitorOptions,
    )


def load_context(checkpoint: str, cache_dir: Path, alpha: float):
    """(WindowContext, checkpoint sha256) from the checkpoint's model card; no network weights are built."""
    from imagenette_drift.card import CHECKPOINT_KEY, ModelCard
    from imagenette_drift.checkpoint import file_sha256, read_checkpoint
    from imagenette_drift.drift.assessment import WindowAssessor
    from imagenette_drift.drift.reference import DriftReference
    from imagenette_drift.estimation.reference import window_estimator
    from imagenette_drift.monitoring.stats import WindowContext
    from imagenette_drift.storage.checkpoint import resolve_checkpoint

    resolved = resolve_checkpoint(checkpoint, cache_dir)
    card = ModelCard.from_dict(read_checkpoint(resolved.path)[CHECKPOINT_KEY])
    if card.drift is None:
        raise ValueError(
            f"{checkpoint} carries no drift reference: train with the DriftCallback and --data.val_fraction > 0."
        )
    # The card's primary estimate (COT; ATC-MC on older cards) fills the window table's `estimated_accuracy`.
    estimator = window_estimator(card.estimation) if card.estimation else None
    # Drifting windows get an explanation (class shift, BBSE, corruption signatures, witnesses).
    explainer = WindowAssessor.from_card(card) if card.explanation else None
    context = WindowContext(
        DriftReference.from_state_dict(card.drift),
        card.wnids,
        alpha=alpha,
        accuracy_estimator=estimator,
        explainer=explainer,
    )
    return context, file_sha256(resolved.path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.options(MonitorOptions, argv)
    args.cache_dir = args.cache_dir or Path.home() / ".cache" / "imagenette-drift"
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    import torch

    from imagenette_drift.drift.reference_size import check_reference_size
    from imagenette_drift.monitoring.service import Monitor, MonitorConfig, follow, start_wandb
    from imagenette_drift.monitoring.sinks import build_sinks
    from imagenette_drift.monitoring.stats import calibrated_tests

    torch.set_num_threads(max(1, args.threads))
    try:
        spec = WindowSpec.parse(args.window)
        policy = AlertPolicy(args.alert_k, args.clear_k, parse_duration(args.cooldown, "--cooldown"))
        lateness = parse_duration(args.lateness, "--lateness")
        every = parse_duration(args.every, "--every")
        if args.log_retention_days is not None and args.log_retention_days < 1:
            raise ValueError(f"--log_retention_days must be at least 1, got {args.log_retention_days}.")
        if not args.follow and "://" not in args.log and not Path(args.log).is_dir():
            raise FileNotFoundError(
                f"the log {args.log} does not exist; pass the folder `imagenette serve --log` wrote."
            )
        sinks = build_sinks(args.webhook, args.github_repo, os.environ)
        context, sha = load_context(args.ckpt_path, args.cache_dir, args.alpha)
        if spec.kind == "count":
            reference = context.reference
            check_reference_size(reference.n_reference, spec.size, lambda n: calibrated_tests(reference, n))
        config = MonitorConfig(
            log=args.log,
            out_dir=args.out,
            spec=spec,
            model_sha256=sha,
            engine=args.engine,
            ray_address=args.ray_address,
            policy=policy,
            lateness_s=lateness,
            flush=args.flush,
            retention_days=args.log_retention_days,
            threads=max(1, args.threads),
            reference_root=args.reference_root,
        )
        monitor = Monitor(config, context, sinks)
    except (ValueError, FileNotFoundError) as e:
        # One line from the CLI for a UserError (a StorageError naming bucket and object, a reference too small
        # for the window): the flags were fine. Other ValueErrors are flag values: usage and the message.
        if isinstance(e, UserError):
            raise
        parser.error(str(e))
    if args.wandb:
        start_wandb(monitor)
    if args.follow:
        print(
            f"monitoring {args.log} every {every:g} s; /status and /metrics on {args.host}:{args.port}",
            flush=True,
        )
        follow(monitor, every, args.host, args.port)
        return
    status = monitor.run_once()
    for name, reason in status.files_skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if status.files_read == 0:
        other = (
            f" ({status.files_other_models} file(s) of other checkpoints)"
            if status.files_other_models
            else ""
        )
        print(
            f"no prediction records of this checkpoint in {args.log} yet{other}: nothing tested, no alert. "
            f"Point --log at the folder `imagenette serve --log` writes, after it has served requests.",
            flush=True,
        )
        return
    print(
        f"{len(status.windows)} window(s) of {status.window} in {args.out / 'windows.parquet'}; "
        f"{status.files_read_this_run} new file(s) read, {status.pending_records} record(s) pending, "
        f"{status.late_records} late; alert {'ACTIVE' if status.alert.active else 'clear'}",
        flush=True,
    )
    if monitor.wandb_run is not None:
        monitor.wandb_run.finish()
