"""The records each revision of a canary release logged, on the same window, read from the inference log.

A revision's records are those of its model (the `model=<sha12>` partition and `model_sha256` column) and,
when a Cloud Run revision name is given, of its replicas only (`replica_id` is `<K_REVISION>-<instance>` on
Cloud Run, see `inference_log/replica.py`): so two revisions serving the same checkpoint (a configuration
change) are told apart too. Both revisions are cut to the same window: the last `window_s` seconds before the
newest record of either, or everything both logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from imagenette_drift.errors import UserError
from imagenette_drift.inference_log.reader import LogLocation, model_partition, partition_date, skip_reason
from imagenette_drift.inference_log.schema import PREDICTION_SCHEMA

log = logging.getLogger(__name__)
COLUMNS = ["request_id", "timestamp", "model_sha256", "replica_id", "predicted_wnid", "probs", "unfamiliar"]
SCHEMA = pa.schema([PREDICTION_SCHEMA.field(name) for name in COLUMNS])


@dataclass(frozen=True)
class RevisionSelector:
    """Which records belong to a revision: its model's sha256 and, optionally, its Cloud Run revision name."""

    name: str  # "stable" or "canary", for messages
    model_sha256: str
    revision: str | None = None

    def describe(self) -> str:
        where = f" on revision {self.revision}" if self.revision else ""
        return f"{self.name} (model {self.model_sha256[:12]}{where})"


@dataclass(frozen=True)
class WindowRecords:
    """Both revisions' records on the shared window [start, end] (UTC), and the unreadable files skipped."""

    stable: pa.Table
    canary: pa.Table
    start: dt.datetime | None
    end: dt.datetime | None
    skipped: dict[str, str]


def _read_model_files(
    location: LogLocation, selector: RevisionSelector, since: dt.date | None, skipped: dict[str, str]
) -> list[pa.Table]:
    tables = []
    for relative in sorted(location.list("predictions")):
        day = partition_date(relative)
        if model_partition(relative) != selector.model_sha256[:12] or (
            since is not None and day is not None and day < since
        ):
            continue
        reason = skip_reason(location, relative, "predictions")
        if reason is not None:
            skipped[relative] = reason
            continue
        try:
            tables.append(location.read_table(relative, columns=COLUMNS))
        except (OSError, pa.ArrowException) as e:
            skipped[relative] = f"{location.full(relative)}: not a readable Parquet file ({e})."
    return tables


def _select(tables: list[pa.Table], selector: RevisionSelector) -> pa.Table:
    table = (
        pa.concat_tables([t.select(COLUMNS).cast(SCHEMA) for t in tables]) if tables else SCHEMA.empty_table()
    )
    keep = pc.equal(table["model_sha256"], selector.model_sha256)
    if selector.revision:
        replica = table["replica_id"]
        mine = pc.or_(pc.equal(replica, selector.revision), pc.starts_with(replica, f"{selector.revision}-"))
        keep = pc.and_(keep, mine)
    return table.filter(keep)


def _newest_day(location: LogLocation, selectors: tuple[RevisionSelector, ...]) -> dt.date | None:
    models = {s.model_sha256[:12] for s in selectors}
    days = [partition_date(r) for r in location.list("predictions") if model_partition(r) in models]
    known = [d for d in days if d is not None]
    return max(known) if known else None


def read_window(
    log_url: str, stable: RevisionSelector, canary: RevisionSelector, window_s: float | None
) -> WindowRecords:
    """Both revisions' prediction records on the same window (see the module docstring).

    Args:
        log_url: The inference log's root (a folder or gs://bucket/prefix).
        stable, canary: Which records belong to each revision.
        window_s: Keep the last `window_s` seconds before the newest record of either revision; None keeps
            every record (only the date partitions that can hold the window are read).

    Raises:
        UserError: the two selectors cannot be told apart (same model, no revision names), or the log holds
            no record of either.
    """
    if stable.model_sha256 == canary.model_sha256 and (
        not stable.revision or not canary.revision or stable.revision == canary.revision
    ):
        raise UserError(
            f"stable and canary serve the same model ({stable.model_sha256[:12]}): pass --stable_revision "
            "and --canary_revision (their Cloud Run revision names) so their records can be told apart."
        )
    location = LogLocation(log_url)
    since = None
    if window_s is not None:
        newest = _newest_day(location, (stable, canary))
        if newest is not None:
            since = newest - dt.timedelta(days=math.ceil(window_s / 86400))
    skipped: dict[str, str] = {}
    tables = {}
    for selector in (stable, canary):
        tables[selector.name] = _select(_read_model_files(location, selector, since, skipped), selector)
    for reason in skipped.values():
        log.warning("skipping %s", reason)
    a, b = tables[stable.name], tables[canary.name]
    stamps = [t["timestamp"] for t in (a, b) if t.num_rows]
    if not stamps:
        raise UserError(
            f"{log_url} holds no prediction records of {stable.describe()} or {canary.describe()}: check --log, "
            "that the models are the ones served, and that the servers run with --log."
        )
    end = max(pc.max(s).as_py() for s in stamps)
    start = None if window_s is None else end - dt.timedelta(seconds=window_s)
    if start is None:
        start = min(pc.min(s).as_py() for s in stamps)
    else:
        since_start = pa.scalar(start, SCHEMA.field("timestamp").type)
        a, b = (t.filter(pc.greater_equal(t["timestamp"], since_start)) for t in (a, b))
    return WindowRecords(a, b, start, end, skipped)
