"""The `imagenette` command: LightningCLI's fit/validate/test/predict plus the project's own subcommands."""

from __future__ import annotations

import importlib
import sys
from argparse import ArgumentError
from collections.abc import Sequence

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from imagenette_drift.data import ImagenetteDataModule
from imagenette_drift.models import ImagenetteClassifier

LIGHTNING_COMMANDS = {
    "fit": "Train (and validate) a model.",
    "validate": "Evaluate on the validation split carved from train.",
    "test": "Evaluate on the test split (official Imagenette val).",
    "predict": "Predict on the test split or any folder (--data.predict_dir), writing a CSV.",
}
# Project subcommands outside Lightning's Trainer: name -> ("module:function", one-line help).
# Each function takes the remaining argv list. Imported lazily so `fit` never imports the server.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "drift": (
        "imagenette_drift.commands.drift:main",
        "Test a folder of images (optionally corrupted) for drift against a checkpoint's reference.",
    ),
}


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save `config.yaml` to the log dir and send the full resolved config to every logger."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = self.config.as_dict()
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class ImagenetteCLI(LightningCLI):
    """LightningCLI for `ImagenetteClassifier` on `ImagenetteDataModule`, with values shared by links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size")


def _top_level_help() -> str:
    commands = {**LIGHTNING_COMMANDS, **{name: text for name, (_, text) in EXTRA_COMMANDS.items()}}
    width = max(map(len, commands))
    lines = [
        "usage: imagenette <command> [options]",
        "",
        "Train, serve and monitor an Imagenette classifier for data drift.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in commands.items()),
        "",
        "Run `imagenette <command> --help` for a command's options, e.g.",
        "  imagenette fit --config configs/quickstart.yaml",
    ]
    return "\n".join(lines)


def cli_main(args: Sequence[str] | None = None) -> LightningCLI | None:
    """Entry point of `imagenette`; pass `args` to drive it in-process (tests)."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return None
    if argv[0] == "--version":
        from imagenette_drift import __version__

        print(f"imagenette-drift {__version__}")
        return None
    if argv[0] in EXTRA_COMMANDS:
        module_name, function_name = EXTRA_COMMANDS[argv[0]][0].split(":")
        getattr(importlib.import_module(module_name), function_name)(argv[1:])
        return None
    if argv[0] not in LIGHTNING_COMMANDS and not argv[0].startswith("-"):
        known = ", ".join([*LIGHTNING_COMMANDS, *EXTRA_COMMANDS])
        print(f"imagenette: unknown command {argv[0]!r}; choose one of: {known}.", file=sys.stderr)
        raise SystemExit(2)
    # Abbreviated flags are refused (argparse would take --trainer.max_epoch for --trainer.max_epochs), and a
    # parse error is one line naming the flag instead of the full usage text.
    parser_kwargs = {"allow_abbrev": False, "exit_on_error": False}
    try:
        cli = ImagenetteCLI(
            ImagenetteClassifier,
            ImagenetteDataModule,
            args=None if args is None else argv,
            seed_everything_default=0,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={**parser_kwargs, **{command: parser_kwargs for command in LIGHTNING_COMMANDS}},
            auto_configure_optimizers=False,
        )
    except ArgumentError as e:
        message = " ".join(str(e).split())
        print(f"imagenette {argv[0]}: error: {message}\nSee `imagenette {argv[0]} --help`.", file=sys.stderr)
        raise SystemExit(2) from None
    _finish_wandb_runs(cli)
    return cli


def _finish_wandb_runs(cli: LightningCLI) -> None:
    """One command is one W&B run: close it so the next command in this process starts a new one."""
    trainer = getattr(cli, "trainer", None)
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


def main() -> int:
    """Console-script entry point: run the CLI, exit 0 on success."""
    cli_main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
