"""Judge the alerts of a fleet run against the generator's ground truth (events and sensor faults).

A thin adapter from twin alerts and event/fault rows to ``training.judge``, the one judge also used by
``evtwin evaluate`` and ``evtwin demo``; its rules are in ``configs/evaluation_metrics.md``.
``slack_ms`` is the judge's evidence window (an alert stamped ``t`` rests on ``(t - slack_ms, t]``).

>>> from twins.types import Alert
>>> a = Alert("x", "v1", "anomaly", ts_ms=50, seq=5, score=2.0, signals=(), message="")
>>> events = [{"vehicle_id": "v1", "mode": "coolant_pump", "onset_ms": 0, "failure_ms": 100}]
>>> report = score_alerts([a], events, [], risk_horizon_ms=10)
>>> report["by_rule"]["anomaly"], report["by_mode"]["coolant_pump"]["detected"], report["lead_times_ms"]
({'alerts': 1, 'true': 1, 'false': 0, 'unjudged': 0}, 1, [50])
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from training.judge import AlertCall, FailureEvent, JudgeRules, SensorFaultEpisode, judge
from twins.types import RULES, Alert

__all__ = ["score_alerts", "failure_events", "fault_episodes"]


def failure_events(rows: Iterable[Mapping[str, Any]]) -> list[FailureEvent]:
    """Judge events from ``events.parquet`` rows (vehicle_id, onset_ms, failure_ms, mode)."""
    return [FailureEvent(str(r["vehicle_id"]), int(r["onset_ms"]), int(r["failure_ms"]), str(r.get("mode", "")))
            for r in rows]


def fault_episodes(rows: Iterable[Mapping[str, Any]]) -> list[SensorFaultEpisode]:
    """Judge sensor faults from ``sensor_faults.parquet`` rows (vehicle_id, start_ms, end_ms, kind or field)."""
    return [SensorFaultEpisode(str(r["vehicle_id"]), int(r["start_ms"]), int(r["end_ms"]),
                               str(r.get("kind", r.get("field", "")) or "")) for r in rows]


def score_alerts(alerts: Iterable[Alert], events: list[dict[str, Any]], faults: list[dict[str, Any]],
                 risk_horizon_ms: int, slack_ms: int = 0, end_ms: int | None = None, start_ms: int | None = None,
                 vehicles: Iterable[str] | None = None, post_failure_ms: int = 0) -> dict[str, Any]:
    """Counts of true/false/unjudged alerts per rule, failures detected per mode, lead times.

    With ``end_ms``, only failures up to it are scored (and with ``start_ms`` after it); with both and
    ``vehicles``, ``false_alarms_per_100_vehicle_days`` is measured over those vehicles' healthy time.
    """
    rules = JudgeRules(window_ms=int(slack_ms), risk_horizon_ms=int(risk_horizon_ms), post_failure_ms=post_failure_ms)
    judge_events, judge_faults = failure_events(events), fault_episodes(faults)
    observations = None
    if end_ms is not None:
        begin = int(start_ms) if start_ms is not None else min(
            [e.onset_ms for e in judge_events] + [f.start_ms for f in judge_faults] + [int(end_ms)]) - 1
        everyone = set(vehicles) if vehicles is not None else (
            {e.vehicle_id for e in judge_events} | {f.vehicle_id for f in judge_faults})
        observations = {v: (begin, int(end_ms)) for v in everyone}
    result = judge((AlertCall(a.vehicle_id, int(a.ts_ms), a.rule) for a in alerts), judge_events, judge_faults,
                   rules, observations)
    by_mode = {mode: {"events": m.events, "detected": m.detected, "lead_times_ms": list(m.leads_ms),
                      "median_lead_h": float(np.median(m.leads_ms) / 3_600_000) if m.leads_ms else None}
               for mode, m in result.by_mode.items()}
    known = start_ms is not None and vehicles is not None
    return {"by_rule": result.by_rule(RULES), "by_mode": by_mode, "lead_times_ms": list(result.leads_ms),
            "events": result.events, "detected": result.detected,
            "sensor_faults": result.faults, "sensor_faults_caught": result.faults_caught,
            "false_alarms": result.false_alarms,
            "false_alarms_per_100_vehicle_days": result.false_alarms_per_100_vehicle_days if known else None}
