"""The one ground-truth judge: which alerts point at a real failure or sensor fault, and the event metrics.

Used by ``evtwin evaluate`` (offline detectors), ``evtwin run`` (``twins.evaluation``) and ``evtwin demo``
(each alert's judged line). The rules are written out in ``configs/evaluation_metrics.md``
("Judging alerts"); in short, for an alert of vehicle ``v`` stamped ``t`` (the end of the window of data
that raised it, ``(t - window_ms, t]``):

1. ``anomaly`` and ``failure_risk`` alerts are **true for a failure** of ``v`` when
   ``onset <= t <= failure``; a ``failure_risk`` alert also when ``failure - risk_horizon_ms <= t < onset``
   (a prediction inside its horizon). Lead time: ``failure - t``.
2. ``anomaly`` and ``sensor_fault`` alerts are **true for a sensor fault** of ``v`` when their window
   overlaps the fault ``[start, end]``: ``start <= t < end + window_ms`` (an anomaly alert true for a
   failure as well keeps the outcome "failure" but still counts as catching the fault).
3. Otherwise the alert is a **false alarm** when its window is healthy operation, and **unjudged**
   when it is not (it overlaps a degradation ``[onset, failure]`` without being rule 1, falls in the
   repair time ``post_failure_ms`` after a failure, or overlaps a sensor fault). Healthy time is the
   observed time whose window is healthy.

A failure is *scored* (counted in recall) when it happens inside its vehicle's observation
``(start, end]``; it is *detected* when at least one alert is true for it, and its lead time is
taken from the earliest such alert. A sensor fault is scored when its window-overlap span meets the
observation, and *caught* when at least one alert is true for it.

>>> events = [FailureEvent("v1", onset_ms=100, failure_ms=200, mode="coolant_pump")]
>>> rules = JudgeRules(window_ms=10, risk_horizon_ms=50, post_failure_ms=0)
>>> result = judge([AlertCall("v1", 150, "anomaly"), AlertCall("v1", 20, "anomaly")], events, [], rules)
>>> [v.outcome for v in result.verdicts], result.event_recall, result.leads_ms
(['failure', 'false_alarm'], 1.0, [50])
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from configs.settings import Config

__all__ = [
    "FAILURE", "SENSOR_FAULT", "FALSE_ALARM", "UNJUDGED", "OUTCOMES", "AlertCall", "FailureEvent",
    "SensorFaultEpisode", "JudgeRules", "Verdict", "ModeSummary", "Judgement", "judge", "judge_alert",
    "healthy_ms",
]

MS_PER_DAY = 86_400_000
FAILURE = "failure"  # true: points at a failure of its vehicle
SENSOR_FAULT = "sensor_fault"  # true: points at a sensor fault of its vehicle
FALSE_ALARM = "false_alarm"  # raised on healthy operation
UNJUDGED = "unjudged"  # neither: e.g. in the repair time after a failure
OUTCOMES = (FAILURE, SENSOR_FAULT, FALSE_ALARM, UNJUDGED)
# Which alert rules may be true for which kind of ground truth (names as in twins.types.RULES).
_FAILURE_RULES = frozenset({"anomaly", "failure_risk"})
_FAULT_RULES = frozenset({"anomaly", "sensor_fault"})


@dataclass(frozen=True)
class AlertCall:
    """What the judge needs of an alert: vehicle, time (ms, end of its evidence window) and rule."""

    vehicle_id: str
    ts_ms: int
    rule: str


@dataclass(frozen=True)
class FailureEvent:
    """A failure with its degradation: onset (first sign) to failure, both ms."""

    vehicle_id: str
    onset_ms: int
    failure_ms: int
    mode: str = ""

    def __post_init__(self) -> None:
        if self.failure_ms < self.onset_ms:
            raise ValueError(f"failure event of {self.vehicle_id}: failure_ms={self.failure_ms} "
                             f"before onset_ms={self.onset_ms}")


@dataclass(frozen=True)
class SensorFaultEpisode:
    """A sensor reading nonsense from start to end (ms); ``kind`` names the fault or the field."""

    vehicle_id: str
    start_ms: int
    end_ms: int
    kind: str = ""

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"sensor fault of {self.vehicle_id}: end_ms={self.end_ms} before start_ms={self.start_ms}")


@dataclass(frozen=True)
class JudgeRules:
    """The judge's three lengths (ms).

    ``window_ms``: an alert stamped ``t`` rests on data in ``(t - window_ms, t]`` (the feature window).
    ``risk_horizon_ms``: a ``failure_risk`` alert predicts a failure within this (the shortest horizon,
    the one its message names). ``post_failure_ms``: repair time after a failure, neither healthy nor
    degrading (``labels.post_failure_grace_days``).
    """

    window_ms: int
    risk_horizon_ms: int
    post_failure_ms: int = 3 * MS_PER_DAY

    @classmethod
    def from_config(cls, config: Config, window_ms: int | None = None) -> JudgeRules:
        """The lengths the labels use (``window_ms``: a dataset's own, else the configured window)."""
        return cls(window_ms=int(window_ms if window_ms is not None else config.dataset.window_minutes * 60_000),
                   risk_horizon_ms=int(min(config.labels.failure_horizons_days) * MS_PER_DAY),
                   post_failure_ms=int(config.labels.post_failure_grace_days * MS_PER_DAY))

    def __post_init__(self) -> None:
        for name in ("window_ms", "risk_horizon_ms", "post_failure_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"JudgeRules.{name} must be >= 0 (got {getattr(self, name)})")


@dataclass(frozen=True)
class Verdict:
    """One alert's verdict: ``outcome`` in OUTCOMES (failure before sensor fault when both hold); the
    indices (into the judge's inputs) of the failures and the sensor faults it is true for; its lead time
    before the earliest of those failures."""

    alert: AlertCall
    outcome: str
    events: tuple[int, ...] = ()
    faults: tuple[int, ...] = ()
    lead_ms: int | None = None

    @property
    def true(self) -> bool:
        return self.outcome in (FAILURE, SENSOR_FAULT)


@dataclass
class ModeSummary:
    events: int = 0
    detected: int = 0
    leads_ms: list[int] = field(default_factory=list)

    @property
    def event_recall(self) -> float:
        return self.detected / self.events if self.events else float("nan")


@dataclass
class Judgement:
    """Per-alert verdicts and the summary metrics of ``configs/evaluation_metrics.md``."""

    verdicts: list[Verdict]
    events: int  # scored failures
    detected: int
    leads_ms: list[int]  # one per detected failure, in event order
    first_alert_ms: dict[int, int]  # event index -> earliest true alert
    by_mode: dict[str, ModeSummary]
    faults: int  # scored sensor faults
    faults_caught: int
    faults_by_kind: dict[str, tuple[int, int]]  # kind -> (scored, caught)
    false_alarms: int
    healthy_vehicle_days: float  # nan when no observation spans were given

    @property
    def event_recall(self) -> float:
        return self.detected / self.events if self.events else float("nan")

    @property
    def false_alarms_per_100_vehicle_days(self) -> float:
        days = self.healthy_vehicle_days
        return 100.0 * self.false_alarms / days if days > 0 else float("nan")

    @property
    def leads_days(self) -> list[float]:
        return [lead / MS_PER_DAY for lead in self.leads_ms]

    @property
    def lead_median_days(self) -> float:
        return float(np.median(self.leads_days)) if self.leads_ms else float("nan")

    @property
    def lead_p10_days(self) -> float:
        return float(np.percentile(self.leads_days, 10)) if self.leads_ms else float("nan")

    @property
    def sensor_fault_recall(self) -> float:
        return self.faults_caught / self.faults if self.faults else float("nan")

    def by_rule(self, rules: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        """Per rule: alerts, true, false (false alarms) and unjudged; ``rules`` listed even without alerts."""
        out = {rule: {"alerts": 0, "true": 0, "false": 0, "unjudged": 0} for rule in rules}
        for verdict in self.verdicts:
            counts = out.setdefault(verdict.alert.rule, {"alerts": 0, "true": 0, "false": 0, "unjudged": 0})
            counts["alerts"] += 1
            key = "true" if verdict.true else ("false" if verdict.outcome == FALSE_ALARM else "unjudged")
            counts[key] += 1
        return out


def judge_alert(alert: AlertCall, events: Sequence[FailureEvent], faults: Sequence[SensorFaultEpisode],
                rules: JudgeRules, event_index: Sequence[int] | None = None,
                fault_index: Sequence[int] | None = None) -> Verdict:
    """The verdict on one alert against its own vehicle's ``events`` and ``faults``.

    ``event_index``/``fault_index`` give the indices reported in the verdict (default: positions).
    """
    t = int(alert.ts_ms)
    event_index = range(len(events)) if event_index is None else event_index
    fault_index = range(len(faults)) if fault_index is None else fault_index
    caught = ()
    if alert.rule in _FAULT_RULES:
        caught = tuple(i for f, i in zip(faults, fault_index, strict=False)
                       if f.vehicle_id == alert.vehicle_id and f.start_ms <= t < f.end_ms + rules.window_ms)
    if alert.rule in _FAILURE_RULES:
        ahead = rules.risk_horizon_ms if alert.rule == "failure_risk" else 0
        hits = [(e.failure_ms, i) for e, i in zip(events, event_index, strict=False)
                if e.vehicle_id == alert.vehicle_id
                and min(e.onset_ms, e.failure_ms - ahead) <= t <= e.failure_ms]
        if hits:
            # An anomaly alert inside a degradation and a sensor fault is true for both (each is counted).
            return Verdict(alert, FAILURE, events=tuple(i for _, i in hits), faults=caught, lead_ms=min(hits)[0] - t)
    if caught:
        return Verdict(alert, SENSOR_FAULT, faults=caught)
    unhealthy = any(e.vehicle_id == alert.vehicle_id
                    and e.onset_ms <= t < e.failure_ms + rules.post_failure_ms + rules.window_ms for e in events) \
        or any(f.vehicle_id == alert.vehicle_id and f.start_ms <= t < f.end_ms + rules.window_ms for f in faults)
    return Verdict(alert, UNJUDGED if unhealthy else FALSE_ALARM)


def healthy_ms(start_ms: int, end_ms: int, events: Sequence[FailureEvent], faults: Sequence[SensorFaultEpisode],
               rules: JudgeRules) -> int:
    """Length of ``[start_ms, end_ms)`` where an alert would be judged on healthy operation (rule 3).

    >>> healthy_ms(0, 100, [FailureEvent("v", 20, 30)], [SensorFaultEpisode("v", 25, 60)], JudgeRules(5, 0, 10))
    55
    """
    spans = sorted([(e.onset_ms, e.failure_ms + rules.post_failure_ms + rules.window_ms) for e in events]
                   + [(f.start_ms, f.end_ms + rules.window_ms) for f in faults])
    covered, reach = 0, start_ms
    for lo, hi in spans:
        lo, hi = max(lo, reach), min(hi, end_ms)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return max(0, end_ms - start_ms - covered)


def judge(alerts: Iterable[AlertCall], events: Sequence[FailureEvent], faults: Sequence[SensorFaultEpisode],
          rules: JudgeRules, observations: Mapping[str, tuple[int, int]] | None = None) -> Judgement:
    """Verdicts on every alert and the summary metrics.

    ``observations``: vehicle -> (start_ms, end_ms) of the time its alerts could have been raised in
    (window ends). Only failures inside ``(start, end]`` and sensor faults meeting it are scored, and
    healthy vehicle-days are measured over these spans; without it every failure and fault is scored
    and healthy vehicle-days (hence the false-alarm rate) are NaN.
    """
    events_of: dict[str, list[int]] = defaultdict(list)
    for i, event in enumerate(events):
        events_of[event.vehicle_id].append(i)
    faults_of: dict[str, list[int]] = defaultdict(list)
    for i, fault in enumerate(faults):
        faults_of[fault.vehicle_id].append(i)

    verdicts: list[Verdict] = []
    first_alert: dict[int, int] = {}
    caught: set[int] = set()
    for alert in alerts:
        own_events, own_faults = events_of.get(alert.vehicle_id, []), faults_of.get(alert.vehicle_id, [])
        verdict = judge_alert(alert, [events[i] for i in own_events], [faults[i] for i in own_faults], rules,
                              own_events, own_faults)
        verdicts.append(verdict)
        for i in verdict.events:
            first_alert[i] = min(first_alert.get(i, alert.ts_ms), int(alert.ts_ms))
        caught.update(verdict.faults)

    def observed(vehicle_id: str) -> tuple[int, int] | None:
        return None if observations is None else observations.get(vehicle_id)

    scored_events = [i for i, e in enumerate(events)
                     if observations is None or ((span := observed(e.vehicle_id)) is not None
                                                 and span[0] < e.failure_ms <= span[1])]
    by_mode: dict[str, ModeSummary] = {}
    leads: list[int] = []
    for i in scored_events:
        summary = by_mode.setdefault(events[i].mode, ModeSummary())
        summary.events += 1
        if i in first_alert:
            lead = int(events[i].failure_ms - first_alert[i])
            summary.detected += 1
            summary.leads_ms.append(lead)
            leads.append(lead)

    scored_faults = [i for i, f in enumerate(faults)
                     if observations is None or ((span := observed(f.vehicle_id)) is not None
                                                 and f.start_ms <= span[1] and f.end_ms + rules.window_ms > span[0])]
    by_kind: dict[str, tuple[int, int]] = {}
    for i in scored_faults:
        n, k = by_kind.get(faults[i].kind, (0, 0))
        by_kind[faults[i].kind] = (n + 1, k + int(i in caught))

    if observations is None:
        healthy_days = float("nan")
    else:
        total = sum(healthy_ms(start, end, [events[i] for i in events_of.get(v, [])],
                               [faults[i] for i in faults_of.get(v, [])], rules)
                    for v, (start, end) in observations.items())
        healthy_days = total / MS_PER_DAY
    return Judgement(
        verdicts=verdicts, events=len(scored_events), detected=len(leads), leads_ms=leads, first_alert_ms=first_alert,
        by_mode=by_mode, faults=len(scored_faults), faults_caught=sum(int(i in caught) for i in scored_faults),
        faults_by_kind=dict(sorted(by_kind.items())),
        false_alarms=sum(v.outcome == FALSE_ALARM for v in verdicts), healthy_vehicle_days=healthy_days,
    )
