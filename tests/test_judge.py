"""The one ground-truth judge (training.judge): a hand-built case per rule, and invariants by hypothesis."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.settings import load_config
from training.alerting import AlertPolicy, alert_indices
from training.detectors import VehicleBlock, alert_outcome
from training.judge import (
    FAILURE,
    FALSE_ALARM,
    SENSOR_FAULT,
    UNJUDGED,
    AlertCall,
    FailureEvent,
    JudgeRules,
    SensorFaultEpisode,
    healthy_ms,
    judge,
)
from training.labels import VehicleEvents, vehicle_labels

H = 3_600_000
D = 24 * H
RULES = JudgeRules(window_ms=H, risk_horizon_ms=7 * D, post_failure_ms=3 * D)
EVENT = FailureEvent("a", onset_ms=20 * D, failure_ms=30 * D, mode="coolant_pump")
FAULT = SensorFaultEpisode("b", start_ms=10 * D, end_ms=11 * D, kind="stuck")
OBSERVED = {"a": (0, 60 * D), "b": (0, 60 * D), "c": (0, 60 * D)}


def one(alert: AlertCall, events=(EVENT,), faults=(FAULT,)):
    return judge([alert], list(events), list(faults), RULES, OBSERVED)


def test_anomaly_before_onset_is_a_false_alarm_and_detects_nothing() -> None:
    result = one(AlertCall("a", 19 * D, "anomaly"))
    assert result.verdicts[0].outcome == FALSE_ALARM
    assert (result.events, result.detected, result.false_alarms) == (1, 0, 1)


def test_anomaly_between_onset_and_failure_detects_with_lead_to_failure() -> None:
    result = one(AlertCall("a", 25 * D, "anomaly"))
    verdict = result.verdicts[0]
    assert (verdict.outcome, verdict.events, verdict.lead_ms) == (FAILURE, (0,), 5 * D)
    assert result.event_recall == 1.0 and result.lead_median_days == 5.0 and result.false_alarms == 0


def test_onset_and_failure_instants_are_inside() -> None:
    result = judge([AlertCall("a", 20 * D, "anomaly"), AlertCall("a", 30 * D, "anomaly")], [EVENT], [], RULES)
    assert [v.outcome for v in result.verdicts] == [FAILURE, FAILURE]
    assert result.leads_ms == [10 * D]


def test_alert_after_failure_is_unjudged_during_repair_then_false() -> None:
    result = one(AlertCall("a", 31 * D, "anomaly"))
    assert result.verdicts[0].outcome == UNJUDGED and result.detected == 0 and result.false_alarms == 0
    later = one(AlertCall("a", 30 * D + 3 * D + H, "anomaly"))  # repair and the last window are over
    assert later.verdicts[0].outcome == FALSE_ALARM


def test_failure_risk_inside_its_horizon_before_onset_is_a_true_prediction() -> None:
    early = one(AlertCall("a", 24 * D, "failure_risk"))  # onset 20 d is before; failure 6 d ahead
    assert early.verdicts[0].outcome == FAILURE and early.verdicts[0].lead_ms == 6 * D
    before_onset = judge([AlertCall("a", 35 * D, "failure_risk")],
                         [FailureEvent("a", onset_ms=40 * D, failure_ms=41 * D)], [], RULES)
    assert before_onset.verdicts[0].outcome == FAILURE and before_onset.detected == 1
    too_early = judge([AlertCall("a", 33 * D, "failure_risk")],
                      [FailureEvent("a", onset_ms=40 * D, failure_ms=41 * D)], [], RULES)
    assert too_early.verdicts[0].outcome == FALSE_ALARM
    anomaly_ahead = judge([AlertCall("a", 35 * D, "anomaly")],
                          [FailureEvent("a", onset_ms=40 * D, failure_ms=41 * D)], [], RULES)
    assert anomaly_ahead.verdicts[0].outcome == FALSE_ALARM  # only risk alerts predict


def test_sensor_fault_overlap_counts_the_evidence_window() -> None:
    inside = one(AlertCall("b", 10 * D + H, "sensor_fault"))
    assert inside.verdicts[0].outcome == SENSOR_FAULT and inside.verdicts[0].faults == (0,)
    tail = one(AlertCall("b", 11 * D + H - 1, "anomaly"))  # window (t - 1 h, t] still overlaps the fault
    assert tail.verdicts[0].outcome == SENSOR_FAULT
    after = one(AlertCall("b", 11 * D + H, "sensor_fault"))
    assert after.verdicts[0].outcome == FALSE_ALARM
    before = one(AlertCall("b", 10 * D - 1, "sensor_fault"))
    assert before.verdicts[0].outcome == FALSE_ALARM
    assert (inside.faults, inside.faults_caught, inside.sensor_fault_recall) == (1, 1, 1.0)
    assert inside.faults_by_kind == {"stuck": (1, 1)} and after.sensor_fault_recall == 0.0


def test_risk_alert_in_a_sensor_fault_is_not_true_but_not_a_false_alarm_either() -> None:
    result = one(AlertCall("b", 10 * D + H, "failure_risk"))
    assert result.verdicts[0].outcome == UNJUDGED and result.faults_caught == 0


def test_anomaly_alert_in_a_degradation_and_a_fault_counts_for_both() -> None:
    overlapping = SensorFaultEpisode("a", start_ms=24 * D, end_ms=26 * D, kind="drift")
    result = judge([AlertCall("a", 25 * D, "anomaly")], [EVENT], [overlapping], RULES, OBSERVED)
    assert result.verdicts[0].outcome == FAILURE and result.verdicts[0].faults == (0,)
    assert (result.detected, result.faults_caught) == (1, 1)


def test_sensor_fault_alert_during_a_degradation_does_not_detect_the_failure() -> None:
    result = one(AlertCall("a", 25 * D, "sensor_fault"))
    assert result.verdicts[0].outcome == UNJUDGED and result.detected == 0


def test_healthy_vehicle_alerts_are_false_alarms_per_healthy_day() -> None:
    result = judge([AlertCall("c", 5 * D, "anomaly"), AlertCall("c", 6 * D, "sensor_fault")], [EVENT], [FAULT], RULES,
                   {"c": (0, 50 * D)})
    assert result.false_alarms == 2 and result.healthy_vehicle_days == 50.0
    assert result.false_alarms_per_100_vehicle_days == pytest.approx(4.0)
    assert result.events == 0 and math.isnan(result.event_recall)


def test_healthy_time_excludes_degradation_repair_and_faults() -> None:
    # Vehicle a over 60 d: degradation + repair + last window [20 d, 33 d + 1 h) is not healthy.
    assert healthy_ms(0, 60 * D, [EVENT], [], RULES) == 60 * D - 13 * D - H
    assert healthy_ms(0, 60 * D, [], [FAULT], RULES) == 59 * D - H
    assert healthy_ms(25 * D, 26 * D, [EVENT], [], RULES) == 0


def test_several_alerts_for_one_event_count_it_once_with_the_earliest_lead() -> None:
    alerts = [AlertCall("a", t * D, "anomaly") for t in (28, 22, 25)] + [AlertCall("a", 23 * D, "failure_risk")]
    result = judge(alerts, [EVENT], [], RULES, OBSERVED)
    assert all(v.outcome == FAILURE for v in result.verdicts)
    assert (result.events, result.detected, result.leads_ms) == (1, 1, [8 * D])
    assert result.by_mode["coolant_pump"].detected == 1
    assert result.by_rule(("anomaly", "sensor_fault"))["anomaly"] == {"alerts": 3, "true": 3, "false": 0,
                                                                       "unjudged": 0}


def test_failures_outside_the_observation_are_not_scored() -> None:
    result = judge([AlertCall("a", 25 * D, "anomaly")], [EVENT], [], RULES, {"a": (0, 29 * D)})
    assert result.verdicts[0].outcome == FAILURE and result.events == 0 and result.detected == 0
    unobserved_vehicle = judge([], [EVENT], [FAULT], RULES, {"c": (0, 60 * D)})
    assert (unobserved_vehicle.events, unobserved_vehicle.faults) == (0, 0)


def test_alerts_only_match_their_own_vehicle() -> None:
    result = one(AlertCall("c", 25 * D, "anomaly"))
    assert result.verdicts[0].outcome == FALSE_ALARM and result.detected == 0


def test_bad_intervals_are_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match="failure_ms"):
        FailureEvent("a", onset_ms=10, failure_ms=5)
    with pytest.raises(ValueError, match="end_ms"):
        SensorFaultEpisode("a", start_ms=10, end_ms=5)
    with pytest.raises(ValueError, match="window_ms"):
        JudgeRules(window_ms=-1, risk_horizon_ms=0)


# --- invariants -------------------------------------------------------------------------------------
VEHICLES = ("a", "b", "c")
times = st.integers(min_value=0, max_value=100 * D)
alerts_st = st.lists(st.builds(AlertCall, st.sampled_from(VEHICLES), times,
                               st.sampled_from(("anomaly", "sensor_fault", "failure_risk"))), max_size=25)


@st.composite
def failure_events(draw) -> FailureEvent:
    onset = draw(times)
    return FailureEvent(draw(st.sampled_from(VEHICLES)), onset, onset + draw(st.integers(0, 20 * D)),
                        draw(st.sampled_from(("m1", "m2"))))


@st.composite
def fault_episodes(draw) -> SensorFaultEpisode:
    start = draw(times)
    return SensorFaultEpisode(draw(st.sampled_from(VEHICLES)), start, start + draw(st.integers(0, 2 * D)), "k")


@settings(max_examples=150, deadline=None)
@given(alerts_st, st.lists(failure_events(), max_size=6), st.lists(fault_episodes(), max_size=4),
       st.builds(AlertCall, st.sampled_from(VEHICLES), times, st.sampled_from(("anomaly", "sensor_fault",
                                                                                 "failure_risk"))))
def test_invariants_recall_bounds_once_per_event_and_false_alarms_never_help(alerts, events, faults, extra) -> None:
    observed = {v: (-1, 120 * D) for v in VEHICLES}  # every failure (at 0 to 120 d) is inside
    result = judge(alerts, events, faults, RULES, observed)
    assert 0 <= result.detected <= result.events == len(events)
    assert len(result.leads_ms) == result.detected and all(lead >= 0 for lead in result.leads_ms)
    if result.events:
        assert 0.0 <= result.event_recall <= 1.0
    assert sum(m.detected for m in result.by_mode.values()) == result.detected
    assert result.false_alarms + sum(v.true for v in result.verdicts) <= len(alerts)
    assert 0 <= result.healthy_vehicle_days <= 3 * (120 * D + 1) / D
    # Adding one alert never lowers recall or caught faults; if it is a false alarm it raises nothing else.
    more = judge(alerts + [extra], events, faults, RULES, observed)
    assert more.detected >= result.detected and more.faults_caught >= result.faults_caught
    if more.verdicts[-1].outcome == FALSE_ALARM:
        assert (more.detected, more.faults_caught, more.leads_ms) == (result.detected, result.faults_caught,
                                                                      result.leads_ms)
        assert more.false_alarms == result.false_alarms + 1
    # Order of alerts does not matter.
    reversed_result = judge(list(reversed(alerts)), events, faults, RULES, observed)
    assert (reversed_result.detected, reversed_result.leads_ms, reversed_result.false_alarms) == (
        result.detected, result.leads_ms, result.false_alarms)


def test_rules_from_the_config_are_the_labels_lengths() -> None:
    config = load_config(overrides=["labels.failure_horizons_days=[14, 7, 30]", "dataset.window_minutes=30",
                                    "labels.post_failure_grace_days=2"])
    assert JudgeRules.from_config(config) == JudgeRules(window_ms=30 * 60_000, risk_horizon_ms=7 * D,
                                                        post_failure_ms=2 * D)
    assert JudgeRules.from_config(config, window_ms=H).window_ms == H


# --- the judge agrees with the window labels that choose thresholds on validation ---------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 28 * 24), st.integers(0, 5 * 24)), max_size=3),
       st.lists(st.tuples(st.integers(0, 29 * 24), st.integers(0, 12)), max_size=3), st.integers(0, 2**31 - 1))
def test_false_alarms_and_detections_match_the_window_labels(failures, faults, seed) -> None:
    stride = window = H
    ends = np.arange(1, 30 * 24 + 1, dtype=np.int64) * stride
    truth_events = [FailureEvent("v", (f - d) * H + 7, f * H + 7, "m") for f, d in failures if f - d >= 0]
    truth_faults = [SensorFaultEpisode("v", s * H + 11, (s + d) * H + 11, "k") for s, d in faults]
    ground_truth = VehicleEvents.build([(e.onset_ms, e.failure_ms, "m", 1) for e in truth_events],
                                       [(f.start_ms, f.end_ms) for f in truth_faults])
    labels = vehicle_labels(ends, window, ground_truth, (7,), int(ends[-1]), post_failure_ms=RULES.post_failure_ms)
    anomaly = labels["anomaly"].astype(bool)
    healthy = ~anomaly & ~labels["post_failure"].astype(bool)
    observed = [(e.onset_ms, e.failure_ms, e.mode) for e in truth_events if ends[0] < e.failure_ms <= ends[-1] + stride]
    block = VehicleBlock("v", ends, np.zeros((ends.size, 1)), healthy, anomaly, observed)
    scores = np.random.default_rng(seed).random(ends.size)
    policy = lambda threshold: AlertPolicy(threshold, consecutive=1, clear_ratio=1.0, cooldown_ms=0)  # noqa: E731
    windows = alert_outcome([block], {"v": scores}, 0.7, policy, stride)

    alerts = [AlertCall("v", int(t), "anomaly") for t in ends[alert_indices(ends, scores, policy(0.7))]]
    result = judge(alerts, truth_events, truth_faults, RULES, {"v": (int(ends[0]), int(ends[-1]) + stride)})
    assert result.false_alarms == windows.false_alarms
    assert (result.events, result.detected) == (windows.events, windows.detected)
    assert result.leads_days == pytest.approx(windows.leads_days)
    # Healthy time as an interval vs whole healthy windows: they differ by at most a window per boundary.
    boundaries = 2 * (len(truth_events) + len(truth_faults))
    assert abs(result.healthy_vehicle_days - windows.healthy_days) <= boundaries * stride / D + 1e-9
