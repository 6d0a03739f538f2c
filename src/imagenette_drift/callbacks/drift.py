"""DriftCallback: fit the drift reference during training and test evaluation data against it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from imagenette_drift.card import CHECKPOINT_KEY
from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.drift.reference import DriftReference
from imagenette_drift.drift.windows import run_window_tests, write_report

log = logging.getLogger(__name__)


class DriftCallback(Callback):
    """Store a drift reference in every checkpoint, and test validate/test/predict data against it.

    During `fit`, each validation epoch embeds the held-out split carved from train and fits the reference
    (MMD on embeddings, KS and chi-squared on softmax outputs, KS on input statistics, the calibrated online
    monitor); every
    checkpoint saved after it carries that reference in its model card, so it matches the checkpoint's
    weights. During `validate`/`test`/`predict` the images are tested window by window against the reference
    of the loaded checkpoint: statistic, p-value and flag per window go to the logger (`drift/...`), and
    `drift_report.json` and `drift_report.png` go to `report_dir`.

    Needs the module's eval and predict steps to return `{"embeddings", "probs"}` (ImagenetteClassifier does).
    Override `on_drift_detected` to alert someone. The reference lives in the model card only (not also in the
    callback state), and `on_load_checkpoint` restores it from there, so a resumed run keeps it.
    """

    def __init__(
        self,
        window_size: int = 200,
        max_reference: int = 1000,
        n_permutations: int = 100,
        alpha: float = 0.05,
        expected_run_time: int = 1000,
        n_bootstrap: int = 2000,
        seed: int = 0,
        report_dir: str | None = None,
    ) -> None:
        """Args:
        window_size: images per tested window (and the online monitor's window, capped by the reference size).
        max_reference: most held-out images kept in the reference (seeded subsample).
        n_permutations: permutations of the MMD test.
        alpha: significance level of the window tests.
        expected_run_time: mean full-window updates between false alarms of the online monitor.
        n_bootstrap: simulated streams used to calibrate the online monitor.
        seed: seed of subsampling, permutations, calibration and window shuffling.
        report_dir: where drift_report.json/png go; default: the trainer's log dir.
        """
        super().__init__()
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {window_size}.")
        self.window_size = window_size
        self.seed = seed
        self.report_dir = report_dir
        # Passed as they are to DriftReference.fit at each validation epoch of fit.
        self.reference_kwargs = {
            "window_size": window_size,
            "max_reference": max_reference,
            "n_permutations": n_permutations,
            "alpha": alpha,
            "expected_run_time": expected_run_time,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
        }
        self.reference: DriftReference | None = None
        self.summary: dict[str, Any] | None = None
        self._embeddings: list[torch.Tensor] = []
        self._probs: list[torch.Tensor] = []
        self._stats: list[torch.Tensor] = []

    def on_drift_detected(self, trainer: pl.Trainer, summary: dict[str, Any]) -> None:
        """Hook called once per evaluation run whose report says drift; empty by default."""

    # -- collecting outputs --------------------------------------------------------------------------
    def _reset(self, *_: Any) -> None:
        self._embeddings, self._probs, self._stats = [], [], []

    on_validation_epoch_start = on_test_epoch_start = on_predict_epoch_start = _reset

    def _collect(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        if not isinstance(outputs, dict) or "embeddings" not in outputs:
            return
        self._embeddings.append(outputs["embeddings"].detach().float().cpu())
        self._probs.append(outputs["probs"].detach().float().cpu())
        self._stats.append(image_statistics(batch[0]).cpu())

    on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _collect

    def _gathered(self, pl_module: pl.LightningModule) -> tuple[torch.Tensor, ...] | None:
        """(embeddings, probs, image statistics) of this epoch, from every rank."""
        if not self._embeddings:
            return None
        data = tuple(torch.cat(parts) for parts in (self._embeddings, self._probs, self._stats))
        if pl_module.trainer.world_size > 1:
            data = tuple(pl_module.all_gather(t.to(pl_module.device)).flatten(0, 1).cpu() for t in data)
        self._reset()
        return data

    # -- fit: build the reference --------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = self._gathered(pl_module)
        if data is None or trainer.sanity_checking:
            return
        if trainer.state.fn == TrainerFn.FITTING:
            self.reference = DriftReference.fit(*data, **self.reference_kwargs)
        else:
            self._evaluate(trainer, pl_module, *data, stage="validate")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if self.reference is not None:
            checkpoint.setdefault(CHECKPOINT_KEY, {})["drift"] = self.reference.state_dict()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        state = (checkpoint.get(CHECKPOINT_KEY) or {}).get("drift")
        self.reference = None if state is None else DriftReference.from_state_dict(state)

    # -- validate / test / predict: test against it -----------------------------------------------------
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = self._gathered(pl_module)
        if data is not None:
            self._evaluate(trainer, pl_module, *data, stage="test")

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = self._gathered(pl_module)
        if data is not None:
            self._evaluate(trainer, pl_module, *data, stage="predict")

    def _evaluate(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        embeddings: torch.Tensor,
        probs: torch.Tensor,
        image_stats: torch.Tensor,
        stage: str,
    ) -> None:
        if self.reference is None:
            log.warning(
                "DriftCallback: no drift reference (train with this callback and --data.val_fraction > 0, "
                "then pass --ckpt_path); skipping drift tests."
            )
            return
        # trainer.log_dir is a collective call under DDP: every rank asks for it before rank 0 goes on alone.
        report_dir = Path(self.report_dir or trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        self.summary = run_window_tests(
            self.reference, embeddings, probs, image_stats, self.window_size, seed=self.seed
        )
        self.summary["stage"] = stage
        for logger in trainer.loggers:
            for row in self.summary["windows"]:
                metrics = {f"drift/{k}": float(v) for k, v in row.items() if k not in ("window", "size")}
                logger.log_metrics(metrics, step=row["window"])
        write_report(self.summary, report_dir, name="drift_report")
        if self.summary["drift"]:
            self.on_drift_detected(trainer, self.summary)
