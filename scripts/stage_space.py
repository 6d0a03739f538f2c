"""Stage the Hugging Face Space: the `app/` folder plus the contracts it parses answers with.

Usage: python scripts/stage_space.py DEST   (then `hf upload SPACE DEST . --repo-type=space`)

The Space runs `app.py` without installing imagenette-drift (no torch), so the one module the app imports
from it, the contracts `imagenette_drift/serve_contract.py` and `monitor_contract.py` (pydantic only), are
copied beside the app as a package of those two modules.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = tuple(
    REPO / "src" / "imagenette_drift" / name for name in ("serve_contract.py", "monitor_contract.py")
)
SPACE_PACKAGE_INIT = '"""The contracts of imagenette-drift, shipped beside the Space\'s app."""\n'


def stage(dest: Path) -> Path:
    """Copy `app/` (without caches) to `dest` and add the `imagenette_drift` contracts; `dest` must not exist."""
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; pass a new folder (it is created).")
    shutil.copytree(REPO / "app", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    package = dest / "imagenette_drift"
    package.mkdir()
    (package / "__init__.py").write_text(SPACE_PACKAGE_INIT)
    for contract in CONTRACTS:
        shutil.copy2(contract, package / contract.name)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="a new folder to stage the Space in")
    print(stage(parser.parse_args(argv).dest))


if __name__ == "__main__":
    main()
