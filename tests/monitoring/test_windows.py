"""Window assignment (count and time), duration parsing, and alert hysteresis with a cool-down."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from imagenette_drift.monitoring.alerts import AlertPolicy, AlertState
from imagenette_drift.monitoring.windows import (
    CLOSED,
    LATE,
    PENDING,
    WindowCursor,
    WindowSpec,
    advance,
    assign_windows,
    parse_duration,
)

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)


def _keys(minutes: list[float]) -> pa.Table:
    return pa.table(
        {
            "request_id": [f"r{i:03d}" for i in range(len(minutes))],
            "timestamp": pa.array([T0 + dt.timedelta(minutes=m) for m in minutes], pa.timestamp("us", "UTC")),
        }
    )


def test_count_windows_close_full_runs_in_time_order_and_keep_the_tail() -> None:
    keys = _keys([5, 1, 4, 2, 3, 0, 6])  # arrival order differs from time order
    assigned, _ = assign_windows(keys, WindowSpec.parse("3"), WindowCursor(next_window=10))
    by_id = dict(zip(assigned["request_id"].to_pylist(), assigned["window"].to_pylist(), strict=True))
    assert [by_id[f"r{i:03d}"] for i in (5, 1, 3)] == [10, 10, 10]  # minutes 0, 1, 2
    assert [by_id[f"r{i:03d}"] for i in (4, 2, 0)] == [11, 11, 11]  # minutes 3, 4, 5
    assert assigned["status"].to_pylist()[6] == PENDING
    flushed, _ = assign_windows(keys, WindowSpec.parse("3"), WindowCursor(), flush=True)
    assert flushed["status"].to_pylist()[6] == PENDING  # one record alone cannot be tested: it waits
    flushed, _ = assign_windows(_keys([0, 1, 2, 3, 4]), WindowSpec.parse("3"), WindowCursor(), flush=True)
    assert flushed["window"].to_pylist() == [0, 0, 0, 1, 1]


def test_time_windows_wait_for_lateness_then_late_records_are_counted() -> None:
    spec = WindowSpec.parse("1h")
    keys = _keys([0, 10, 59, 61, 62, 125])  # three records at 08:xx, two at 09:xx, one at 10:05
    assigned, bounds = assign_windows(keys, spec, WindowCursor(), lateness_s=600)
    status = assigned["status"].to_pylist()
    # 08:00-09:00 closes (10:05 is past 09:10); 09:00-10:00 waits until 10:10 for late files; so does 10:05.
    assert status == [CLOSED] * 3 + [PENDING] * 3
    assigned, bounds = assign_windows(keys, spec, WindowCursor(), lateness_s=60)
    assert assigned["window"].to_pylist() == [0, 0, 0, 1, 1, -1]
    assert bounds[0] == (int(T0.timestamp() * 1e6), int(T0.timestamp() * 1e6) + 3_600_000_000)
    cursor = advance(WindowCursor(), assigned, bounds)
    assert cursor.next_window == 2 and cursor.closed_until_us == bounds[1][1]
    late, _ = assign_windows(_keys([30, 30.5]), spec, cursor)
    assert late["status"].to_pylist() == [LATE, LATE]


@pytest.mark.parametrize("text", ["0", "1", "soon", "-1h", "1w", ""])
def test_bad_window_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="--window"):
        WindowSpec.parse(text)


def test_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("5m") == 300 and parse_duration("6h") == 21600
    with pytest.raises(ValueError, match="--cooldown"):
        parse_duration("6 hours", "--cooldown")


def _row(window: int, drift: bool, hours: float) -> dict:
    return {"window": window, "window_end": T0 + dt.timedelta(hours=hours), "drift": drift}


def _events(flags: str, policy: AlertPolicy, state: AlertState | None = None) -> list[tuple[str, int]]:
    state = state or AlertState()
    out = []
    for i, flag in enumerate(flags):
        event = state.update(_row(i, flag == "D", i), policy)
        if event:
            out.append((event.kind, event.window))
    return out


def test_hysteresis_needs_k_drifting_to_raise_and_k_clean_to_clear() -> None:
    policy = AlertPolicy(alert_k=3, clear_k=2, cooldown_s=0)
    assert _events("DD.DD.D", policy) == []  # never 3 in a row
    assert _events("DDD.D.DD..", policy) == [("raised", 2), ("cleared", 9)]


def test_cooldown_holds_back_a_second_alert_until_it_has_passed() -> None:
    policy = AlertPolicy(alert_k=2, clear_k=1, cooldown_s=5 * 3600)  # windows are 1 h apart
    state = AlertState()
    # raised at window 1, cleared at 2, drifting again at 3-4 (3 h after: cooling), still at 6 (5 h: allowed)
    assert _events("DD.DDDD", policy, state) == [("raised", 1), ("cleared", 2), ("raised", 6)]
    assert state.suppressed == 1


def test_alert_state_round_trips_through_its_dict() -> None:
    state = AlertState()
    _events("DDD", AlertPolicy(), state)
    assert AlertState.from_dict(state.to_dict()) == state and state.active


def test_a_repeated_request_id_joins_once() -> None:
    from imagenette_drift.monitoring.windows import unique_ids

    keys = _keys([0, 1, 2, 3])
    keys = pa.concat_tables([keys, keys.slice(1, 1)])  # r001 logged twice
    assigned, _ = assign_windows(keys, WindowSpec.parse("2"), WindowCursor())
    assert assigned.num_rows == 5
    assert unique_ids(assigned)["request_id"].to_pylist() == ["r000", "r001", "r002", "r003"]
