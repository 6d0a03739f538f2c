"""One spelling per concept across `imagenette` commands, with the old spellings kept as deprecated aliases.

The Lightning commands (`fit`, `test`, `predict`, ...) name the checkpoint `--ckpt_path` and the data
`--data.root` / `--data.predict_dir` / `--data.corruption`; the project's own commands use the same names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

# Old spelling -> new spelling, for the deprecation message and the tests.
RENAMED = {
    "--checkpoint": "--ckpt_path",
    "--data": "--data.predict_dir",
    "--corruption": "--data.corruption",
    "--severity": "--data.severity",
}


class AliasedStore(argparse.Action):
    """`store` for an option with deprecated spellings: using one prints a one-line deprecation to stderr.

    Use as `parser.add_argument("--ckpt_path", "--checkpoint", action=AliasedStore, ...)`: the first option
    string is the current spelling, any spelling listed in `RENAMED` is an alias of it.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if option_string in RENAMED:
            print(
                f"{parser.prog}: {option_string} is deprecated and will be removed; use {RENAMED[option_string]} "
                "(the spelling every imagenette command uses).",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def add_checkpoint_option(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """`--ckpt_path` (deprecated alias `--checkpoint`), stored as `args.ckpt_path`."""
    parser.add_argument(
        "--ckpt_path",
        "--checkpoint",
        dest="ckpt_path",
        action=AliasedStore,
        metavar="CKPT",
        help=f"{help} (--checkpoint: deprecated spelling)",
        **kwargs,
    )
