"""LightningCLI for training and evaluation: `imagenette fit|validate|test|predict`."""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from imagenette_drift.checkpoint import read_checkpoint
from imagenette_drift.data import ImagenetteDataModule, list_images
from imagenette_drift.data.datamodule import ensure_data
from imagenette_drift.data.root import resolve_root
from imagenette_drift.hardware import resolve_precision
from imagenette_drift.models import ImagenetteClassifier


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save `config.yaml` to the log dir and send the full resolved config to every logger."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.config.as_dict()
        precision = getattr(pl_module, "precision_choice", None)
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config, "precision": precision})


class ImagenetteCLI(LightningCLI):
    """LightningCLI for `ImagenetteClassifier` on `ImagenetteDataModule`, with values shared by links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data says what the classes are: its class folders give the model's outputs and the card's names.
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.wnids", "model.wnids", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check the data and checkpoint before anything is built or logged."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand in self.subcommands():
            check_inputs(subcommand, self.config[subcommand])

    def before_instantiate_classes(self) -> None:
        """Resolve an unset (`auto`) `trainer.precision` from the hardware and say which, once."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        if trainer.get("precision") is None:
            precision, reason = resolve_precision(trainer.get("accelerator"))
            trainer["precision"] = precision
            reason = f"auto: {reason}"
        else:
            precision, reason = str(trainer["precision"]), "requested (--trainer.precision)"
        self.precision_choice = {"precision": precision, "reason": reason}
        rank_zero_info(f"Precision {precision}: {reason}.")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.model.precision_choice = self.precision_choice  # written into the checkpoint's model card


def check_inputs(subcommand: str, config: Namespace) -> None:
    """Fail early, with a `UserError` naming the fix, when the run's data or checkpoint cannot be used.

    `predict --data.predict_dir` needs only that folder; every other run needs the data set (downloaded
    here, once, when allowed and missing; other ranks of a multi-process run leave that to rank 0's
    `prepare_data`). A `--ckpt_path` file must be an imagenette-drift checkpoint.

    Raises:
        MissingDataError, BadDataError: no data set (or the download failed), or a missing or empty folder.
        MissingCheckpointError, BadCheckpointError: a missing, unreadable or foreign checkpoint.
    """
    data = config["data"]
    if subcommand == "predict" and data.get("predict_dir"):
        list_images(Path(data["predict_dir"]))
    elif os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        ensure_data(resolve_root(data.get("root")), data["download"], data["url"], data["md5"])
    ckpt_path = config.get("ckpt_path")
    if ckpt_path and ckpt_path not in _LIGHTNING_CKPT_KEYWORDS and "://" not in str(ckpt_path):
        read_checkpoint(ckpt_path)


_LIGHTNING_CKPT_KEYWORDS = ("best", "last", "hpc", "registry")


def run_lightning_cli(argv: Sequence[str], from_sys_argv: bool = False) -> LightningCLI:
    """Run one Lightning subcommand; parse errors exit with one line that names the bad flag."""
    argv = _precision_auto_as_unset(argv)
    if from_sys_argv:
        sys.argv[1:] = argv
    # Abbreviated flags are refused (argparse would take --trainer.max_epoch for --trainer.max_epochs), and a
    # parse error is one line naming the flag instead of the full usage text.
    parser_kwargs = {"allow_abbrev": False, "exit_on_error": False}
    try:
        cli = ImagenetteCLI(
            ImagenetteClassifier,
            ImagenetteDataModule,
            args=None if from_sys_argv else argv,
            seed_everything_default=0,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={**parser_kwargs, **dict.fromkeys(ImagenetteCLI.subcommands(), parser_kwargs)},
            auto_configure_optimizers=False,
        )
    except ArgumentError as e:
        message = " ".join(str(e).split())
        print(f"imagenette {argv[0]}: error: {message}\nSee `imagenette {argv[0]} --help`.", file=sys.stderr)
        raise SystemExit(2) from None
    _finish_wandb_runs(cli)
    return cli


def _precision_auto_as_unset(argv: list[str]) -> list[str]:
    """`--trainer.precision=auto` is the same as leaving it unset: the precision is chosen from the hardware."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--trainer.precision=auto":
            arg = "--trainer.precision=null"
        elif arg == "auto" and i > 0 and argv[i - 1] == "--trainer.precision":
            arg = "null"
        out.append(arg)
    return out


def _finish_wandb_runs(cli: LightningCLI) -> None:
    """One command is one W&B run: close it so the next command in this process starts a new one."""
    trainer = getattr(cli, "trainer", None)
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
