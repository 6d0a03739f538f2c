"""`imagenette registry list|show|register|promote`: the model registry (a local folder or a gs:// prefix)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from imagenette_drift.commands._options import add_checkpoint_option
from imagenette_drift.registry.base import ANY, ModelVersion, Registry
from imagenette_drift.registry.opening import open_registry

REGISTRY_ENV_VAR = "IMAGENETTE_REGISTRY"
NO_CHAMPION = "none"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagenette registry",
        description="Register exported checkpoints by content hash, list and show them, and promote a champion "
        "(compare-and-swap: of two concurrent promotions exactly one wins). GCS credentials come from the "
        "environment (application default credentials), never from flags.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--registry",
        default=os.environ.get(REGISTRY_ENV_VAR),
        help=f"a folder or gs://BUCKET/PREFIX (default: ${REGISTRY_ENV_VAR})",
    )
    actions = parser.add_subparsers(
        dest="action", required=True, metavar="{list,show,register,promote,lineage}"
    )
    actions.add_parser("list", help="registered versions, oldest first; * marks the champion")
    show = actions.add_parser("show", help="one version's metadata as JSON")
    show.add_argument("version", help="a version (sha12) or `champion`")
    register = actions.add_parser("register", help="export a checkpoint and register it with its lineage")
    add_checkpoint_option(register, "a .ckpt written by `imagenette fit`", required=True, type=Path)
    register.add_argument("--config", type=Path, default=None, help="the run's resolved config.yaml")
    register.add_argument(
        "--repo", type=Path, default=Path("."), help="the git/DVC checkout it was trained from (default: .)"
    )
    promote = actions.add_parser("promote", help="make a version the champion")
    promote.add_argument("version", help="the version (sha12) to promote")
    promote.add_argument(
        "--expect-champion",
        default=None,
        metavar="VERSION",
        help=f"promote only if the champion is still this version (`{NO_CHAMPION}`: no champion yet), e.g. "
        "the one the gate compared against",
    )
    lineage = actions.add_parser(
        "lineage", help="the release log (lineage.jsonl): every canary step and decision with its reason"
    )
    lineage.add_argument("--version", default=None, help="only the events naming this version")
    return parser


def _lineage(registry: Registry, version: str | None) -> None:
    """Print the release log's events, oldest first, one JSON object a line."""
    from imagenette_drift.registry.lineage import read_events

    named = ("candidate", "canary_model", "stable_model", "champion", "previous_champion")
    for event in read_events(registry):
        if version is None or version in (event.get(key) for key in named):
            print(json.dumps(event, sort_keys=True))


def _row(version: ModelVersion, champion: str | None) -> str:
    metrics = version.metadata.get("metrics", {})
    acc = next((metrics[k] for k in ("test/acc", "val/acc") if k in metrics), None)
    acc_text = f"{acc:.2%}" if isinstance(acc, int | float) else "-"
    mark = "*" if version.version == champion else " "
    commit = (version.metadata.get("git_commit") or "-")[:12]
    return f"{mark} {version.version}  {version.metadata.get('registered_at', '-')}  {acc_text:>7}  {commit}"


def _list(registry: Registry) -> None:
    champion = registry.champion()
    versions = registry.list()
    if not versions:
        print(f"{registry.location}: no registered versions; `imagenette registry register` adds one.")
        return
    print("  version       registered_at               acc(test|val)  git")
    for version in versions:
        print(_row(version, champion and champion.version))


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.registry:
        parser.error(f"--registry is required (or set ${REGISTRY_ENV_VAR}): a folder or gs://BUCKET/PREFIX")
    registry = open_registry(args.registry)
    if args.action == "list":
        _list(registry)
    elif args.action == "lineage":
        _lineage(registry, args.version)
    elif args.action == "show":
        version = registry.show(args.version)
        champion = registry.champion()
        is_champion = champion is not None and champion.version == version.version
        print(json.dumps({"version": version.version, "champion": is_champion, **version.metadata}, indent=2))
    elif args.action == "register":
        version, new = registry.register(args.ckpt_path, args.config, args.repo)
        state = "registered" if new else "already registered"
        print(f"{state} {version.version} at {version.uri}")
    else:
        expected: str | object | None = ANY
        if args.expect_champion is not None:
            expected = None if args.expect_champion == NO_CHAMPION else args.expect_champion
        champion = registry.promote(args.version, expected)
        print(f"champion: {champion.version} (previous: {champion.previous or NO_CHAMPION})")
    sys.stdout.flush()
