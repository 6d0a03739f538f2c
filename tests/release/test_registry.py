"""`imagenette registry` on a local folder and on GCS (the real client against gcp-storage-emulator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from imagenette_drift.cli import cli_main
from imagenette_drift.hashing import file_sha256
from imagenette_drift.registry import PromotionConflict, open_registry
from tests.conftest import CONFIGS, REPO
from tests.release.conftest import BUCKET


@pytest.fixture(params=["local", "gcs"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    request.getfixturevalue("use_emulator")
    return f"gs://{BUCKET}/models-{uuid.uuid4().hex[:8]}"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    cli_main(["registry", *args])
    return capsys.readouterr().out


@pytest.mark.slow  # real checkpoints (trained in the session)
def test_register_list_show_with_lineage(
    location: str, trained_checkpoint: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = _cli(
        capsys, "--registry", location, "register", "--ckpt_path", str(trained_checkpoint),
        "--config", str(CONFIGS / "quickstart.yaml"), "--repo", str(REPO),
    )  # fmt: skip
    version = out.split()[1]
    assert out.startswith(f"registered {version} at {location}/{version}/model.ckpt")
    shown = json.loads(_cli(capsys, "--registry", location, "show", version))
    assert shown["version"] == version and shown["champion"] is False
    assert shown["sha256"].startswith(version) and len(shown["sha256"]) == 64
    assert shown["metrics"]["val/acc"] >= 0 and shown["model_name"] == "resnet18"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert shown["git_commit"].removesuffix("-dirty") == head.stdout.strip()
    assert shown["data_version"] == "b9f907a494fe271a80d3d6406cf60101.dir"  # data/imagenette2-160.dvc
    assert shown["config"]["model"]["model_name"] == "resnet18"
    registry = open_registry(location)
    fetched = registry.fetch(version, tmp_path / "cache")
    assert file_sha256(fetched) == shown["sha256"]  # the stored copy is the exported one, intact
    again = _cli(capsys, "--registry", location, "register", "--ckpt_path", str(trained_checkpoint))
    assert again.startswith(f"already registered {version}")
    listed = _cli(capsys, "--registry", location, "list")
    assert listed.count(version) == 1 and f"* {version}" not in listed
    _cli(capsys, "--registry", location, "promote", version)
    assert f"* {version}" in _cli(capsys, "--registry", location, "list")
    assert json.loads(_cli(capsys, "--registry", location, "show", "champion"))["version"] == version


def test_unknown_versions_and_bad_input_are_one_line_errors(
    location: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for args, message in [
        (["show", "0123456789ab"], "version '0123456789ab' is not registered"),
        (["show", "champion"], "has no champion yet"),
        (["promote", "not-a-version"], "'not-a-version' is not a version"),
        (["register", "--ckpt_path", str(tmp_path / "absent.ckpt")], "absent.ckpt does not exist"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["registry", "--registry", location, *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


def _two_versions(location: str, first: Path, second: Path) -> tuple[str, str]:
    registry = open_registry(location)
    return registry.register(first)[0].version, registry.register(second)[0].version


@pytest.mark.slow  # real checkpoints (trained in the session)
def test_two_concurrent_promoters_exactly_one_wins(
    location: str, trained_checkpoint: Path, worse_checkpoint: Path
) -> None:
    """Two `imagenette registry promote` processes, both gated against "no champion": one wins, one is told."""
    a, b = _two_versions(location, trained_checkpoint, worse_checkpoint)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "imagenette_drift", "registry", "--registry", location, "promote"]
    processes = {
        v: subprocess.Popen(
            [*command, v, "--expect_champion", "none"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for v in (a, b)
    }  # fmt: skip
    results = {v: (p.wait(timeout=120), *p.communicate()) for v, p in processes.items()}
    winners = [v for v, (code, _, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (loser,) = {a, b} - set(winners)
    code, out, err = results[loser]
    assert code == 2 and out == "" and err.count("\n") == 1, results
    assert f"cannot promote {loser}" in err or "another promotion won the race" in err, err
    assert open_registry(location).champion().version == winners[0]


@pytest.mark.slow  # real checkpoints (trained in the session)
def test_many_threads_racing_the_pointer_leave_one_champion(
    location: str, trained_checkpoint: Path, worse_checkpoint: Path
) -> None:
    """Threads that all read the pointer, then all swap at once: the generation check lets exactly one in."""
    a, b = _two_versions(location, trained_checkpoint, worse_checkpoint)
    registry = open_registry(location)
    registry.promote(a)
    start, outcomes = threading.Barrier(6), []

    def promote(version: str) -> None:
        mine = open_registry(location)
        start.wait()
        try:
            outcomes.append(("won", mine.promote(version, expected_champion=a).version))
        except PromotionConflict as e:
            outcomes.append(("lost", str(e)))

    threads = [threading.Thread(target=promote, args=(b,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(kind for kind, _ in outcomes) == ["lost"] * 5 + ["won"], outcomes
    champion = registry.champion()
    assert champion.version == b and champion.previous == a
    assert {v.version for v in registry.list()} == {a, b}


def test_the_emulator_refuses_a_stale_generation_as_gcs_does(use_emulator) -> None:
    """The harness's precondition check itself: a stale or not-absent generation is 412, a fresh one passes."""
    from google.api_core.exceptions import PreconditionFailed

    blob = use_emulator.client().bucket(BUCKET).blob(f"pointer-{uuid.uuid4().hex[:8]}")
    blob.upload_from_string(b"one", if_generation_match=0)
    first = int(blob.generation)
    with pytest.raises(PreconditionFailed):
        blob.upload_from_string(b"two", if_generation_match=0)
    blob.upload_from_string(b"two", if_generation_match=first)
    with pytest.raises(PreconditionFailed):
        blob.upload_from_string(b"three", if_generation_match=first)
    assert blob.download_as_bytes() == b"two"
