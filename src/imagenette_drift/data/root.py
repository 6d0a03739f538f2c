"""Where the data set lives: `--data.root`, else `$IMAGENETTE_DATA`, else `data/imagenette2-160`."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = Path("data/imagenette2-160")
ROOT_ENV_VAR = "IMAGENETTE_DATA"


def resolve_root(root: str | Path | None) -> Path:
    """`root` if given, else `$IMAGENETTE_DATA`, else `data/imagenette2-160`."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ROOT_ENV_VAR) or DEFAULT_ROOT)
