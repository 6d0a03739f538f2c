"""Alerts with hysteresis and a cool-down, driven by the window table one window at a time.

An alert is raised after `alert_k` drifting windows in a row and cleared after `clear_k` clean ones in a row,
so one noisy window neither raises nor clears it. After an alert is raised, no new one is raised for
`cooldown_s` seconds of log time (window end timestamps, so replaying a log gives the same alerts), even if
the old one cleared in between. The state is a plain dict saved beside the window table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class AlertPolicy:
    """Args:
    alert_k: drifting windows in a row that raise an alert.
    clear_k: clean windows in a row that clear it.
    cooldown_s: seconds of log time after a raised alert during which no new alert is raised.
    """

    alert_k: int = 3
    clear_k: int = 3
    cooldown_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        for name in ("alert_k", "clear_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.cooldown_s < 0:
            raise ValueError(f"--cooldown must not be negative, got {self.cooldown_s} s.")


@dataclass(frozen=True)
class AlertEvent:
    """An alert raised or cleared at `window` (its end time `at`), with the window's row."""

    kind: Literal["raised", "cleared"]
    window: int
    at: str  # ISO-8601 UTC end of the window
    row: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"event": f"alert_{self.kind}", "window": self.window, "at": self.at, "statistics": self.row}


@dataclass
class AlertState:
    """Where the hysteresis stands; `update` it with each new window row in order."""

    active: bool = False
    drifting_run: int = 0
    clean_run: int = 0
    raised_at: str | None = None  # window end of the last raised alert
    raised_window: int | None = None
    suppressed: int = 0  # alerts not raised because of the cool-down
    history: list[dict[str, Any]] = field(default_factory=list)

    def update(self, row: dict[str, Any], policy: AlertPolicy) -> AlertEvent | None:
        """Feed one window row (needs `window`, `window_end`, `drift`); return the event it causes, if any."""
        end = _iso(row["window_end"])
        if row["drift"]:
            self.drifting_run, self.clean_run = self.drifting_run + 1, 0
        else:
            self.drifting_run, self.clean_run = 0, self.clean_run + 1
        event = None
        if not self.active and self.drifting_run >= policy.alert_k:
            if self._cooling(end, policy):
                if self.drifting_run == policy.alert_k:
                    self.suppressed += 1
            else:
                self.active, self.raised_at, self.raised_window = True, end, int(row["window"])
                event = AlertEvent("raised", int(row["window"]), end, _plain(row))
        elif self.active and self.clean_run >= policy.clear_k:
            self.active = False
            event = AlertEvent("cleared", int(row["window"]), end, _plain(row))
        if event is not None:
            self.history.append({"event": event.kind, "window": event.window, "at": event.at})
        return event

    def _cooling(self, end: str, policy: AlertPolicy) -> bool:
        if self.raised_at is None:
            return False
        elapsed = dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(self.raised_at)
        return elapsed.total_seconds() < policy.cooldown_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        return cls(**data)


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return str(value)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A JSON-ready copy of a window row (timestamps as ISO strings)."""
    return {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}
