"""Judging fleet-run alerts against ground truth (twins.evaluation)."""
from __future__ import annotations

from twins.evaluation import score_alerts
from twins.types import Alert

H = 3_600_000


def alert(vehicle: str, rule: str, ts: int) -> Alert:
    return Alert(f"{vehicle}{rule}{ts}", vehicle, rule, ts_ms=ts, seq=ts, score=1.0, signals=(), message="")


EVENTS = [{"vehicle_id": "a", "mode": "coolant_pump", "onset_ms": 10 * H, "failure_ms": 100 * H},
          {"vehicle_id": "b", "mode": "brake_wear", "onset_ms": 50 * H, "failure_ms": 60 * H}]
FAULTS = [{"vehicle_id": "c", "start_ms": 5 * H, "end_ms": 6 * H}]


def test_anomalies_inside_onset_to_failure_are_true_and_give_lead_times() -> None:
    report = score_alerts([alert("a", "anomaly", 40 * H), alert("a", "anomaly", 70 * H), alert("a", "anomaly", 5 * H)],
                          EVENTS, FAULTS, risk_horizon_ms=7 * 24 * H)
    assert report["by_rule"]["anomaly"] == {"alerts": 3, "true": 2, "false": 1, "unjudged": 0}
    assert report["by_mode"]["coolant_pump"]["detected"] == 1 and report["lead_times_ms"] == [60 * H]
    assert report["by_mode"]["brake_wear"]["detected"] == 0 and report["detected"] == 1 and report["events"] == 2


def test_sensor_fault_alerts_need_a_fault_and_risk_alerts_a_failure_ahead() -> None:
    alerts = [alert("c", "sensor_fault", 6 * H + 1000), alert("a", "sensor_fault", 5 * H),
              alert("b", "failure_risk", 20 * H), alert("b", "failure_risk", 10 * H)]
    report = score_alerts(alerts, EVENTS, FAULTS, risk_horizon_ms=48 * H, slack_ms=H)
    assert report["by_rule"]["sensor_fault"] == {"alerts": 2, "true": 1, "false": 1, "unjudged": 0}
    assert report["by_rule"]["failure_risk"] == {"alerts": 2, "true": 1, "false": 1, "unjudged": 0}


def test_failures_after_the_observation_are_not_counted() -> None:
    assert score_alerts([], EVENTS, [], risk_horizon_ms=H, end_ms=20 * H)["events"] == 0
    assert score_alerts([], EVENTS, [], risk_horizon_ms=H, end_ms=70 * H)["events"] == 1  # b fails at 60 h


def test_false_alarm_rate_over_the_healthy_time_of_the_run() -> None:
    report = score_alerts([alert("c", "anomaly", 30 * H), alert("a", "anomaly", 101 * H)], EVENTS, FAULTS,
                          risk_horizon_ms=H, slack_ms=H, start_ms=0, end_ms=200 * H, vehicles=["a", "b", "c"],
                          post_failure_ms=2 * H)
    # a: 200 h - [10 h, 103 h); b: 200 h - [50 h, 63 h); c: 200 h - [5 h, 7 h); the alert at 101 h is repair time.
    assert report["by_rule"]["anomaly"] == {"alerts": 2, "true": 0, "false": 1, "unjudged": 1}
    healthy_days = (107 + 187 + 198) / 24
    assert report["false_alarms_per_100_vehicle_days"] == 100 / healthy_days
