"""The demo's judged lines and summary use the one judge (training.judge) with the same verdicts."""
from __future__ import annotations

from rich.console import Console

from serving.demo import GroundTruth, summary_table
from training.judge import AlertCall, FailureEvent, JudgeRules, SensorFaultEpisode, judge

H = 3_600_000
D = 24 * H
TRUTH = GroundTruth(failures={"a": [(20 * D, 30 * D, "coolant_pump")]}, faults={"b": [(10 * D, 11 * D, "soc")]},
                    horizon_ms=7 * D, window_ms=H, post_failure_ms=3 * D)
ALERTS = [
    {"vehicle_id": "a", "rule": "anomaly", "ts_ms": 25 * D},  # inside onset..failure
    {"vehicle_id": "a", "rule": "failure_risk", "ts_ms": 24 * D},  # 6 d ahead, inside the 7-day horizon
    {"vehicle_id": "a", "rule": "anomaly", "ts_ms": 15 * D},  # 15 d before failure, before onset
    {"vehicle_id": "a", "rule": "anomaly", "ts_ms": 31 * D},  # repair time after the failure
    {"vehicle_id": "b", "rule": "sensor_fault", "ts_ms": 10 * D + H},
    {"vehicle_id": "b", "rule": "anomaly", "ts_ms": 10 * D + 2 * H},  # a sensor fault, not a failure
]


def test_demo_verdicts_are_the_judges() -> None:
    assert TRUTH.judge(ALERTS[0]) == (True, "coolant_pump", 5.0)
    assert TRUTH.judge(ALERTS[1]) == (True, "coolant_pump", 6.0)
    assert TRUTH.judge(ALERTS[2]) == (False, "no failure or fault", None)  # was true under a 30-day match
    assert TRUTH.judge(ALERTS[3])[0] is False and TRUTH.judge(ALERTS[3])[1].startswith("not judged")
    assert TRUTH.judge(ALERTS[4]) == (True, "sensor fault soc", None)
    assert TRUTH.judge(ALERTS[5]) == (True, "sensor fault soc", None)  # was false before
    expected = judge([AlertCall(a["vehicle_id"], a["ts_ms"], a["rule"]) for a in ALERTS],
                     [FailureEvent("a", 20 * D, 30 * D, "coolant_pump")], [SensorFaultEpisode("b", 10 * D, 11 * D)],
                     JudgeRules(window_ms=H, risk_horizon_ms=7 * D, post_failure_ms=3 * D))
    assert [TRUTH.verdict(a).outcome for a in ALERTS] == [v.outcome for v in expected.verdicts]


def test_summary_counts_false_alarms_apart_from_unjudged_alerts_and_catches_failing_vehicles() -> None:
    table = summary_table(ALERTS, TRUTH, {"frames": 10, "elapsed_s": 1.0, "twins": ["a", "b"]})
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.count("│") == 6}
    assert rows["anomaly"] == ["4", "2", "1", "5.0"]
    assert rows["failure_risk"] == ["1", "1", "0", "6.0"]
    assert rows["sensor_fault"] == ["1", "1", "0", "-"]
    assert "failing vehicles caught 1/1" in text
