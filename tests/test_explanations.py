"""Alert explanations: the knowledge corpus, offline embedding, LanceDB hybrid retrieval, refusal."""
from __future__ import annotations

import numpy as np
import pytest

from serving.embedding import SignalTextEmbedder, fields_of_feature, signal_words
from serving.explanations import (
    SECTIONS,
    AlertEvidence,
    ExplanationIndex,
    evidence_from_alert,
    load_knowledge,
    parse_document,
    rrf_fuse,
)
from simulation.failures import FAILURE_MODES


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ExplanationIndex:
    return ExplanationIndex(tmp_path_factory.mktemp("explain"))


def _alert(alert_id: str, evidence: dict, summary: str = "", kind: str = "anomaly", mode: str = "") -> AlertEvidence:
    return AlertEvidence(alert_id=alert_id, vehicle_id="EV-1", ts_ms=0, kind=kind, evidence=evidence,
                         summary=summary, mode=mode)


def test_the_corpus_covers_every_failure_mode_and_sensor_fault_kind_in_full_documents() -> None:
    documents = load_knowledge()
    causes = {d.cause for d in documents}
    assert set(FAILURE_MODES) <= causes
    assert {f"sensor_{k}" for k in ("stuck", "drift", "dropout", "spike", "out_of_range")} <= causes
    for doc in documents:
        assert set(SECTIONS) <= set(doc.sections)
        # documents, not one line: symptoms and checks are paragraphs
        assert len(doc.sections["symptoms"].split()) >= 40 and len(doc.sections["checks"].split()) >= 30, doc.doc_id
        assert all(f in SignalTextEmbedder().field_names for f in doc.signals), doc.doc_id


def test_a_document_without_its_sections_is_refused_with_the_missing_names() -> None:
    with pytest.raises(ValueError, match="checks"):
        parse_document("---\nid: a\nkind: failure_mode\ncause: a\ntitle: A\n---\n## Symptoms\nx\n", "bad.md")
    with pytest.raises(ValueError, match="kind='engine'"):
        parse_document("---\nid: a\nkind: engine\ncause: a\ntitle: A\n---\n", "bad.md")


@pytest.mark.parametrize("doc", [d for d in load_knowledge() if d.signals], ids=lambda d: d.doc_id)
def test_each_failure_signature_retrieves_its_own_mode_first(index: ExplanationIndex, doc) -> None:
    explanation = index.explain(_alert("a-" + doc.cause, dict(doc.signals)))
    assert explanation.likely_mode == doc.cause
    assert explanation.matches[0].passages[-1].passage_id == f"{doc.doc_id}#recommended_check"


def test_feature_names_count_towards_their_signals(index: ExplanationIndex) -> None:
    evidence = {"coolant_flow_mean_delta": -3.0, "coolant_temp_out_max": 2.0, "soc_mean": 0.1}
    explanation = index.explain(_alert("a1", evidence))
    assert explanation.likely_mode == "coolant_pump"
    assert set(explanation.matches[0].matched_fields) == {"coolant_flow", "coolant_temp_out"}


def test_a_single_tyre_losing_pressure_reads_as_a_slow_leak(index: ExplanationIndex) -> None:
    assert index.explain(_alert("a2", {"tyre_pressure_rl_min": -4.0})).likely_mode == "tyre_slow_leak"


def test_text_alone_finds_a_sensor_fault_through_the_full_text_index(index: ExplanationIndex) -> None:
    explanation = index.explain(_alert("a3", {}, "sensor reports the same value, frozen flat line", kind="sensor_fault"))
    assert explanation.likely_mode == "sensor_stuck"
    assert "text" in explanation.matches[0].retrievers


def test_the_twins_sensor_fault_message_reads_as_a_missing_or_impossible_value(index: ExplanationIndex) -> None:
    explanation = index.explain(_alert("a5", {"cell_temp_max": 1.0}, "impossible or missing values on cell_temp_max",
                                       kind="sensor_fault"))
    assert {m.mode for m in explanation.matches[:2]} & {"sensor_out_of_range", "sensor_dropout"}


def test_no_evidence_gives_no_supported_explanation(index: ExplanationIndex) -> None:
    explanation = index.explain(_alert("a6", {}, ""))
    assert not explanation.supported and explanation.likely_mode is None
    assert "No supported explanation" in explanation.text()


def test_evidence_the_corpus_does_not_cover_is_not_guessed(index: ExplanationIndex) -> None:
    # soc and speed are named by no document's signature: whatever ranks first must not reach support
    explanation = index.explain(_alert("a7", {"soc": 1.0, "speed": 0.5}))
    assert not explanation.supported
    assert "No supported explanation" in explanation.text()


def test_drivers_on_fields_the_vehicle_does_not_send_are_not_evidence(index: ExplanationIndex) -> None:
    alert = _alert("a8", {"coolant_flow_mean": -1.0, "tyre_pressure_rl_min": -0.9})
    sent = set(SignalTextEmbedder().field_names) - {"coolant_flow"}
    explanation = index.explain(alert, sent_fields=sent)
    assert explanation.likely_mode == "tyre_slow_leak"
    assert [d.sent for d in explanation.mapped_drivers] == [False, True]
    assert "coolant_flow_mean" in explanation.text()  # named as not used


def test_past_alerts_are_retrieved_with_their_outcomes(tmp_path) -> None:
    index = ExplanationIndex(tmp_path / "idx")
    index.remember(_alert("old-1", {"coolant_flow": -2.0, "coolant_temp_out": 1.0}), "coolant_pump")
    index.remember(_alert("old-2", {"aux_battery_voltage": -1.0}), "false_alarm")
    explanation = index.explain(_alert("new", {"coolant_flow": -1.5, "coolant_temp_out": 1.2}), similar=1)
    assert [a.alert_id for a in explanation.similar_alerts] == ["old-1"]
    assert [a.alert_id for a in explanation.matches[0].similar] == ["old-1"]
    assert "history" in explanation.matches[0].retrievers
    assert "coolant_pump" in explanation.text()
    reopened = ExplanationIndex(tmp_path / "idx")
    assert reopened.count_alerts() == 2


def test_history_outvotes_an_ambiguous_signature(tmp_path) -> None:
    # motor_temp alone sits between bearing wear and (through the words) the inverter; ten confirmed bearing
    # failures with the same evidence move bearing wear up
    index = ExplanationIndex(tmp_path / "idx", retrievers=("signals", "history"))
    evidence = {"motor_temp": 1.0, "motor_torque": 0.6}
    index.remember_many([(_alert(f"p{i}", evidence), "motor_bearing") for i in range(10)])
    explanation = index.explain(_alert("q", evidence))
    assert explanation.likely_mode == "motor_bearing"
    assert explanation.matches[0].support == pytest.approx(1.0)


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


def test_a_changed_corpus_rebuilds_the_passages(tmp_path) -> None:
    documents = load_knowledge()
    ExplanationIndex(tmp_path / "idx", knowledge=documents[:3])
    index = ExplanationIndex(tmp_path / "idx", knowledge=documents)
    assert index._passages_table.count_rows() == sum(len(d.sections) for d in documents)


def test_unknown_retriever_and_bad_support_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="retrievers=\\['bm25'\\]"):
        ExplanationIndex(tmp_path / "idx", retrievers=("bm25",))
    with pytest.raises(ValueError, match="min_support=1.5"):
        ExplanationIndex(tmp_path / "idx", min_support=1.5)


def test_explanation_text_names_drivers_cites_passages_and_action(index: ExplanationIndex) -> None:
    text = index.explain(_alert("a4", {"brake_pad_wear": 2.0, "brake_temp": 1.0})).text()
    assert "brake_pad_wear" in text and "caliper" in text and "mode/brake_wear#" in text


def test_the_suspected_mode_of_the_failure_model_counts_as_a_retriever(index: ExplanationIndex) -> None:
    explanation = index.explain(_alert("a9", {"motor_temp": 1.0}, mode="inverter_overheat"))
    inverter = next(m for m in explanation.matches if m.mode == "inverter_overheat")
    assert "predicted" in inverter.retrievers


def test_rrf_rewards_agreement() -> None:
    fused = rrf_fuse({"a": ["x", "y", "z"], "b": ["y", "x"], "c": ["y"]})
    assert list(fused) == ["y", "x", "z"] and fused["y"] < 1.0
    assert rrf_fuse({}) == {} and rrf_fuse({"a": ["x"], "b": []}) == {"x": 1.0}  # an empty ranking abstains


def test_embedding_ignores_non_finite_evidence() -> None:
    vector = SignalTextEmbedder().embed({"soc": float("nan"), "coolant_flow": 1.0}, "")
    assert np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-5


def test_signal_words_name_the_fields_behind_features() -> None:
    assert signal_words({"flow_per_pump_krpm_ema1d": 2.0, "inverter_temp_max": 1.0}) == \
        "coolant flow pump speed inverter temp"


def test_unknown_feature_maps_to_no_field() -> None:
    assert fields_of_feature("zzz_unknown") == ()


def test_an_alert_dict_from_the_wire_becomes_evidence(index: ExplanationIndex) -> None:
    alert = {"alert_id": "w1", "vehicle_id": "EV-9", "ts_ms": 5, "rule": "anomaly", "message": "", "mode": None,
             "signals": [("coolant_flow_mean", 0.4), ("coolant_temp_out_max", 0.3)]}
    evidence = evidence_from_alert(alert)
    assert evidence.kind == "anomaly" and evidence.evidence["coolant_flow_mean"] == 0.4 and evidence.mode == ""
    assert index.explain(evidence).likely_mode == "coolant_pump"


def test_a_cause_covering_too_little_of_the_evidence_is_not_an_explanation(index: ExplanationIndex) -> None:
    # most of the evidence sits on fields no failure mode names: coolant pump ranks first, but explains 10 %
    explanation = index.explain(_alert("c1", {"soc": 0.5, "insulation_resistance": 0.4, "coolant_flow": 0.1}))
    assert explanation.matches[0].mode == "coolant_pump"
    assert explanation.matches[0].coverage == pytest.approx(0.1)
    assert not explanation.supported
    covered = index.explain(_alert("c2", {"soc": 0.2, "coolant_flow": 0.5, "coolant_temp_out": 0.3}))
    assert covered.supported and covered.matches[0].coverage == pytest.approx(0.8)


def test_weights_shift_the_fusion_towards_the_structured_evidence() -> None:
    rankings = {"signals": ["a", "b"], "text": ["b", "a"]}
    assert list(rrf_fuse(rankings, weights={"signals": 1.0, "text": 0.5}))[0] == "a"
    assert list(rrf_fuse(rankings, weights={"signals": 0.5, "text": 1.0}))[0] == "b"


def test_a_sensor_fault_explains_an_anomaly_only_as_far_as_one_field_carries_it(index: ExplanationIndex) -> None:
    spread = index.explain(_alert("s1", {"soc": 0.4, "speed": 0.3, "ambient_temp": 0.3}, "flat line frozen"))
    stuck = next(m for m in spread.matches if m.mode == "sensor_stuck")
    assert stuck.coverage == pytest.approx(0.4)
    single = index.explain(_alert("s2", {"motor_temp": 0.9, "soc": 0.1}, "frozen flat line same value"))
    assert next(m for m in single.matches if m.mode == "sensor_stuck").coverage == pytest.approx(0.9)


def test_distant_past_alerts_are_not_called_similar(tmp_path) -> None:
    index = ExplanationIndex(tmp_path / "idx")
    index.remember(_alert("far", {"aux_battery_voltage": -1.0}), "aux_battery")
    assert index.explain(_alert("q", {"tyre_pressure_rl_min": -1.0})).similar_alerts == []


def test_past_alerts_get_an_ann_index_and_are_still_found(tmp_path) -> None:
    index = ExplanationIndex(tmp_path / "idx")
    rng = np.random.default_rng(0)
    fields = ["motor_temp", "inverter_temp", "coolant_flow", "brake_temp", "soc", "aux_battery_voltage"]
    rows = [(_alert(f"p{i}", {f: float(rng.random()) for f in fields}), "false_alarm") for i in range(600)]
    rows.append((_alert("target", {"tyre_pressure_rl_min": -1.0}), "tyre_slow_leak"))
    index.remember_many(rows)
    assert not index.index_alerts(min_rows=10_000)
    assert index.index_alerts(min_rows=500)
    explanation = index.explain(_alert("q", {"tyre_pressure_rl_min": -0.8}))
    assert explanation.similar_alerts[0].alert_id == "target"


def test_the_optional_sentence_model_ranks_passages_through_lancedb(tmp_path) -> None:
    pytest.importorskip("static_model", reason="optional: tokenlearn-static-model is not a dependency (no licence)")
    from serving.embedding import StaticSentenceEmbedder

    model = StaticSentenceEmbedder()
    vectors = model.embed_texts(["coolant pump delivers less flow", "the pump flow falls", "tyre loses pressure"])
    assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    index = ExplanationIndex(tmp_path / "idx", text_model=model, retrievers=("model",))
    for query, cause in (("coolant pump flow falls", "coolant_pump"), ("12 V battery weak, car does not start", "aux_battery")):
        explanation = index.explain(_alert("m1", {}, query))
        assert explanation.matches[0].mode == cause and explanation.matches[0].retrievers == ("model",)


def test_without_the_optional_package_the_sentence_model_says_how_to_install_it(monkeypatch) -> None:
    from serving import embedding

    monkeypatch.setattr(embedding, "static_model_installed", lambda: False)
    with pytest.raises(RuntimeError, match="tokenlearn-static-model==0.1.1"):
        embedding.StaticSentenceEmbedder()
