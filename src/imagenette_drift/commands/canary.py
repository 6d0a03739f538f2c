"""`imagenette canary start|decide|promote|rollback`: a Cloud Run canary, judged on production traffic.

`start` deploys the candidate as a tagged revision with no traffic and gives it a share; `decide` compares
canary and stable on the same window of the inference log and their `/metrics`, then says promote, rollback
or hold (and with `--apply` does it); `promote`/`rollback` move the traffic. Every step is appended, with its
reason and the alert/training-run ids given, to the registry's release log (`lineage.jsonl`). With `DRY_RUN=1`
in the environment the gcloud commands are printed instead of run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagenette_drift.commands._options import CommandParser, build
from imagenette_drift.commands.registry import REGISTRY_ENV_VAR
from imagenette_drift.errors import UserError
from imagenette_drift.release import cloud_run

if TYPE_CHECKING:
    from imagenette_drift.release.canary import CanaryPolicy

DRY_RUN_ENV_VAR = "DRY_RUN"
EXIT = {"promote": 0, "rollback": 1, "hold": 3}


@dataclass(kw_only=True)
class Lineage:
    """What each step records in the registry's release log (lineage.jsonl).

    Args:
        registry: Registry (folder or gs:// prefix) whose lineage.jsonl records the step (default:
            $IMAGENETTE_REGISTRY).
        alert_id: The monitor alert that led here (recorded).
        training_run: The training run that made the candidate (recorded).
    """

    registry: str | None = None
    alert_id: str | None = None
    training_run: str | None = None


@dataclass(kw_only=True)
class Service(Lineage):
    """The Cloud Run service the step acts on.

    Args:
        service: The Cloud Run service name.
        region: Its region, e.g. europe-west1.
        project: Its project (default: gcloud's configured one).
    """

    service: str
    region: str
    project: str | None = None


@dataclass(kw_only=True)
class StartOptions(Service):
    """Options of `imagenette canary start`.

    Args:
        image: The serving image (Dockerfile.serve) to deploy.
        candidate: A version in --registry, or a gs:// model URI.
        percent: The canary's traffic share.
        stable_revision: The revision serving now (recorded for rollback).
    """

    image: str
    candidate: str
    percent: int = cloud_run.DEFAULT_PERCENT
    stable_revision: str | None = None


@dataclass(kw_only=True)
class DecideOptions(Service):
    """Options of `imagenette canary decide` (with CanaryPolicy's, the tolerances).

    Args:
        log: The inference log (folder or gs:// prefix) both revisions write.
        stable: The stable model: a .ckpt, a gs:// URI or a version in --registry (default: the registry's
            champion).
        canary: The canary model: a .ckpt, a gs:// URI or a version in --registry (default: the candidate of
            the canary in progress, from the lineage's last `canary.start` with no promote or rollback after
            it).
        stable_revision: The stable Cloud Run revision: keeps its replicas' records only (needed to roll back).
        canary_revision: The canary Cloud Run revision: keeps its replicas' records only.
        window: The last DURATION (e.g. 1h, 30m) before the newest record, or `all`.
        stable_metrics: The stable revision's /metrics (a URL or a file); repeat per instance.
        canary_metrics: The canary revision's /metrics (a URL or a file); repeat per instance.
        route: The route whose 5xx rate and latency are compared.
        output: Write the table (.md) or the decision (.json); repeat for both.
        apply: Run the promote or rollback it decides (needs --service, --region).
        cache_dir: Where gs:// models download.
    """

    service: str | None = None  # only --apply needs the service
    region: str | None = None
    log: str
    stable: str = "champion"
    canary: str | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    window: str = "1h"
    stable_metrics: list[str] = field(default_factory=list)
    canary_metrics: list[str] = field(default_factory=list)
    route: str = "/predict"
    output: list[Path] = field(default_factory=list)
    apply: bool = False
    cache_dir: Path = Path(".cache/imagenette/canary")


@dataclass(kw_only=True)
class PromoteOptions(Service):
    """Options of `imagenette canary promote`.

    Args:
        candidate: The version promoted: recorded, and made the registry's champion.
    """

    candidate: str | None = None


@dataclass(kw_only=True)
class RollbackOptions(Service):
    """Options of `imagenette canary rollback`.

    Args:
        stable_revision: The revision to send all traffic back to.
        candidate: The version rolled back (recorded).
    """

    stable_revision: str
    candidate: str | None = None


OPTIONS: dict[str, type[Lineage]] = {
    "start": StartOptions,
    "decide": DecideOptions,
    "promote": PromoteOptions,
    "rollback": RollbackOptions,
}


def build_parser() -> CommandParser:
    from imagenette_drift.release.canary import CanaryPolicy

    parser = CommandParser(
        "imagenette canary",
        "Release a candidate as a Cloud Run canary (a tagged revision with a traffic share), judge it against "
        "the stable revision on the same window of production traffic, and promote or roll it back. Each step "
        "is recorded with its reason in the registry's lineage.jsonl. DRY_RUN=1 prints the gcloud commands "
        "instead of running them; gcloud's own credentials are used, never a flag.",
    )
    actions = parser.add_subcommands(dest="action")
    helps = {
        "start": "deploy the candidate tagged `canary` with no traffic, then give it --percent",
        "decide": "compare canary and stable on the same window; exit 0 promote, 1 rollback, 3 hold",
        "promote": "send all traffic to the newest revision (the canary); a registered --candidate becomes the "
        "champion",
        "rollback": "send all traffic back to the stable revision",
    }
    for name, options in OPTIONS.items():
        subparser = CommandParser(name, None, options)
        if name == "decide":
            subparser.add_options(CanaryPolicy)
        actions.add_subcommand(name, subparser, help=helps[name])
    return parser


def _registry(args: Lineage, parser: CommandParser) -> Any:
    from imagenette_drift.registry.opening import open_registry

    args.registry = args.registry or os.environ.get(REGISTRY_ENV_VAR)
    if not args.registry:
        parser.error(
            f"--registry is required (or set ${REGISTRY_ENV_VAR}): its lineage.jsonl records every "
            "canary step"
        )
    return open_registry(args.registry)


def _record(registry: Any, event: dict[str, Any], args: Any) -> None:
    from imagenette_drift.registry.lineage import append_event

    ids = {"alert_id": args.alert_id, "training_run": args.training_run}
    append_event(registry, {**event, **{k: v for k, v in ids.items() if v is not None}})


def _model(value: str, flag: str, registry: Any, cache_dir: Path) -> tuple[Any, str, str | None]:
    """(model card, sha256, registry version or None) of a .ckpt path, a gs:// URI, or a registry version
    (`champion` included); only the card is read, no network is built."""
    from imagenette_drift.card import CHECKPOINT_KEY, ModelCard
    from imagenette_drift.checkpoint import file_sha256, read_checkpoint

    version = None
    if value.startswith("gs://"):
        from imagenette_drift.storage.checkpoint import resolve_checkpoint

        try:
            path = resolve_checkpoint(value, cache_dir).path
        except UserError as e:
            raise type(e)(f"{flag}: {e}") from e
    elif Path(value).is_file():
        path = Path(value)
    else:
        version = registry.show(value).version
        path = registry.fetch(version, cache_dir)
    card = ModelCard.from_dict(read_checkpoint(path)[CHECKPOINT_KEY])
    return card, file_sha256(path), version


def _service(args: Any) -> cloud_run.Service:
    return cloud_run.Service(args.service, args.region, args.project)


def _canary_in_progress(registry: Any, service: str | None, dry_run: bool) -> dict[str, Any] | None:
    """The lineage's last successful `canary.start` (of `service`, when given) with no promote or rollback
    after it, or None. Steps rehearsed with `DRY_RUN=1` moved no traffic: a real run passes over them, a
    rehearsal (`dry_run`) follows them too."""
    from imagenette_drift.registry.lineage import read_events

    current = None
    for event in read_events(registry):
        if (service and event.get("service") != service) or "error" in event:
            continue
        if event.get("dry_run") and not dry_run:
            continue
        if event.get("event") == "canary.start":
            current = event
        elif event.get("event") in ("canary.promote", "canary.rollback"):
            current = None
    return current


def _decide(
    args: DecideOptions, policy: CanaryPolicy, parser: CommandParser, registry: Any, dry_run: bool
) -> int:
    from imagenette_drift.estimation.reference import shared_method
    from imagenette_drift.io import write_text_atomic
    from imagenette_drift.monitoring.windows import parse_duration
    from imagenette_drift.release.canary import decide, format_table, revision_stats
    from imagenette_drift.release.canary_log import RevisionSelector, read_window
    from imagenette_drift.release.serving_metrics import read_metrics

    if args.canary is None:
        started = _canary_in_progress(registry, args.service, dry_run)
        if started is None:
            parser.error(f"no canary in progress in {registry.location}/lineage.jsonl: pass --canary")
        args.canary = started["candidate"]
        args.stable_revision = args.stable_revision or started.get("stable_revision")
    if args.apply and not (args.service and args.region and args.stable_revision):
        parser.error("--apply needs --service, --region and --stable_revision (the rollback target)")
    if bool(args.stable_metrics) != bool(args.canary_metrics):
        parser.error(
            "pass both --stable_metrics and --canary_metrics, or neither: 5xx and latency are compared"
        )
    try:
        window_s = None if args.window == "all" else parse_duration(args.window, "--window")
    except ValueError as e:
        parser.error(str(e))
    stable_card, stable_sha, stable_version = _model(args.stable, "--stable", registry, args.cache_dir)
    canary_card, canary_sha, canary_version = _model(args.canary, "--canary", registry, args.cache_dir)
    if stable_card.wnids != canary_card.wnids:
        raise UserError("--stable and --canary predict different classes (their cards' wnids differ).")
    selectors = (
        RevisionSelector("stable", stable_sha, args.stable_revision),
        RevisionSelector("canary", canary_sha, args.canary_revision),
    )
    records = read_window(args.log, *selectors, window_s)
    for name, reason in records.skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    serving = [read_metrics(s, args.route) if s else None for s in (args.stable_metrics, args.canary_metrics)]
    method = shared_method(stable_card.estimation, canary_card.estimation)
    stats = [
        revision_stats(sel.name, table, card, sel.model_sha256, sel.revision, metrics, method)
        for sel, table, card, metrics in zip(
            selectors, (records.stable, records.canary), (stable_card, canary_card), serving, strict=True
        )
    ]
    decision = decide(*stats, policy, (records.start, records.end))
    table = format_table(decision)
    print(table)
    for path in args.output:
        text = json.dumps(decision.to_dict(), indent=2) + "\n" if path.suffix == ".json" else table
        write_text_atomic(path, text)
    event: dict[str, Any] = {
        "event": "canary.decide", "stable_model": stable_version or args.stable,
        "canary_model": canary_version or args.canary, "log": args.log,
        **decision.to_dict(),
    }  # fmt: skip
    _record(registry, event, args)
    if args.apply and decision.action != "hold":
        _apply(decision.action, args, registry, canary_version or args.canary, dry_run, stable_version)
    sys.stdout.flush()
    if decision.action != "promote":
        print(f"imagenette canary: {decision.action}: {decision.reason}", file=sys.stderr)
    return EXIT[decision.action]


def _run_and_record(
    commands: list[list[str]], event: dict[str, Any], args: Any, registry: Any, dry_run: bool,
    after: Callable[[], dict[str, Any]] | None = None,
) -> None:  # fmt: skip
    """Run (or print) the gcloud commands, then `after` (its fields join the event), then record the step;
    a failed command is recorded with its error."""
    event = {**event, "commands": commands, "dry_run": dry_run}
    try:
        cloud_run.run_gcloud(commands, dry_run)
    except cloud_run.GcloudError as e:
        _record(registry, {**event, "error": str(e)}, args)
        raise
    _record(registry, {**event, **(after() if after else {})}, args)


def _move_champion(
    registry: Any, candidate: str | None, expected: str | None, dry_run: bool
) -> dict[str, Any]:
    """Make the promoted canary the registry's champion (compare-and-swap against `expected`, the stable
    version, when known); nothing when the candidate is not a registered version, or in a dry run."""
    from imagenette_drift.registry.base import ANY, RegistryError

    if candidate is None or dry_run:
        return {"champion_moved": False}
    try:
        version = registry.show(candidate).version
    except RegistryError:
        return {"champion_moved": False}  # a path or gs:// URI: not a registered version
    champion = registry.promote(version, ANY if expected is None else expected)
    return {"champion_moved": True, "champion": champion.version, "previous_champion": champion.previous}


def _apply(
    action: str, args: Any, registry: Any, candidate: str | None, dry_run: bool,
    expected_champion: str | None = None,
) -> None:  # fmt: skip
    """Move the traffic: all to the canary (and make it the registry's champion), or all back to stable."""
    service = _service(args)
    if action == "promote":
        command = cloud_run.promote(service)
        after = lambda: _move_champion(registry, candidate, expected_champion, dry_run)  # noqa: E731
    else:
        command = cloud_run.rollback(service, args.stable_revision)
        after = None
    event = {
        "event": f"canary.{action}",
        "service": args.service,
        "candidate": candidate,
        "stable_revision": getattr(args, "stable_revision", None),
    }
    _run_and_record([command], event, args, registry, dry_run, after)


def _start(args: Any, registry: Any, dry_run: bool) -> None:
    if args.candidate.startswith("gs://"):
        model_uri, candidate = args.candidate, args.candidate
    else:
        version = registry.show(args.candidate)
        model_uri, candidate = version.uri, version.version
        if not model_uri.startswith("gs://"):
            raise UserError(
                f"candidate {candidate} lives at {model_uri}, which Cloud Run cannot read: register it in a "
                "gs:// registry, or pass its gs:// model URI as --candidate."
            )
    service = _service(args)
    try:
        commands = [
            cloud_run.deploy_canary(service, args.image, model_uri),
            cloud_run.shift_traffic(service, args.percent),
        ]
    except ValueError as e:
        raise UserError(str(e)) from e
    event = {
        "event": "canary.start",
        "service": args.service,
        "candidate": candidate,
        "model_uri": model_uri,
        "image": args.image,
        "percent": args.percent,
        "stable_revision": args.stable_revision,
    }
    _run_and_record(commands, event, args, registry, dry_run)


def main(argv: Sequence[str] | None = None) -> None:
    from imagenette_drift.release.canary import CanaryPolicy

    parser = build_parser()
    parsed = parser.parse_args(argv)
    args = build(OPTIONS[parsed.action], parsed[parsed.action])
    dry_run = os.environ.get(DRY_RUN_ENV_VAR, "0").strip().lower() in ("1", "true", "yes")
    if isinstance(args, DecideOptions):
        try:
            policy = build(CanaryPolicy, parsed.decide)
        except ValueError as e:
            parser.error(str(e))
        registry = _registry(args, parser)
        code = _decide(args, policy, parser, registry, dry_run)
        if code:
            raise SystemExit(code)
        return
    registry = _registry(args, parser)
    if isinstance(args, StartOptions):
        _start(args, registry, dry_run)
    else:
        _apply(parsed.action, args, registry, args.candidate, dry_run)
    sys.stdout.flush()
