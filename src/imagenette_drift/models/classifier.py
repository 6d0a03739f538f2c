"""LightningModule that trains an `ImagenetteNet` and writes the model card into every checkpoint."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from imagenette_drift.card import CALLBACK_FIELDS, CHECKPOINT_KEY, ModelCard
from imagenette_drift.classes import IMAGENETTE_CLASSES
from imagenette_drift.io import write_text_atomic
from imagenette_drift.models.mixing import BatchMixer
from imagenette_drift.models.net import ImagenetteNet


def default_optimizer(params: Any) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; override with `--model.optimizer` / the YAML `optimizer:` block."""
    return torch.optim.SGD(params, lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-5)


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class ImagenetteClassifier(pl.LightningModule):
    """Image classifier around any timm model, with metrics, LR schedule and the checkpoint contract.

    Batches are `(uint8 images, labels)`; normalisation lives in the network so the checkpoint alone
    reproduces inference. `embed()` gives the penultimate features that drift detection uses.
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        num_classes: int = 10,
        pretrained: bool = False,
        image_size: int = 160,
        optimizer: OptimizerCallable = default_optimizer,
        scheduler: Literal["cosine", "linear", "constant"] = "cosine",
        warmup_fraction: float = 0.25,
        warmup_start: float = 0.04,
        label_smoothing: float = 0.1,
        no_decay_norm_bias: bool = True,
        channels_last: bool = True,
        tta_flip: bool = False,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        timm_kwargs: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        wnids: list[str] | None = None,
    ) -> None:
        """Args:
        model_name: any `timm.list_models()` name.
        num_classes: number of output classes, at least 2 (linked from the data module).
        pretrained: start from timm's ImageNet weights (needs network or a warm HF cache).
        image_size: evaluation resolution, recorded in the checkpoint (linked from the data module).
        optimizer: optimizer factory taking parameter groups; its `lr` is the peak learning rate.
        scheduler: per-step LR decay after the warmup: cosine or linear to zero (one-cycle style), or constant.
        warmup_fraction: fraction of all steps spent warming up linearly to the peak LR.
        warmup_start: LR at step 0 as a fraction of the peak.
        label_smoothing: cross-entropy label smoothing.
        no_decay_norm_bias: exclude norm weights and biases from weight decay.
        channels_last: run convolutions in channels_last memory format (faster with bf16/AMX and on GPUs).
        tta_flip: at evaluation, average the logits of each image and its mirror image (2x eval compute).
        mixup_alpha: MixUp's Beta(alpha, alpha) for training batches (0 = off).
        cutmix_alpha: CutMix's Beta(alpha, alpha) for training batches (0 = off); with both on, each batch
            picks one at random.
        mix_prob: probability that a training batch is mixed at all.
        timm_kwargs: extra keyword arguments for `timm.create_model` (e.g. drop_rate, zero_init_last).
        class_names: human-readable class names by label index, written into the model card (linked from the
            data module's class folders); None means Imagenette's, which needs num_classes=10.
        wnids: class folder names (WordNet ids for Imagenette) by label index, for the model card (linked from
            the data module); None means Imagenette's with class_names None, else the class names.

        Raises:
            ValueError: num_classes < 2, or class names/wnids whose number is not num_classes.
        """
        super().__init__()
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}.")
        self.class_names, self.wnids = _class_table(num_classes, class_names, wnids)
        self.save_hyperparameters(ignore=["optimizer", "class_names", "wnids"])
        # As plain lists, so that a weights-only load of the checkpoint reads them back.
        self.hparams.class_names, self.hparams.wnids = list(self.class_names), list(self.wnids)
        self.net = ImagenetteNet(
            model_name, num_classes, pretrained=pretrained, channels_last=channels_last, **(timm_kwargs or {})
        )
        self.optimizer_factory = optimizer
        self.mixer = BatchMixer(num_classes, mixup_alpha, cutmix_alpha, mix_prob)
        self.train_metrics = _metrics(num_classes, "train/")
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")
        self.confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D) of uint8 or [0, 1] images."""
        return self.net.embed(images)

    def model_card(self) -> ModelCard:
        """The checkpoint's model card; training metrics come from the trainer when attached."""
        metrics = {}
        if self._trainer is not None:
            metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        return ModelCard(
            model_name=self.hparams.model_name,
            class_names=self.class_names,
            wnids=self.wnids,
            image_size=self.hparams.image_size,
            mean=self.net.mean_values,
            std=self.net.std_values,
            timm_kwargs=dict(self.hparams.timm_kwargs or {}),
            tta_flip=bool(self.hparams.get("tta_flip", False)),
            metrics=metrics,
            training=self._training_record(),
        )

    def _training_record(self) -> dict[str, Any] | None:
        """The precision the run used and why (set by the CLI; else read from the attached trainer)."""
        choice = getattr(self, "precision_choice", None)
        if choice is not None:
            return dict(choice)
        if self._trainer is not None:
            return {"precision": str(self.trainer.precision), "reason": "set on the Trainer"}
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        previous = checkpoint.get(CHECKPOINT_KEY) or {}
        card = self.model_card().to_dict()
        for key in CALLBACK_FIELDS:  # written earlier by the drift callback, if any
            card[key] = previous.get(key)
        checkpoint[CHECKPOINT_KEY] = card

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with label smoothing; `targets` are class indices or (mixed) class probabilities."""
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        targets = labels
        if self.mixer.enabled:
            images, targets = self.mixer(images, labels)  # soft targets of what was mixed
        logits = self(images)
        loss = self._loss(logits, targets)
        self.train_metrics["acc"](logits, labels)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels))
        self.log("train/acc", self.train_metrics["acc"], on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def _eval_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str
    ) -> dict[str, torch.Tensor]:
        outputs = self.predict_step(batch, 0)
        logits, labels = outputs.pop("logits"), outputs["targets"]
        metrics.update(logits, labels)
        self.confusion.update(logits, labels)
        self.log(
            f"{stage}/loss", self._loss(logits, labels), on_epoch=True, batch_size=len(labels), sync_dist=True
        )
        return outputs  # embeddings and probs, for the drift callback

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, self.test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_metrics, "test")

    def _eval_epoch_end(self, metrics: MetricCollection, stage: str) -> None:
        values = metrics.compute()
        self.log_dict(values, prog_bar=True)
        metrics.reset()
        matrix = self.confusion.compute()
        self.confusion.reset()
        if self.trainer.sanity_checking:
            return
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a collective call: all ranks
        if self.trainer.is_global_zero:
            self._log_confusion_matrix(matrix, stage, out_dir)
            summary = {k: float(v) for k, v in values.items()} | {"epoch": self.current_epoch}
            write_text_atomic(out_dir / f"{stage}_metrics.json", json.dumps(summary, indent=2) + "\n")

    def _log_confusion_matrix(self, matrix: torch.Tensor, stage: str, out_dir: Path) -> None:
        from imagenette_drift.plots import plot_confusion_matrix

        path = plot_confusion_matrix(matrix, self.class_names, out_dir / f"{stage}_confusion_matrix.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"{stage}/confusion_matrix", images=[str(path)], step=self.global_step)

    def predict_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        """Embeddings, logits and softmax outputs from one forward pass (targets are -1 when unknown)."""
        images, labels = batch
        features, logits = self.net.embed_and_logits(images, self.hparams.tta_flip)
        return {"probs": logits.softmax(dim=1), "logits": logits, "embeddings": features, "targets": labels}

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self._param_groups())
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = lr_factor(
            self.hparams.scheduler,
            int(self.hparams.warmup_fraction * total),
            total,
            self.hparams.warmup_start,
        )
        # LambdaLR keeps no copy of the schedule in the checkpoint: a resumed run with a larger
        # max_epochs stretches the schedule to the new budget instead of failing.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _param_groups(self) -> list[dict[str, Any]]:
        if not self.hparams.no_decay_norm_bias:
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        decay, no_decay = [], []
        for module in self.net.modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad:
                    continue
                is_norm = isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm)
                (no_decay if is_norm or name == "bias" else decay).append(param)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def _class_table(
    num_classes: int, class_names: list[str] | None, wnids: list[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`(class_names, wnids)` as tuples of `num_classes` strings, defaulting to Imagenette's table."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    if class_names is None:
        if num_classes != len(IMAGENETTE_CLASSES) or wnids is not None:
            raise ValueError(
                f"class_names must name the {num_classes} classes (without them the model takes Imagenette's "
                f"{len(IMAGENETTE_CLASSES)}); `imagenette fit` links them from the data's class folders."
            )
        return tuple(name for _, name in IMAGENETTE_CLASSES), tuple(wnid for wnid, _ in IMAGENETTE_CLASSES)
    names = tuple(str(name) for name in class_names)
    folders = tuple(str(w) for w in wnids) if wnids is not None else names
    if len(names) != num_classes or len(folders) != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but got {len(names)} class_names and {len(folders)} wnids; they must match."
        )
    return names, folders


def lr_factor(schedule: str, warmup: int, total: int, warmup_start: float = 0.04) -> Callable[[int], float]:
    """Multiplier of the peak LR at each step: linear warmup from `warmup_start`, then decay to zero.

    `cosine` and `linear` decay over the remaining steps (one-cycle style); `constant` stays at the peak.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_start + (1.0 - warmup_start) * step / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
