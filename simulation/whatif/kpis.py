"""KPIs of one what-if run, its cost under the configured cost model, and confidence intervals.

>>> [round(x, 2) for x in mean_ci([10.0, 12.0, 11.0, 13.0])]
[11.5, 9.45, 13.55]
>>> t_quantile_975(1_000)
1.96
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from configs.settings import WhatIfCosts
from simulation.whatif.model import CAUGHT_EARLY, ROADSIDE, ModelRecords

# Two-sided 95% Student t quantiles by degrees of freedom (replications - 1).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
         19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}

# KPIs reported per run, in table order; "lower is better" for all but the ones listed below.
KPI_NAMES: tuple[str, ...] = (
    "total_cost", "roadside_failures", "caught_early", "failures_due", "downtime_hours", "false_alarm_visits",
    "planned_visits", "workshop_utilisation", "mean_workshop_wait_hours", "max_workshop_queue",
    "alerts", "alert_lead_time_median_hours", "charger_wait_mean_hours", "pending_failures",
    "cost_parts", "cost_labour", "cost_downtime", "cost_roadside",
)
HIGHER_IS_BETTER = frozenset({"caught_early", "alert_lead_time_median_hours"})
SHARES = frozenset({"workshop_utilisation"})
DIFFERENCE_KPIS: tuple[str, ...] = ("total_cost", "roadside_failures", "downtime_hours", "false_alarm_visits")
# Against the baseline scenario also how many parts were due to fail: a scenario (a heatwave) can change
# that, a policy cannot (same seed, same failures), so the policy table leaves it out.
SCENARIO_DIFFERENCE_KPIS: tuple[str, ...] = (DIFFERENCE_KPIS[0], "failures_due", *DIFFERENCE_KPIS[1:])


def t_quantile_975(dof: int) -> float:
    """Student t 97.5% quantile (two-sided 95%); 1.96 beyond the table."""
    if dof <= 0:
        return math.nan
    if dof in _T975:
        return _T975[dof]
    larger = [k for k in _T975 if k > dof]
    return _T975[min(larger)] if larger else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% confidence interval over replications (NaNs ignored; one value: no interval)."""
    finite = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(finite)
    if len(finite) < 2:
        return mean, math.nan, math.nan
    half = t_quantile_975(len(finite) - 1) * statistics.stdev(finite) / math.sqrt(len(finite))
    return mean, mean - half, mean + half


def alert_lead_times_hours(records: ModelRecords) -> list[float]:
    """For each failure that had an alert between its onset and its resolution: failure time - first alert."""
    alerts_by_vehicle: dict[str, list[float]] = defaultdict(list)
    for alert in records.alerts:
        alerts_by_vehicle[alert.vehicle_id].append(alert.t_h)
    leads = []
    for event in records.events:
        end_h = event.resolved_h if not math.isnan(event.resolved_h) else min(event.failure_h, records.horizon_h)
        times = [t for t in alerts_by_vehicle.get(event.vehicle_id, ()) if event.onset_h <= t <= end_h]
        if times:
            leads.append(event.failure_h - min(times))
    return leads


def compute_kpis(records: ModelRecords, costs: WhatIfCosts) -> dict[str, float]:
    """Every KPI of ``KPI_NAMES`` for one replication."""
    roadside = [e for e in records.events if e.outcome == ROADSIDE]
    caught = [e for e in records.events if e.outcome == CAUGHT_EARLY]
    planned = [v for v in records.visits if v.reason != ROADSIDE]
    waits = [v.first_bay_h - v.queued_h for v in records.visits if not math.isnan(v.first_bay_h)]
    leads = alert_lead_times_hours(records)
    technician_hours = sum(v.technician_hours for v in records.visits)
    downtime = sum(records.downtime_h.values())
    parts = (sum(costs.parts_by_severity[_sev(e.severity)] for e in caught)
             + sum(costs.parts_by_severity[_sev(e.severity)] * costs.roadside_parts_multiplier for e in roadside))
    labour = technician_hours * costs.technician_hour + len(records.visits) * costs.visit_overhead
    downtime_cost = downtime * costs.downtime_hour
    roadside_cost = len(roadside) * costs.roadside_incident + sum(1 for e in roadside if e.towed) * costs.tow
    capacity_h = records.technicians * records.horizon_h
    return {
        "total_cost": parts + labour + downtime_cost + roadside_cost,
        "roadside_failures": float(len(roadside)),
        "caught_early": float(len(caught)),
        # Parts due to fail within the horizon had nobody intervened: the scenario's failures, whatever the policy.
        "failures_due": float(sum(1 for e in records.events if e.failure_h <= records.horizon_h)),
        "downtime_hours": downtime,
        "false_alarm_visits": float(sum(1 for v in planned if v.false_alarm)),
        "planned_visits": float(len(planned)),
        "workshop_utilisation": records.technician_busy_h / capacity_h if capacity_h > 0 else math.nan,
        "mean_workshop_wait_hours": statistics.fmean(waits) if waits else 0.0,
        "max_workshop_queue": float(max((q for _, q, _ in records.queue), default=0)),
        "alerts": float(len(records.alerts)),
        "alert_lead_time_median_hours": statistics.median(leads) if leads else math.nan,
        "charger_wait_mean_hours": statistics.fmean(records.charger_waits_h) if records.charger_waits_h else 0.0,
        "pending_failures": float(sum(1 for e in records.events if e.outcome not in (ROADSIDE, CAUGHT_EARLY))),
        "cost_parts": parts,
        "cost_labour": labour,
        "cost_downtime": downtime_cost,
        "cost_roadside": roadside_cost,
    }


def summarise(rows: Iterable[Mapping[str, object]], group_keys: Sequence[str] = ("scenario", "policy"),
              kpi_names: Sequence[str] = KPI_NAMES) -> list[dict[str, object]]:
    """One row per group and KPI: mean, 95% CI and the number of replications."""
    groups: dict[tuple, list[Mapping[str, object]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in group_keys)].append(row)
    out = []
    for key, members in groups.items():
        for kpi in kpi_names:
            values = [float(m[kpi]) for m in members if kpi in m]  # type: ignore[arg-type]
            mean, low, high = mean_ci(values)
            if values and min(values) >= 0 and low < 0:
                low = 0.0  # every KPI is a count, a duration, a share or a cost: never negative
            if kpi in SHARES and high > 1:
                high = 1.0
            out.append({**dict(zip(group_keys, key, strict=False)), "kpi": kpi, "mean": mean, "ci_low": low, "ci_high": high,
                        "replications": len(values)})
    return out


def _sev(severity: int) -> int:
    return min(max(int(severity), 1), 3) - 1



def paired_differences(rows: Sequence[Mapping[str, object]], against: str, reference: str, fixed: str,
                       kpi_names: Sequence[str] = DIFFERENCE_KPIS) -> list[dict[str, object]]:
    """Differences to a reference, paired by replication (same seed = same fleet and failures).

    ``against`` is the column that varies (``policy`` or ``scenario``), ``reference`` its reference
    value (``reactive``, ``baseline``), ``fixed`` the column held equal (``scenario`` or ``policy``).
    Pairing removes the fleet-to-fleet spread that makes unpaired intervals wide.

    >>> rows = [{"scenario": "s", "policy": p, "replication": r, "total_cost": c}
    ...         for p, r, c in [("reactive", 0, 100.0), ("reactive", 1, 300.0), ("predictive", 0, 90.0),
    ...                         ("predictive", 1, 285.0)]]
    >>> d = paired_differences(rows, "policy", "reactive", "scenario", ["total_cost"])[0]
    >>> (d["policy"], d["mean"], d["pairs"])
    ('predictive', -12.5, 2)
    """
    reference_rows = {(row[fixed], row["replication"]): row for row in rows if row[against] == reference}
    groups: dict[tuple, list[tuple[Mapping[str, object], Mapping[str, object]]]] = defaultdict(list)
    for row in rows:
        partner = reference_rows.get((row[fixed], row["replication"]))
        if row[against] != reference and partner is not None:
            groups[(row[fixed], row[against])].append((row, partner))
    out = []
    for (fixed_value, value), pairs in groups.items():
        for kpi in kpi_names:
            deltas = [float(a[kpi]) - float(b[kpi]) for a, b in pairs]  # type: ignore[arg-type]
            mean, low, high = mean_ci(deltas)
            out.append({fixed: fixed_value, against: value, "reference": reference, "kpi": kpi, "mean": mean,
                        "ci_low": low, "ci_high": high, "pairs": len(deltas)})
    return out
