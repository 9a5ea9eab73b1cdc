"""When one vehicle asks the failure model, and what it did with the answers (the ``failure_risk`` gate).

A prediction is due every ``interval_ms`` of window time, and at once after an anomaly alert; the request
(the window's end and the seq of its last frame) stays due until an answer for it arrives. An answer for
an older window still counts (the newer request stays due); one older than the last answer is ignored.

>>> schedule = PredictionSchedule(interval_ms=1_000)
>>> schedule.after_window(5_000, seq=50, anomaly_fired=False); schedule.pending
(5000, 50)
>>> schedule.after_window(5_500, seq=55, anomaly_fired=False); schedule.pending
(5000, 50)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.alerting import AlertPolicy, AlertState
from twins.reorder import NO_SEQ


@dataclass(frozen=True)
class RiskDecision:
    """What an accepted answer did: the request's seq, the headline risk, whether the gate fired."""

    seq: int
    headline: float
    fired: bool


class PredictionSchedule:
    """The prediction requests of one vehicle and the latest risk answered."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = int(interval_ms)
        self.next_due_ms = NO_SEQ
        self.pending: tuple[int, int] | None = None  # (window_end_ms, seq at that window)
        self.risk: dict[int, float] = {}
        self.risk_window_end = NO_SEQ
        self.risk_gate = AlertState()

    def after_window(self, end_ms: int, seq: int, anomaly_fired: bool) -> None:
        """A window closed: a request is due on schedule, or at once after an anomaly alert."""
        if anomaly_fired or end_ms >= self.next_due_ms:
            self.pending = (int(end_ms), int(seq))
            self.next_due_ms = int(end_ms) + self.interval_ms

    def answer(self, window_end_ms: int, risk: dict[int, float], policy: AlertPolicy) -> RiskDecision | None:
        """Record a model answer for a request; None when nothing was asked or the answer is superseded."""
        if self.pending is None or window_end_ms > self.pending[0] or window_end_ms <= self.risk_window_end:
            return None
        seq = self.pending[1]
        if window_end_ms == self.pending[0]:
            self.pending = None
        self.risk = {int(h): float(p) for h, p in risk.items()}
        self.risk_window_end = int(window_end_ms)
        headline = self.risk[min(self.risk)] if self.risk else 0.0
        return RiskDecision(seq, headline, self.risk_gate.step(int(window_end_ms), headline, policy))

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        gate = self.risk_gate
        return {"next_due_ms": self.next_due_ms, "pending": self.pending,
                "risk": {str(h): p for h, p in self.risk.items()}, "risk_window_end": self.risk_window_end,
                "risk_gate": gate_state(gate)}

    @classmethod
    def from_state(cls, meta: dict[str, Any], interval_ms: int) -> PredictionSchedule:
        schedule = cls(interval_ms)
        schedule.next_due_ms = int(meta["next_due_ms"])
        pending = meta["pending"]
        schedule.pending = None if pending is None else (int(pending[0]), int(pending[1]))
        schedule.risk = {int(h): float(p) for h, p in meta["risk"].items()}
        schedule.risk_window_end = int(meta["risk_window_end"])
        schedule.risk_gate = gate_from_state(meta["risk_gate"])
        return schedule


def gate_state(gate: AlertState) -> list[Any]:
    """An alert gate as JSON: [run, active, last_alert_ms]."""
    return [gate.run, gate.active, gate.last_alert_ms]


def gate_from_state(state: list[Any]) -> AlertState:
    run, active, last = state
    return AlertState(run=int(run), active=bool(active), last_alert_ms=None if last is None else int(last))
