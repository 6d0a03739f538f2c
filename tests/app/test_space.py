"""The Space as uploaded (`scripts/stage_space.py`): the app and its contracts, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys
sys.path.insert(0, ".")
import api_client, backend, imagenette_drift.serve_contract as contract
print(json.dumps({
    "contract": contract.__file__,
    "same_model": backend.DriftState is contract.DriftStatus,
    "heavy": sorted(name for name in ("torch", "lightning", "litserve") if name in sys.modules),
}))
"""


def test_the_staged_space_parses_answers_with_the_contract_and_no_torch(tmp_path: Path) -> None:
    space = tmp_path / "space"
    subprocess.run([sys.executable, str(REPO / "scripts" / "stage_space.py"), str(space)], check=True)
    assert (space / "app.py").is_file() and (space / "requirements.txt").is_file()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=space, env=env, check=True, capture_output=True, text=True
    )
    report = json.loads(out.stdout)
    assert Path(report["contract"]) == space / "imagenette_drift" / "serve_contract.py"
    assert report["same_model"] is True and report["heavy"] == []
    for name in ("serve_contract.py", "monitor_contract.py"):
        assert (space / "imagenette_drift" / name).read_text() == (
            REPO / "src" / "imagenette_drift" / name
        ).read_text()
