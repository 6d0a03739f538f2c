"""Two engines over the same files: DuckDB (embedded, the default) and Ray Data (a laptop or a cluster).

An engine only reads and groups: it reads the key columns, lets `windows.assign_windows` number the windows
(the same rule for both), then hands each closed window's records, with their labels joined on request_id,
to `stats.window_statistics`. So both give the same window table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imagenette_drift.monitoring.stats import LABEL_COLUMN, WINDOW_COLUMNS, WindowContext, window_statistics
from imagenette_drift.monitoring.windows import (
    CLOSED,
    LATE,
    PENDING,
    WindowCursor,
    WindowSpec,
    advance,
    assign_windows,
    unique_ids,
)

log = logging.getLogger(__name__)
Engine = Literal["duckdb", "ray"]
KEY_COLUMNS = ["request_id", "timestamp", "predicted_wnid"]


@dataclass
class EngineInput:
    """One run's work: the files to read, the labels, the window rule and where the last run stopped.

    Attributes:
        files: Parquet files to read (full local paths or gs:// URLs): new log files and the pending file.
        labels: ``request_id``, ``label_wnid`` of every label posted so far, one row per request_id.
        filesystem: fsspec filesystem of `files` (None: local disk).
    """

    files: list[str]
    labels: pa.Table
    spec: WindowSpec
    cursor: WindowCursor
    context: WindowContext
    lateness_s: float = 0.0
    flush: bool = False
    filesystem: Any = None
    threads: int = 1


@dataclass
class EngineOutput:
    """Closed windows' rows, the records left pending, what closed windows hold, and the new cursor."""

    rows: list[dict[str, Any]]
    pending: pa.Table
    assignments: pa.Table  # request_id, window, predicted_wnid of every record of a closed window
    n_late: int
    cursor: WindowCursor


def run_engine(engine: Engine, job: EngineInput, ray_address: str | None = None) -> EngineOutput:
    """Run `job` on DuckDB or Ray Data."""
    if engine == "duckdb":
        return _run_duckdb(job)
    if engine == "ray":
        return _run_ray(job, ray_address)
    raise ValueError(f"--engine must be duckdb or ray, got {engine!r}.")


def _finish(
    job: EngineInput,
    rows: list[dict[str, Any]],
    keys: pa.Table,
    assigned: pa.Table,
    bounds: dict[int, tuple[int, int]],
    pending: pa.Table,
) -> EngineOutput:
    """Common tail of both engines: time windows take their interval as bounds; rows sorted by window."""
    import datetime as dt

    for row in rows:
        if row["window"] in bounds:
            start, end = bounds[row["window"]]
            row["window_start"] = dt.datetime.fromtimestamp(start / 1e6, dt.UTC)
            row["window_end"] = dt.datetime.fromtimestamp(end / 1e6, dt.UTC)
    rows.sort(key=lambda r: r["window"])
    status = assigned["status"].to_numpy()
    closed = status == CLOSED
    assignments = pa.table(
        {
            "request_id": keys["request_id"].filter(pa.array(closed)),
            "window": assigned["window"].filter(pa.array(closed)),
            "predicted_wnid": keys["predicted_wnid"].filter(pa.array(closed)),
        }
    )
    return EngineOutput(
        rows=rows,
        pending=pending,
        assignments=assignments,
        n_late=int((status == LATE).sum()),
        cursor=advance(job.cursor, assigned, bounds),
    )


def _empty_pending() -> pa.Table:
    from imagenette_drift.inference_log.schema import PREDICTION_SCHEMA

    return pa.schema([PREDICTION_SCHEMA.field(c) for c in WINDOW_COLUMNS]).empty_table()


def _split_windows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
    """Record batches ordered by `window` -> one table per window."""
    parts: list[pa.RecordBatch] = []
    current = None
    for batch in batches:
        windows = batch.column("window").to_numpy()
        cuts = np.flatnonzero(np.diff(windows)) + 1
        for start, end in zip(np.r_[0, cuts], np.r_[cuts, len(windows)], strict=True):
            if end == start:
                continue
            if current is not None and windows[start] != current:
                yield pa.Table.from_batches(parts)
                parts = []
            current = windows[start]
            parts.append(batch.slice(start, end - start))
    if parts:
        yield pa.Table.from_batches(parts)


# -- DuckDB -----------------------------------------------------------------------------------------------
def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _run_duckdb(job: EngineInput) -> EngineOutput:
    import duckdb

    if not job.files:
        return EngineOutput([], _empty_pending(), pa.table({}), 0, job.cursor)
    con = duckdb.connect(config={"threads": job.threads})
    if job.filesystem is not None:
        con.register_filesystem(job.filesystem)
    source = f"read_parquet({_sql_list(job.files)}, union_by_name = true)"
    keys = con.sql(f"SELECT {', '.join(KEY_COLUMNS)} FROM {source}").to_arrow_table()
    assigned, bounds = assign_windows(keys, job.spec, job.cursor, job.lateness_s, job.flush)
    con.register("assigned", unique_ids(assigned))
    con.register("labels", job.labels)
    columns = ", ".join(f"p.{c}" for c in WINDOW_COLUMNS)
    query = (
        f"SELECT {columns}, l.{LABEL_COLUMN}, a.window FROM {source} p "
        f"JOIN assigned a USING (request_id) LEFT JOIN labels l USING (request_id) "
        f"WHERE a.status = {CLOSED} ORDER BY a.window"
    )
    reader = con.sql(query).to_arrow_reader(batch_size=65536)
    rows = [
        window_statistics(table, int(table["window"][0].as_py()), job.context)
        for table in _split_windows(iter(reader))
    ]
    pending = con.sql(
        f"SELECT {columns} FROM {source} p JOIN assigned a USING (request_id) WHERE a.status = {PENDING}"
    ).to_arrow_table()
    con.close()
    return _finish(job, rows, keys, assigned, bounds, pending)


# -- Ray Data ---------------------------------------------------------------------------------------------
def _tagger(closed_ids: pa.Array, closed_windows: pa.Array, labels: pa.Table):
    """A batch function adding `window` (closed records only) and the joined label to each record."""

    def tag(batch: pa.Table) -> pa.Table:
        index = pc.index_in(batch["request_id"], value_set=closed_ids)
        keep = pc.is_valid(index)
        batch, index = batch.filter(keep), index.filter(keep)
        label_index = pc.index_in(batch["request_id"], value_set=labels["request_id"])
        batch = batch.append_column(LABEL_COLUMN, labels[LABEL_COLUMN].take(label_index))
        return batch.append_column("window", closed_windows.take(index))

    return tag


def _run_ray(job: EngineInput, address: str | None) -> EngineOutput:
    import ray
    import ray.data

    if not job.files:
        return EngineOutput([], _empty_pending(), pa.table({}), 0, job.cursor)
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=job.threads, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    filesystem = None
    if job.filesystem is not None:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        filesystem = PyFileSystem(FSSpecHandler(job.filesystem))
    # One filesystem per read: the pending file (local) is read apart from gs:// log files.
    remote = [f.split("://", 1)[1] for f in job.files if "://" in f]
    local = [f for f in job.files if "://" not in f]
    parts = [ray.data.read_parquet(local, columns=list(WINDOW_COLUMNS))] if local else []
    if remote:
        parts.append(ray.data.read_parquet(remote, columns=list(WINDOW_COLUMNS), filesystem=filesystem))
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    keys = pa.concat_tables(ray.get(ds.select_columns(KEY_COLUMNS).to_arrow_refs())).combine_chunks()
    assigned, bounds = assign_windows(keys, job.spec, job.cursor, job.lateness_s, job.flush)
    joinable = unique_ids(assigned)
    closed = pc.equal(joinable["status"], CLOSED)
    closed_ids = joinable["request_id"].filter(closed).combine_chunks()
    closed_windows = joinable["window"].filter(closed).combine_chunks()
    context = job.context

    def statistics(table: pa.Table) -> pa.Table:
        row = window_statistics(table, int(table["window"][0].as_py()), context)
        from imagenette_drift.monitoring.stats import TABLE_SCHEMA

        return pa.Table.from_pylist([row], schema=TABLE_SCHEMA)

    rows: list[dict[str, Any]] = []
    if len(closed_ids):
        tagged = ds.map_batches(_tagger(closed_ids, closed_windows, job.labels), batch_format="pyarrow")
        rows = tagged.groupby("window").map_groups(statistics, batch_format="pyarrow").take_all()
    pending_ids = joinable["request_id"].filter(pc.equal(joinable["status"], PENDING)).combine_chunks()

    def pending_only(batch: pa.Table) -> pa.Table:
        return batch.filter(pc.is_in(batch["request_id"], value_set=pending_ids))

    pending = (
        pa.concat_tables(ray.get(ds.map_batches(pending_only, batch_format="pyarrow").to_arrow_refs()))
        if len(pending_ids)
        else _empty_pending()
    )
    return _finish(job, [dict(r) for r in rows], keys, assigned, bounds, pending)
