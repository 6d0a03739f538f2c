"""`make loop-demo` (scripts/loop_demo.py) end to end: real processes, real decisions, the files they leave."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # trains two models and runs two servers: about 3 minutes on 2 cores

STEPS = ("train A", "register A", "serve A", "traffic", "monitor", "alert", "export-labelled", "retrain B",
         "register B", "gate", "release")  # fmt: skip


def test_the_loop_runs_end_to_end_and_prints_each_decision(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "loop_demo.py"), "--workdir", str(work)],
        capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    for step in STEPS:
        assert re.search(rf"^\[ *[\d.]+ s\] {step} ", out, re.MULTILINE), f"no `{step}` line:\n{out}"
    decisions = json.loads((work / "decisions.json").read_text())

    # Feedback: labels with the token accepted, one without it refused.
    assert decisions["traffic"] == {"answered": 80, "labelled": 80, "unauthenticated_feedback_status": 401}
    # The alert went out as GitHub's repository_dispatch, with the token, to the local recorder.
    (event, *_) = [json.loads(line) for line in (work / "dispatches.jsonl").read_text().splitlines()]
    assert event["path"] == "/repos/demo/imagenette-drift/dispatches" and event["event_type"] == "retrain"
    assert event["authorized"] is True and event["client_payload"]["log"] == str(work / "log")
    assert "alert            RAISED on window" in out

    # B's training set: the 80 labelled logged images beside the sample's 80.
    assert decisions["export"]["exported"] == 80 and decisions["export"]["skipped_imageless"] == 0
    exported = {p.stem.removeprefix("log-") for p in (work / "data-b" / "train").rglob("log-*")}
    assert len(exported) == 80

    # The gate's production window: the 40 records A served after the export, none of them in B's training set.
    gate = json.loads((work / "gate.json").read_text())
    production = gate["production"]
    assert production["n_records"] == production["n_images"] == 40 and production["compared"] is True
    assert "; 0 record(s) the candidate trained on left out" in production["description"]
    version_a, version_b = decisions["model_a"]["version"], decisions["model_b"]["version"]
    records = ds.dataset(work / "log" / "predictions", partitioning=None).to_table()
    served_a = records.filter(pc.starts_with(records["model_sha256"], version_a)).sort_by("timestamp")
    window = set(served_a["request_id"].to_pylist()[-40:])
    assert not window & exported
    assert production["champion"]["sha256"].startswith(version_a)
    assert production["candidate"]["sha256"].startswith(version_b)

    # The decision is the gate's own, and the release follows it.
    passed = decisions["gate"]["exit_code"] == 0
    assert gate["passed"] is passed and decisions["gate"]["passed"] is passed
    assert (work / "gate.md").read_text().strip() in out
    assert f"gate             {'PASS' if passed else 'REFUSED'}: candidate top-1" in out
    release = decisions["release"]
    assert release["promoted"] is passed
    if passed:  # the server restarted on B, which logged its own answers
        assert release == {"serving": version_b, "promoted": True, "info_names_b": True}
        assert records.filter(pc.starts_with(records["model_sha256"], version_b)).num_rows == 5
        champion = json.loads((work / "registry" / "champion").read_text())
        assert champion["version"] == version_b and champion["previous"] == version_a
    else:
        assert release == {"serving": version_a, "promoted": False}
    assert f"\nloop finished in {decisions['wall_s']:.0f} s:" in out
    # Tokens travel in headers and the environment only: no log or output file holds a bearer header.
    for path in work.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".jsonl", ".md"):
            assert "Bearer " not in path.read_text(errors="replace"), path
