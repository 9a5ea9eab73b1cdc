"""Alert explanations: offline embedding and LanceDB retrieval."""
from __future__ import annotations

import numpy as np
import pytest

from serving.embedding import SignalTextEmbedder, fields_of_feature
from serving.explanations import AlertEvidence, ExplanationIndex, load_knowledge


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ExplanationIndex:
    return ExplanationIndex(tmp_path_factory.mktemp("explain"))


def _alert(alert_id: str, evidence: dict, summary: str = "", kind: str = "anomaly") -> AlertEvidence:
    return AlertEvidence(alert_id=alert_id, vehicle_id="EV-1", ts_ms=0, kind=kind, evidence=evidence, summary=summary)


@pytest.mark.parametrize("entry", [e for e in load_knowledge() if e["signals"]], ids=lambda e: e["id"])
def test_each_failure_signature_retrieves_its_own_mode_first(index: ExplanationIndex, entry: dict) -> None:
    explanation = index.explain(_alert("a-" + entry["mode"], entry["signals"]))
    assert explanation.likely_mode == entry["mode"]


def test_feature_names_count_towards_their_signals(index: ExplanationIndex) -> None:
    evidence = {"coolant_flow_mean_delta": -3.0, "coolant_temp_out_max": 2.0, "soc_mean": 0.1}
    assert index.explain(_alert("a1", evidence)).likely_mode == "coolant_pump"


def test_a_single_tyre_losing_pressure_reads_as_a_slow_leak(index: ExplanationIndex) -> None:
    assert index.explain(_alert("a2", {"tyre_pressure_rl_min": -4.0})).likely_mode == "tyre_slow_leak"


def test_text_alone_finds_a_sensor_fault(index: ExplanationIndex) -> None:
    explanation = index.explain(_alert("a3", {}, "sensor reports the same value, stuck", kind="sensor_fault"))
    assert explanation.likely_mode == "sensor_stuck"


def test_past_alerts_are_retrieved_with_their_outcomes(tmp_path) -> None:
    index = ExplanationIndex(tmp_path / "idx")
    index.remember(_alert("old-1", {"coolant_flow": -2.0, "coolant_temp_out": 1.0}), "coolant_pump")
    index.remember(_alert("old-2", {"aux_battery_voltage": -1.0}), "false_alarm")
    explanation = index.explain(_alert("new", {"coolant_flow": -1.5, "coolant_temp_out": 1.2}), similar=1)
    assert [a.alert_id for a in explanation.similar_alerts] == ["old-1"]
    assert "coolant_pump" in explanation.text()
    reopened = ExplanationIndex(tmp_path / "idx")
    assert reopened.count_alerts() == 2


def test_remembering_the_same_alert_twice_keeps_one_row(tmp_path) -> None:
    index = ExplanationIndex(tmp_path / "idx")
    alert = _alert("dup", {"motor_temp": 1.0})
    index.remember(alert, "false_alarm")
    index.remember(alert, "motor_bearing")
    assert index.count_alerts() == 1
    assert index.explain(_alert("q", {"motor_temp": 1.0})).similar_alerts[0].outcome == "motor_bearing"


def test_alerts_built_with_another_embedder_are_refused(tmp_path) -> None:
    class OtherEmbedder(SignalTextEmbedder):
        version = "other-v0"

    ExplanationIndex(tmp_path / "idx", embedder=OtherEmbedder()).remember(_alert("x", {"soc": 1.0}), "false_alarm")
    with pytest.raises(ValueError, match="re-index"):
        ExplanationIndex(tmp_path / "idx").explain(_alert("y", {"soc": 1.0}))


def test_explanation_text_names_drivers_and_action(index: ExplanationIndex) -> None:
    text = index.explain(_alert("a4", {"brake_pad_wear": 2.0, "brake_temp": 1.0})).text()
    assert "brake_pad_wear" in text and "caliper" in text


def test_embedding_ignores_non_finite_evidence() -> None:
    vector = SignalTextEmbedder().embed({"soc": float("nan"), "coolant_flow": 1.0}, "")
    assert np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-5


def test_unknown_feature_maps_to_no_field() -> None:
    assert fields_of_feature("zzz_unknown") == ()


def test_an_alert_dict_from_the_wire_becomes_evidence(index: ExplanationIndex) -> None:
    from serving.explanations import evidence_from_alert

    alert = {"alert_id": "w1", "vehicle_id": "EV-9", "ts_ms": 5, "rule": "anomaly", "message": "",
             "signals": [("coolant_flow_mean", 0.4), ("coolant_temp_out_max", 0.3)]}
    evidence = evidence_from_alert(alert)
    assert evidence.kind == "anomaly" and evidence.evidence["coolant_flow_mean"] == 0.4
    assert index.explain(evidence).likely_mode == "coolant_pump"
