"""Judge the alerts of a fleet run against the generator's ground truth (events and sensor faults).

An alert is *true* when it points at something real for its vehicle:
``anomaly``: inside a failure's onset-to-failure interval, or inside a sensor fault;
``failure_risk``: a failure within ``risk_horizon_ms`` after it (or inside its onset-to-failure interval);
``sensor_fault``: inside a sensor fault interval (``slack_ms`` either side: faults are seen per window).
A failure is *detected* when an ``anomaly`` or ``failure_risk`` alert lies between its onset and its
failure; the lead time is from the first such alert to the failure.

>>> from twins.types import Alert
>>> a = Alert("x", "v1", "anomaly", ts_ms=50, seq=5, score=2.0, signals=(), message="")
>>> events = [{"vehicle_id": "v1", "mode": "coolant_pump", "onset_ms": 0, "failure_ms": 100}]
>>> report = score_alerts([a], events, [], risk_horizon_ms=10)
>>> report["by_rule"]["anomaly"], report["by_mode"]["coolant_pump"]["detected"], report["lead_times_ms"]
({'alerts': 1, 'true': 1, 'false': 0}, 1, [50])
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from twins.types import RULES, Alert, Rule


def score_alerts(alerts: Iterable[Alert], events: list[dict[str, Any]], faults: list[dict[str, Any]],
                 risk_horizon_ms: int, slack_ms: int = 0, end_ms: int | None = None) -> dict[str, Any]:
    """Counts of true/false alerts per rule and per mode, detected failures and lead times."""
    events_by_vehicle: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if end_ms is None or event["onset_ms"] <= end_ms:
            events_by_vehicle[event["vehicle_id"]].append(event)
    faults_by_vehicle: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for fault in faults:
        faults_by_vehicle[fault["vehicle_id"]].append(fault)

    by_rule = {rule: {"alerts": 0, "true": 0, "false": 0} for rule in RULES}
    first_alert: dict[int, int] = {}
    for alert in alerts:
        own_events = events_by_vehicle.get(alert.vehicle_id, [])
        in_fault = any(f["start_ms"] - slack_ms <= alert.ts_ms <= f["end_ms"] + slack_ms
                       for f in faults_by_vehicle.get(alert.vehicle_id, []))
        hit = [e for e in own_events if e["onset_ms"] <= alert.ts_ms <= e["failure_ms"]]
        if alert.rule == Rule.SENSOR_FAULT:
            true = in_fault
        elif alert.rule == Rule.ANOMALY:
            true = bool(hit) or in_fault
        else:
            ahead = [e for e in own_events if alert.ts_ms < e["failure_ms"] <= alert.ts_ms + risk_horizon_ms]
            true = bool(hit or ahead)
        counts = by_rule.setdefault(alert.rule, {"alerts": 0, "true": 0, "false": 0})
        counts["alerts"] += 1
        counts["true" if true else "false"] += 1
        if alert.rule in (Rule.ANOMALY, Rule.FAILURE_RISK):
            for event in hit:
                key = id(event)
                first_alert[key] = min(first_alert.get(key, alert.ts_ms), alert.ts_ms)

    by_mode: dict[str, dict[str, Any]] = {}
    lead_times: list[int] = []
    for vehicle_events in events_by_vehicle.values():
        for event in vehicle_events:
            stats = by_mode.setdefault(event["mode"], {"events": 0, "detected": 0, "lead_times_ms": []})
            stats["events"] += 1
            if id(event) in first_alert:
                lead = int(event["failure_ms"] - first_alert[id(event)])
                stats["detected"] += 1
                stats["lead_times_ms"].append(lead)
                lead_times.append(lead)
    for stats in by_mode.values():
        stats["median_lead_h"] = float(np.median(stats["lead_times_ms"]) / 3_600_000) if stats["lead_times_ms"] else None
    return {"by_rule": by_rule, "by_mode": by_mode, "lead_times_ms": lead_times,
            "events": sum(s["events"] for s in by_mode.values()),
            "detected": sum(s["detected"] for s in by_mode.values())}
