"""Where models came from and what was decided about them: a version's metadata (metrics, git commit, DVC data
version, config) and the registry's release log (`lineage.jsonl`: gate, canary and promotion decisions)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

from imagenette_drift.card import CHECKPOINT_KEY, ModelCard
from imagenette_drift.checkpoint import read_checkpoint
from imagenette_drift.errors import UserError

DATA_PATH = "data/imagenette2-160"


def build_metadata(
    exported: Path, sha256: str, source: Path, config: Path | None, repo: Path
) -> dict[str, Any]:
    """metadata.json of a new version: card metrics and identity, lineage (git, DVC data), resolved config."""
    card = ModelCard.from_dict(read_checkpoint(exported)[CHECKPOINT_KEY])
    return {
        "sha256": sha256,
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(source),
        "model_name": card.model_name,
        "num_classes": card.num_classes,
        "image_size": card.image_size,
        "metrics": dict(sorted(card.metrics.items())),
        "git_commit": git_commit(repo),
        "data_version": data_version(repo),
        "config": read_config(config),
    }


def git_commit(repo: Path) -> str | None:
    """HEAD's commit of the git repository at `repo` (suffixed `-dirty` with uncommitted changes), or None."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def data_version(repo: Path) -> str | None:
    """The DVC md5 of the data set: from `dvc.lock` (the pipeline's input) else `data/imagenette2-160.dvc`."""
    lock = repo / "dvc.lock"
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for dep in stage.get("deps", []):
                if str(dep.get("path", "")).rstrip("/") == DATA_PATH and dep.get("md5"):
                    return str(dep["md5"])
    tracked = repo / f"{DATA_PATH}.dvc"
    if tracked.is_file():
        outs = (yaml.safe_load(tracked.read_text()) or {}).get("outs", [])
        if outs and outs[0].get("md5"):
            return str(outs[0]["md5"])
    return None


def read_config(config: Path | None) -> dict[str, Any] | None:
    """The resolved config (e.g. the `config.yaml` LightningCLI saves beside a run) as a dict, or None."""
    if config is None:
        return None
    try:
        loaded = yaml.safe_load(Path(config).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--config {config} cannot be read as YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise UserError(f"--config {config} holds no mapping; pass the run's resolved config.yaml.")
    return loaded


# -- the release log: every gate, canary and promotion decision, with its reason -------------------------------
LINEAGE_NAME = "lineage.jsonl"


class ReleaseLogStore(Protocol):
    """Where the release log lives: a `Registry` (its `append` and `read_object`)."""

    location: str

    def append(self, name: str, data: bytes) -> None: ...

    def read_object(self, name: str) -> bytes | None: ...


def append_event(registry: ReleaseLogStore, event: dict[str, Any]) -> dict[str, Any]:
    """Append `event` (plain JSON data) to `<registry>/lineage.jsonl` with an `at` time stamp; return it.

    One JSON object a line, appended by the registry's compare-and-swap (a lock locally, `if_generation_match`
    on GCS), so concurrent appends never lose a line. Put ids (alert, training run, versions) and the reason
    in `event`; never a credential.
    """
    record = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    registry.append(LINEAGE_NAME, (json.dumps(record, sort_keys=True, default=str) + "\n").encode())
    return record


def read_events(registry: ReleaseLogStore) -> list[dict[str, Any]]:
    """Every event of `<registry>/lineage.jsonl`, oldest first (empty before the first)."""
    data = registry.read_object(LINEAGE_NAME)
    return [] if data is None else [json.loads(line) for line in data.decode().splitlines() if line.strip()]
