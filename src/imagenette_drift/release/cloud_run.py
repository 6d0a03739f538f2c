"""The gcloud commands of a Cloud Run canary: deploy a tagged revision without traffic, give it a share, then
send all traffic to it (promote) or back to the stable revision (rollback).

Commands are built as argv lists (never through a shell) and run with `run_gcloud`; with `dry_run` the exact
command is printed instead, one line, shell-quoted. gcloud authenticates from its own environment (Workload
Identity, `gcloud auth`): no credential is ever part of a command.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from imagenette_drift.errors import UserError

CANARY_TAG = "canary"
DEFAULT_PERCENT = 10


class GcloudError(UserError, RuntimeError):
    """A gcloud command failed or gcloud is missing; the message names the command and its exit status."""


@dataclass(frozen=True)
class Service:
    """A Cloud Run service: its name, region and project (None: gcloud's configured project)."""

    name: str
    region: str
    project: str | None = None

    def flags(self) -> list[str]:
        return ["--region", self.region, *(["--project", self.project] if self.project else [])]


def deploy_canary(service: Service, image: str, model_uri: str, tag: str = CANARY_TAG) -> list[str]:
    """`gcloud run deploy`: a new revision serving `model_uri`, tagged `tag`, with no traffic yet.

    `--update-env-vars` changes MODEL_URI only; the revision keeps the service's other settings.
    """
    return [
        "gcloud", "run", "deploy", service.name, *service.flags(), "--image", image,
        "--update-env-vars", f"MODEL_URI={model_uri}", "--tag", tag, "--no-traffic",
    ]  # fmt: skip


def shift_traffic(service: Service, percent: int = DEFAULT_PERCENT, tag: str = CANARY_TAG) -> list[str]:
    """`gcloud run services update-traffic --to-tags canary=PERCENT`: the canary's share; the rest as is."""
    if not 0 < percent <= 100:
        raise ValueError(f"--percent must be in 1..100, got {percent}.")
    return [
        "gcloud", "run", "services", "update-traffic", service.name, *service.flags(),
        "--to-tags", f"{tag}={percent}",
    ]  # fmt: skip


def promote(service: Service) -> list[str]:
    """`--to-latest`: all traffic to the newest revision (the canary) and to every later deploy."""
    return ["gcloud", "run", "services", "update-traffic", service.name, *service.flags(), "--to-latest"]


def rollback(service: Service, stable_revision: str) -> list[str]:
    """`--to-revisions STABLE=100`: all traffic back to the stable revision (the canary keeps its tag, for
    inspection, and serves nothing)."""
    if not stable_revision:
        raise ValueError("rollback needs the stable revision's name (--stable_revision).")
    return [
        "gcloud", "run", "services", "update-traffic", service.name, *service.flags(),
        "--to-revisions", f"{stable_revision}=100",
    ]  # fmt: skip


def run_gcloud(
    commands: Sequence[list[str]], dry_run: bool, stream: TextIO | None = None, timeout: float = 900
) -> None:
    """Run each command in order (stop at the first failure), or with `dry_run` print each on `stream`.

    Raises `GcloudError` naming the command when gcloud is missing, fails or times out.
    """
    out = stream or sys.stdout
    for argv in commands:
        line = shlex.join(argv)
        if dry_run:
            print(line, file=out, flush=True)
            continue
        try:
            result = subprocess.run(argv, timeout=timeout, check=False)
        except FileNotFoundError:
            raise GcloudError(
                f"{argv[0]} is not installed: install the Google Cloud CLI, or set DRY_RUN=1 to print "
                "the commands instead."
            ) from None
        except subprocess.TimeoutExpired:
            raise GcloudError(f"`{line}` did not finish within {timeout:g} s.") from None
        if result.returncode != 0:
            raise GcloudError(
                f"`{line}` failed with exit status {result.returncode} (see gcloud's output above)."
            )
