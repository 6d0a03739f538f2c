"""Write `imagenette predict` results to a CSV file, one row per image."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from imagenette_drift.classes import IMAGENETTE_CLASSES
from imagenette_drift.io import atomic_path


class PredictionWriter(BasePredictionWriter):
    """Collects predictions and writes `path,label,wnid,confidence,target` rows to `output` at epoch end."""

    def __init__(self, output: str = "outputs/predictions.csv") -> None:
        """Args:
        output: CSV file to write (replaced atomically).
        """
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: list[Any],
        batch_indices: list[Any],
    ) -> None:
        if not trainer.is_global_zero:
            return
        # The model's classes (linked from the data's class folders); Imagenette's for another LightningModule.
        names = getattr(pl_module, "class_names", None) or tuple(name for _, name in IMAGENETTE_CLASSES)
        wnids = getattr(pl_module, "wnids", None) or tuple(wnid for wnid, _ in IMAGENETTE_CLASSES)
        dataloaders = trainer.predict_dataloaders
        loaders = dataloaders if isinstance(dataloaders, list) else [dataloaders]
        # Lightning nests per dataloader only when there are several; make it uniform.
        if predictions and isinstance(predictions[0], dict):
            predictions = [predictions]
        if batch_indices and batch_indices[0] and isinstance(batch_indices[0][0], int):
            batch_indices = [batch_indices]
        with atomic_path(self.output) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["path", "label", "wnid", "confidence", "target"])
            for loader, preds, indices in zip(loaders, predictions, batch_indices, strict=True):
                paths = loader.dataset.paths
                for batch, idx in zip(preds, indices, strict=True):
                    confidence, label = batch["probs"].max(dim=1)
                    for i, j, c, t in zip(
                        idx, label.tolist(), confidence.tolist(), batch["targets"].tolist(), strict=True
                    ):
                        target = wnids[t] if t >= 0 else ""
                        writer.writerow([str(paths[i]), names[j], wnids[j], f"{c:.6f}", target])
