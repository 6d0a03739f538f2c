"""DriftCallback: fit the drift reference during training and test evaluation data against it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from imagenette_drift.card import CHECKPOINT_KEY
from imagenette_drift.drift.assessment import WindowAssessor, assess_windows
from imagenette_drift.drift.image_stats import image_statistics
from imagenette_drift.drift.reference import DriftReference, ReferenceSettings
from imagenette_drift.drift.reference_size import reference_size_problem
from imagenette_drift.drift.windows import run_window_tests, window_tests
from imagenette_drift.estimation.reference import EstimationReference
from imagenette_drift.explanation.reference import ExplanationReference, compute_signatures
from imagenette_drift.familiarity.reference import FamiliarityReference, Rule
from imagenette_drift.reports.drift import write_report

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

    The same held-out outputs also fit, stored beside the reference in the card: temperature scaling and the
    ATC thresholds (`estimation`), the k-NN bank and energy threshold of per-request familiarity
    (`familiarity`), and the held-out confusion matrix, class shares and, at the last epoch of fit, the
    signatures of the 19 ImageNet-C corruptions (`explanation`; signatures need the `corruptions` extra).

    Needs the module's eval and predict steps to return `{"embeddings", "probs"}` (ImagenetteClassifier does).
    Override `on_drift_detected` to alert someone. The reference lives in the model card only (not also in the
    callback state), and `on_load_checkpoint` restores it from there, so a resumed run keeps it.
    """

    def __init__(
        self,
        reference: ReferenceSettings = ReferenceSettings(),  # noqa: B008 (frozen: one shared default is safe)
        report_dir: str | None = None,
        bank_size: int = 1000,
        knn_k: int = 5,
        familiarity_quantile: float = 0.95,
        familiarity_rule: Rule = "knn",
        signature_images: int = 100,
        signature_severity: int = 3,
    ) -> None:
        """Args:
        reference: how the drift reference is fitted (window size, reference size, significance level,
            calibration, seed), as `DriftReference.fit` takes it; its seed also seeds the familiarity bank and
            the window shuffling.
        report_dir: where drift_report.json/png go; default: the trainer's log dir.
        bank_size: held-out embeddings kept (float16) as the k-NN familiarity bank.
        knn_k: the neighbour whose distance scores familiarity (Sun et al. 2022).
        familiarity_quantile: fraction of held-out images under the familiarity thresholds.
        familiarity_rule: which score marks a request unfamiliar: knn, energy, or either.
        signature_images: held-out images used for the corruption signatures at the last epoch (0: none).
        signature_severity: corruption severity of the signatures, 1-5.
        """
        super().__init__()
        self.settings = reference  # passed as it is to DriftReference.fit at each validation epoch of fit
        self.window_size = reference.window_size
        self.seed = reference.seed
        self.report_dir = report_dir
        if not 1 <= signature_severity <= 5:
            raise ValueError(f"signature_severity must be 1-5, got {signature_severity}.")
        self.familiarity_kwargs = {
            "bank_size": bank_size,
            "k": knn_k,
            "quantile": familiarity_quantile,
            "rule": familiarity_rule,
            "seed": reference.seed,
        }
        self.signature_images = signature_images
        self.signature_severity = signature_severity
        self.reference: DriftReference | None = None
        self._size_warned = False
        # Card fields fitted beside the reference (plain state dicts), see CALLBACK_FIELDS.
        self.card_fields: dict[str, dict[str, Any] | None] = {}
        self.summary: dict[str, Any] | None = None
        self._embeddings: list[torch.Tensor] = []
        self._probs: list[torch.Tensor] = []
        self._stats: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._images: list[torch.Tensor] = []
        self._keep_images = False
        self._gathered_labels = torch.empty(0, dtype=torch.int64)

    def on_drift_detected(self, trainer: pl.Trainer, summary: dict[str, Any]) -> None:
        """Hook called once per evaluation run whose report says drift; empty by default."""

    # -- collecting outputs --------------------------------------------------------------------------
    def _reset(self, *_: Any) -> None:
        self._embeddings, self._probs, self._stats, self._labels, self._images = [], [], [], [], []

    on_test_epoch_start = on_predict_epoch_start = _reset

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        self._keep_images = trainer.state.fn == TrainerFn.FITTING and last_epoch and self.signature_images > 0

    def _collect(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        if not isinstance(outputs, dict) or "embeddings" not in outputs:
            return
        self._embeddings.append(outputs["embeddings"].detach().float().cpu())
        self._probs.append(outputs["probs"].detach().float().cpu())
        self._stats.append(image_statistics(batch[0]).cpu())
        self._labels.append(batch[1].detach().cpu())
        if self._keep_images:
            self._images.append(batch[0].detach().cpu())

    on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _collect

    def _gathered(self, pl_module: pl.LightningModule) -> tuple[torch.Tensor, ...] | None:
        """(embeddings, probs, image statistics) of this epoch, from every rank."""
        if not self._embeddings:
            return None
        data = tuple(torch.cat(parts) for parts in (self._embeddings, self._probs, self._stats))
        labels = torch.cat(self._labels)
        if pl_module.trainer.world_size > 1:
            data = tuple(pl_module.all_gather(t.to(pl_module.device)).flatten(0, 1).cpu() for t in data)
            labels = pl_module.all_gather(labels.to(pl_module.device)).flatten(0, 1).cpu()
        self._embeddings, self._probs, self._stats, self._labels = [], [], [], []
        self._gathered_labels = labels
        return data

    def _fit_card_fields(
        self,
        pl_module: pl.LightningModule,
        embeddings: torch.Tensor,
        probs: torch.Tensor,
        image_stats: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        """Estimation, familiarity and explanation references from the same held-out outputs."""
        log_probs = probs.clamp_min(1e-30).log()  # logits up to a per-row shift: same temperature
        head = _linear_head(pl_module)
        explanation = ExplanationReference.fit(probs, labels, image_stats, embeddings)
        if self._images:
            self._add_signatures(pl_module, explanation, torch.cat(self._images))
            self._images = []
        self.card_fields = {
            "estimation": EstimationReference.fit(log_probs, labels).state_dict(),
            "familiarity": FamiliarityReference.fit(
                embeddings,
                *(head or (None, None)),
                **self.familiarity_kwargs,
                paths=_heldout_paths(pl_module.trainer, len(embeddings)),
            ).state_dict(),
            "explanation": explanation.state_dict(),
        }

    def _add_signatures(
        self, pl_module: pl.LightningModule, explanation: ExplanationReference, images: torch.Tensor
    ) -> None:
        keep = torch.linspace(0, len(images) - 1, min(self.signature_images, len(images))).long()
        net = pl_module.net

        def embed(batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), pl_module.trainer.precision_plugin.forward_context():
                return net.embed(batch.to(pl_module.device)).float().cpu()

        try:
            compute_signatures(explanation, images[keep], embed, severity=self.signature_severity)
        except ImportError as e:
            log.warning("DriftCallback: no corruption signatures in the card: %s", e)

    # -- fit: build the reference --------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = self._gathered(pl_module)
        if data is None or trainer.sanity_checking:
            return
        if trainer.state.fn == TrainerFn.FITTING:
            self.reference = DriftReference.fit(*data, settings=self.settings)
            self._warn_if_too_small(trainer, self.reference)
            self._fit_card_fields(pl_module, *data, labels=self._gathered_labels)
        else:
            self._evaluate(trainer, pl_module, *data, stage="validate")

    def _warn_if_too_small(self, trainer: pl.Trainer, reference: DriftReference) -> None:
        """Say once per fit when the held-out split is too small to calibrate drift tests at the window."""
        problem = reference_size_problem(
            reference.n_reference, reference.window_size, window_tests(reference, reference.window_size)
        )
        if problem is not None and not self._size_warned:
            self._size_warned = True
            rank_zero_warn(
                f"DriftCallback: {problem}; `imagenette monitor` and `imagenette drift` refuse windows of "
                f"{reference.window_size} with it, and the server's /drift is off."
            )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if self.reference is not None:
            card = checkpoint.setdefault(CHECKPOINT_KEY, {})
            card["drift"] = self.reference.state_dict()
            card.update(self.card_fields)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        card = checkpoint.get(CHECKPOINT_KEY) or {}
        state = card.get("drift")
        self.reference = None if state is None else DriftReference.from_state_dict(state)
        self.card_fields = {key: card.get(key) for key in ("estimation", "familiarity", "explanation")}

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
        window = min(self.window_size, len(embeddings))
        problem = reference_size_problem(
            self.reference.n_reference, window, window_tests(self.reference, window)
        )
        if problem is not None:
            log.warning("DriftCallback: %s; skipping drift tests.", problem)
            return
        # trainer.log_dir is a collective call under DDP: every rank asks for it before rank 0 goes on alone.
        report_dir = Path(self.report_dir or trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        self.summary = run_window_tests(
            self.reference, embeddings, probs, image_stats, self.window_size, seed=self.seed
        )
        class_names = getattr(pl_module, "class_names", None) or [str(c) for c in range(probs.shape[1])]
        assessor = WindowAssessor.from_fields(class_names, self.reference.state_dict(), **self.card_fields)
        assess_windows(self.summary, assessor, embeddings, probs, image_stats, seed=self.seed)
        self.summary["stage"] = stage
        for logger in trainer.loggers:
            for row in self.summary["windows"]:
                metrics = {f"drift/{k}": float(v) for k, v in row.items() if k not in ("window", "size")}
                logger.log_metrics(metrics, step=row["window"])
        write_report(self.summary, report_dir, name="drift_report")
        if self.summary["drift"]:
            self.on_drift_detected(trainer, self.summary)


def _linear_head(pl_module: pl.LightningModule) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) of the module's classifier head when it is one nn.Linear on the embeddings, else None."""
    net = getattr(pl_module, "net", None)
    backbone = getattr(net, "backbone", None)
    head = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
    if isinstance(head, torch.nn.Linear) and head.bias is not None:
        return head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
    return None


def _heldout_paths(trainer: pl.Trainer, n: int) -> list[str] | None:
    """The held-out images in validation order, relative to the data root, when the data module says so."""
    datamodule = getattr(trainer, "datamodule", None)
    split = (getattr(datamodule, "splits", None) or {}).get("val")
    if split is None or len(split.paths) != n:
        return None
    root = Path(datamodule.root)
    return [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else str(p) for p in split.paths]
