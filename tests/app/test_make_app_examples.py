"""`scripts/make_app_examples.py` reproduces the committed examples from the shipped sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.app.conftest import APP_DIR, REPO, SUBPROCESS_ENV


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_script_rewrites_the_committed_examples(tmp_path: Path) -> None:
    script = REPO / "scripts" / "make_app_examples.py"
    out = subprocess.run(
        [sys.executable, str(script), "--dest", str(tmp_path)],
        cwd=REPO,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("wrote 12 examples (") and out.stdout.endswith(f"to {tmp_path}\n")
    committed = sorted(p.name for p in (APP_DIR / "examples").glob("*.jpg"))
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == committed
    for name in committed:
        new, old = tmp_path / name, APP_DIR / "examples" / name
        if "-" not in name:  # clean images are the sample's own bytes
            assert new.read_bytes() == old.read_bytes()
        else:  # corrupted ones are re-encoded: equal up to JPEG encoder differences
            assert pixels(new).shape == pixels(old).shape
            assert np.abs(pixels(new) - pixels(old)).mean() < 2.0
            assert (
                np.abs(pixels(new) - pixels(APP_DIR / "examples" / f"{name.split('-')[0]}.jpg")).mean() > 5.0
            )
