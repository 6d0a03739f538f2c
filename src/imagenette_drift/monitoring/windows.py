"""Which records form a window: by time (`--window 1h`) or by count (`--window 500`), and when one closes.

Both engines follow these rules. Records are ordered by (timestamp, request_id) over every replica's files.

- Count windows: consecutive runs of `size` records; the incomplete tail waits for the next run.
- Time windows: UTC-aligned intervals ``[k * width, (k + 1) * width)``. One closes once a record at least
  `lateness` past its end has been seen (replicas flush their files a little late), or at once with
  `flush`. Records that arrive after their window was closed are counted as late and not tested.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
US = 1_000_000


def parse_duration(text: str, name: str = "duration") -> float:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"7d"`` -> seconds; raise ValueError naming `name` otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{name} must be a positive duration like 90s, 5m, 1h or 7d, got {text!r}.")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


@dataclass(frozen=True)
class WindowSpec:
    """How records are grouped: `kind` "count" (`size` records) or "time" (`width_s` seconds)."""

    kind: Literal["count", "time"]
    size: int = 0
    width_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        """``"500"`` -> 500 records per window; ``"1h"`` / ``"30m"`` -> windows of that length."""
        text = str(text).strip()
        if text.isdigit():
            if int(text) < 2:
                raise ValueError(f"--window {text}: a count window needs at least 2 records.")
            return cls("count", size=int(text))
        try:
            return cls("time", width_s=parse_duration(text, "--window"))
        except ValueError as e:
            raise ValueError(
                f"--window must be a record count (e.g. 500) or a duration (e.g. 1h, 30m), got {text!r}."
            ) from e

    @property
    def width_us(self) -> int:
        return round(self.width_s * US)

    def describe(self) -> str:
        return f"{self.size} records" if self.kind == "count" else f"{self.width_s:g} s"


CLOSED, PENDING, LATE = 0, 1, 2


@dataclass
class WindowCursor:
    """Where the previous runs stopped: the next window number and, for time windows, the end of the last
    closed window (records before it are late)."""

    next_window: int = 0
    closed_until_us: int | None = None


def assign_windows(
    keys: pa.Table, spec: WindowSpec, cursor: WindowCursor, lateness_s: float = 0.0, flush: bool = False
) -> tuple[pa.Table, dict[int, tuple[int, int]]]:
    """Give each record its window number (both engines call this on the key columns only).

    Args:
        keys: ``request_id`` (string) and ``timestamp`` (UTC) of every record to place: this run's new
            records and those still pending from earlier runs.
        spec: Count or time windows.
        cursor: Where earlier runs stopped (not modified).
        lateness_s: For time windows, how long past its end a window waits for late files.
        flush: Close every window now, the incomplete last one included (when it has at least 2 records).

    Returns:
        (``request_id``, ``window`` (int64, -1 unless closed), ``status`` (int8: CLOSED, PENDING, LATE)) and,
        for time windows, each closed window's ``(start_us, end_us)``.
    """
    n = keys.num_rows
    ts = keys["timestamp"].cast(pa.int64()).to_numpy(zero_copy_only=False) if n else np.zeros(0, np.int64)
    sort_keys = [("timestamp", "ascending"), ("request_id", "ascending")]
    order = pc.sort_indices(keys.select(["timestamp", "request_id"]), sort_keys=sort_keys).to_numpy()
    status = np.full(n, PENDING, dtype=np.int8)
    window = np.full(n, -1, dtype=np.int64)
    bounds: dict[int, tuple[int, int]] = {}
    if spec.kind == "count":
        full = n // spec.size
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        group = rank // spec.size
        closing = group < full
        if flush and n - full * spec.size >= 2:
            closing = np.ones(n, dtype=bool)
        status[closing] = CLOSED
        window[closing] = cursor.next_window + group[closing]
    else:
        width = spec.width_us
        group = ts // width
        if cursor.closed_until_us is not None:
            late = (group + 1) * width <= cursor.closed_until_us
            status[late] = LATE
        else:
            late = np.zeros(n, dtype=bool)
        newest = int(ts.max()) if n else 0
        due = ~late & (flush | ((group + 1) * width + round(lateness_s * US) <= newest))
        due_groups, sizes = np.unique(group[due], return_counts=True)
        closed_groups = due_groups[sizes >= 2]
        closing = due & np.isin(group, closed_groups)
        status[closing] = CLOSED
        window[closing] = cursor.next_window + np.searchsorted(closed_groups, group[closing])
        status[due & ~closing] = LATE  # alone in its interval: no two-sample test is defined
        for i, g in enumerate(closed_groups):
            bounds[cursor.next_window + i] = (int(g) * width, (int(g) + 1) * width)
    table = pa.table(
        {"request_id": keys["request_id"], "window": pa.array(window), "status": pa.array(status)}
    )
    return table, bounds


def unique_ids(assigned: pa.Table) -> pa.Table:
    """One row of `assign_windows`' table per request_id, for the engines' joins (request ids are UUIDs; a
    file copied twice must not multiply rows): each copy of a repeated record joins the first one's window."""
    if len(pc.unique(assigned["request_id"])) == assigned.num_rows:
        return assigned
    seen: set[str] = set()
    keep = []
    for rid in assigned["request_id"].to_pylist():
        keep.append(rid not in seen)
        seen.add(rid)
    log.warning("%d records repeat a request_id already in the log; each copy is counted", keep.count(False))
    return assigned.filter(pa.array(keep))


def advance(cursor: WindowCursor, assigned: pa.Table, bounds: dict[int, tuple[int, int]]) -> WindowCursor:
    """The cursor after this run's closed windows."""
    closed = assigned["window"].to_numpy()
    closed = closed[closed >= 0]
    if not len(closed):
        return cursor
    until = max(end for _, end in bounds.values()) if bounds else cursor.closed_until_us
    return WindowCursor(next_window=int(closed.max()) + 1, closed_until_us=until)
