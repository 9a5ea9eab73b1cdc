"""Resolved alerts feed the explanations index through the lifecycle log (serving.outcomes)."""
from __future__ import annotations

from pathlib import Path

from configs.alert_states import AlertStateLog
from serving.explanations import ExplanationIndex, evidence_from_alert
from serving.outcomes import OutcomeIndexer, remember_outcomes
from twins.types import Alert, Rule


def _alert(alert_id: str, signals: tuple[tuple[str, float], ...], rule: str = Rule.ANOMALY) -> Alert:
    return Alert(alert_id=alert_id, vehicle_id="V1", rule=rule, ts_ms=1_000, seq=1, score=2.0, signals=signals,
                 message="coolant temperature high")


def test_resolved_alerts_are_remembered_with_the_outcome_the_index_uses(tmp_path: Path) -> None:
    log = AlertStateLog(str(tmp_path / "ckpt"))
    log.subscribe(OutcomeIndexer(tmp_path / "explanations"))
    pump = _alert("a1", (("coolant_temp_out", 0.7), ("pump_speed", -0.3)))
    noise = _alert("a2", (("soc", 1.0),), rule=Rule.SENSOR_FAULT)
    log.change(pump, "acknowledge", by="ops", now_ms=1)  # not resolved: nothing remembered
    log.change(pump, "resolve", by="ops", now_ms=2, outcome="confirmed_failure", mode="coolant_pump")
    log.change(noise, "resolve", by="ops", now_ms=3, outcome="sensor_problem")
    index = ExplanationIndex(tmp_path / "explanations")
    assert index.count_alerts() == 2
    similar = index.explain(evidence_from_alert(_alert("new", (("coolant_temp_out", 0.8),)).to_dict())).similar_alerts
    assert similar[0].alert_id == "a1" and similar[0].outcome == "coolant_pump"
    like_noise = index.explain(evidence_from_alert(_alert("new2", (("soc", 0.9),), rule=Rule.SENSOR_FAULT).to_dict()))
    assert {s.alert_id: s.outcome for s in like_noise.similar_alerts}["a2"] == "sensor_fault"


def test_a_failing_listener_does_not_undo_the_change(tmp_path: Path) -> None:
    log = AlertStateLog(str(tmp_path))

    def broken(_alert: object, _state: object) -> None:
        raise OSError("index unavailable")

    log.subscribe(broken)
    alert = _alert("a1", (("soc", 1.0),))
    assert log.change(alert, "resolve", by="ops", now_ms=1, outcome="false_alarm").state == "resolved"
    assert AlertStateLog(str(tmp_path)).get(alert).outcome == "false_alarm"


def test_a_history_is_remembered_once_per_alert(tmp_path: Path) -> None:
    log = AlertStateLog(None)
    alerts = [_alert(f"h{i}", (("soc", 1.0),)) for i in range(3)]
    log.change(alerts[0], "resolve", by="ops", now_ms=1, outcome="false_alarm")
    log.change(alerts[1], "resolve", by="ops", now_ms=1, outcome="confirmed_failure", mode="cell_imbalance")
    index = ExplanationIndex(tmp_path / "idx")
    assert remember_outcomes(index, alerts, log.states()) == 2
    assert remember_outcomes(index, alerts, log.states()) == 2 and index.count_alerts() == 2  # replaced, not doubled
