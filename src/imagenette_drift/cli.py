"""The `imagenette` command: LightningCLI's fit/validate/test/predict plus the project's own subcommands.

This module stays light (no torch import) so `imagenette --help` answers at once; each subcommand imports
what it needs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from imagenette_drift.errors import UserError, one_line

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningCLI

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
    "serve": (
        "imagenette_drift.commands.serve:main",
        "Serve a checkpoint (path or gs:// URI) over REST with LitServe, with online drift monitoring.",
    ),
    "monitor": (
        "imagenette_drift.commands.monitor:main",
        "Monitor a fleet from its inference log: drift, label shift and accuracy per window, with alerts.",
    ),
    "export": (
        "imagenette_drift.commands.export:main",
        "Write a serving copy of a checkpoint (weights and model card, no optimizer state: about half the size).",
    ),
    "registry": (
        "imagenette_drift.commands.registry:main",
        "Register exported checkpoints (a folder or gs:// prefix), list them, promote a champion atomically.",
    ),
    "export-labelled": (
        "imagenette_drift.commands.export_labelled:main",
        "Write the logged images that have a /feedback label as an ImageFolder training set (train/<wnid>/).",
    ),
    "gate": (
        "imagenette_drift.commands.gate:main",
        "Compare a candidate with the champion on the same test set; exit 1 when the candidate is worse.",
    ),
    "canary": (
        "imagenette_drift.commands.canary:main",
        "Release a candidate as a Cloud Run canary; judge it against stable on production traffic, promote or roll back.",
    ),
    "report": (
        "imagenette_drift.commands.report:main",
        "Write report.md (metrics, learning curves, confusion matrix, drift, profiler) for CML.",
    ),
}


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
    """Entry point of `imagenette`; pass `args` to drive it in-process (tests).

    An expected user error (`imagenette_drift.errors.UserError`: missing data, a missing or foreign
    checkpoint, an empty folder, a failed download) prints one line on stderr and exits 2, without a
    traceback; any other exception is a bug and propagates.
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        return _run(argv, from_sys_argv=args is None)
    except UserError as e:
        print(f"imagenette {argv[0]}: error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(argv: list[str], from_sys_argv: bool) -> LightningCLI | None:
    """Dispatch to the help text, a project subcommand or LightningCLI."""
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
    from imagenette_drift.training_cli import run_lightning_cli

    return run_lightning_cli(argv, from_sys_argv=from_sys_argv)


def main() -> int:
    """Console-script entry point: run the CLI, exit 0 on success.

    A reader that stops early (`imagenette registry show ... | head`) closes the pipe: the command then exits
    1 quietly, as Python's documentation recommends for SIGPIPE, instead of ending in a BrokenPipeError.
    """
    try:
        cli_main()
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not at interpreter exit
    except BrokenPipeError:
        # Point stdout at devnull so the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
