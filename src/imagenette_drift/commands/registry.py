"""`imagenette registry list|show|register|promote`: the model registry (a local folder or a gs:// prefix)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagenette_drift.commands._options import CommandParser, build
from imagenette_drift.registry.base import ANY, ModelVersion, Registry
from imagenette_drift.registry.opening import open_registry

REGISTRY_ENV_VAR = "IMAGENETTE_REGISTRY"
NO_CHAMPION = "none"


@dataclass
class RegistryOptions:
    """Options of `imagenette registry`, before the action.

    Args:
        registry: A folder or gs://BUCKET/PREFIX (default: $IMAGENETTE_REGISTRY).
    """

    registry: str | None = None


@dataclass
class RegisterOptions:
    """Options of `imagenette registry register`.

    Args:
        ckpt_path: A .ckpt written by `imagenette fit`.
        config: The run's resolved config.yaml.
        repo: The git/DVC checkout it was trained from.
    """

    ckpt_path: Path
    config: Path | None = None
    repo: Path = Path(".")


@dataclass
class PromoteOptions:
    """Options of `imagenette registry promote`.

    Args:
        expect_champion: Promote only if the champion is still this version (`none`: no champion yet), e.g.
            the one the gate compared against.
    """

    expect_champion: str | None = None


@dataclass
class LineageOptions:
    """Options of `imagenette registry lineage`.

    Args:
        version: Only the events naming this version.
    """

    version: str | None = None


def build_parser() -> CommandParser:
    parser = CommandParser(
        "imagenette registry",
        "Register exported checkpoints by content hash, list and show them, and promote a champion "
        "(compare-and-swap: of two concurrent promotions exactly one wins). GCS credentials come from the "
        "environment (application default credentials), never from flags.",
        RegistryOptions,
    )
    actions = parser.add_subcommands(dest="action")
    actions.add_subcommand(
        "list", CommandParser("list"), help="registered versions, oldest first; * marks the champion"
    )
    show = CommandParser("show")
    show.add_argument("version", help="a version (sha12) or `champion`")
    actions.add_subcommand("show", show, help="one version's metadata as JSON")
    register = CommandParser("register", None, RegisterOptions)
    actions.add_subcommand("register", register, help="export a checkpoint and register it with its lineage")
    promote = CommandParser("promote", None, PromoteOptions)
    promote.add_argument("version", help="the version (sha12) to promote")
    actions.add_subcommand("promote", promote, help="make a version the champion")
    lineage = CommandParser("lineage", None, LineageOptions)
    actions.add_subcommand(
        "lineage",
        lineage,
        help="the release log (lineage.jsonl): every canary step and decision with its reason",
    )
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
    location = args.registry or os.environ.get(REGISTRY_ENV_VAR)
    if not location:
        parser.error(f"--registry is required (or set ${REGISTRY_ENV_VAR}): a folder or gs://BUCKET/PREFIX")
    registry = open_registry(location)
    action = args[args.action]
    if args.action == "list":
        _list(registry)
    elif args.action == "lineage":
        _lineage(registry, build(LineageOptions, action).version)
    elif args.action == "show":
        version = registry.show(action.version)
        champion = registry.champion()
        is_champion = champion is not None and champion.version == version.version
        print(json.dumps({"version": version.version, "champion": is_champion, **version.metadata}, indent=2))
    elif args.action == "register":
        options = build(RegisterOptions, action)
        version, new = registry.register(options.ckpt_path, options.config, options.repo)
        state = "registered" if new else "already registered"
        print(f"{state} {version.version} at {version.uri}")
    else:
        expected: str | object | None = ANY
        expect_champion = build(PromoteOptions, action).expect_champion
        if expect_champion is not None:
            expected = None if expect_champion == NO_CHAMPION else expect_champion
        champion = registry.promote(action.version, expected)
        print(f"champion: {champion.version} (previous: {champion.previous or NO_CHAMPION})")
    sys.stdout.flush()
