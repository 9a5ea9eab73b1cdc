"""The alert lifecycle log (configs.alert_states): transitions, durability, torn writes, the label CSV."""
from __future__ import annotations

from pathlib import Path

import pytest

from configs.alert_states import AlertRef, AlertStateLog, outcome_labels, read_outcome_labels, write_outcome_labels

A1 = AlertRef("a1", "V1", "failure_risk", 1_000)
A2 = AlertRef("a2", "V2", "anomaly", 500)
A3 = AlertRef("a3", "V3", "sensor_fault", 700)


def test_changes_survive_reopening_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = AlertStateLog(str(tmp_path))
    log.change(A1, "acknowledge", by="alice", now_ms=10)
    log.change(A1, "assign", by="alice", now_ms=11, assignee="carol")
    log.change(A2, "resolve", by="bob", now_ms=12, outcome="false_alarm", note="driver test")
    with (tmp_path / "alert_states.jsonl").open("ab") as out:
        out.write(b'{"alert_id": "a3", "state": "reso')  # a crash mid-write
    reopened = AlertStateLog(str(tmp_path))
    assert reopened.get(A1).state == "assigned" and reopened.get(A1).assignee == "carol"
    assert reopened.get(A2).outcome == "false_alarm" and reopened.get(A2).note == "driver test"
    assert reopened.get(A3).state == "open" and reopened.get(A3).updated_ms == 0
    assert (tmp_path / "alert_states.jsonl").stat().st_mode & 0o077 == 0  # operator notes: owner only
    # the torn line does not stop later changes from being appended and read
    reopened.change(A3, "acknowledge", by="x", now_ms=13)
    assert AlertStateLog(str(tmp_path)).get(A3).state == "acknowledged"


@pytest.mark.parametrize("action, fields, named", [
    ("close", {}, "action='close'"),
    ("assign", {"assignee": ""}, "assignee=''"),
    ("assign", {"assignee": "-x"}, "assignee='-x'"),
    ("resolve", {"outcome": "fixed"}, "outcome='fixed'"),
    ("resolve", {"outcome": "confirmed_failure"}, "mode=''"),
    ("resolve", {"outcome": "confirmed_failure", "mode": "Coolant Pump!"}, "mode='Coolant Pump!'"),
    ("resolve", {"outcome": "false_alarm", "mode": "coolant_pump"}, "mode='coolant_pump'"),
    ("acknowledge", {"note": "x" * 2001}, "note: 2001 characters"),
])
def test_bad_changes_are_refused_naming_the_field(action: str, fields: dict, named: str) -> None:
    log = AlertStateLog(None)
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        log.change(A1, action, by="alice", now_ms=1, **fields)
    assert log.get(A1).state == "open"  # nothing applied


def test_a_resolved_alert_is_final(tmp_path: Path) -> None:
    log = AlertStateLog(str(tmp_path))
    log.change(A1, "resolve", by="bob", now_ms=5, outcome="sensor_problem")
    for action, fields in (("acknowledge", {}), ("assign", {"assignee": "c"}), ("resolve", {"outcome": "false_alarm"})):
        with pytest.raises(ValueError, match="already resolved"):
            log.change(A1, action, by="bob", now_ms=6, **fields)
    assert len((tmp_path / "alert_states.jsonl").read_text().splitlines()) == 1


def test_outcomes_export_as_labels_positive_negative_and_unlabelled(tmp_path: Path) -> None:
    log = AlertStateLog(None)
    log.change(A1, "resolve", by="bob", now_ms=20, outcome="confirmed_failure", mode="hv_isolation", note='a "quoted", note')
    log.change(A2, "resolve", by="bob", now_ms=21, outcome="false_alarm")
    log.change(A3, "resolve", by="bob", now_ms=22, outcome="sensor_problem")
    log.change(AlertRef("a4", "V4", "anomaly", 1), "acknowledge", by="bob", now_ms=23)  # not resolved: no row
    assert [r["alert_id"] for r in outcome_labels(log.states())] == ["a2", "a3", "a1"]  # oldest alert first
    path = tmp_path / "out" / "labels.csv"
    assert write_outcome_labels(path, log.states()) == 3
    rows = {r["alert_id"]: r for r in read_outcome_labels(path)}
    assert (rows["a1"]["label"], rows["a2"]["label"], rows["a3"]["label"]) == (1, 0, None)
    assert rows["a1"]["mode"] == "hv_isolation" and rows["a1"]["note"] == 'a "quoted", note'
    assert rows["a1"]["ts_ms"] == 1_000 and rows["a1"]["resolved_ms"] == 20


def test_a_csv_that_is_not_a_label_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("vehicle_id,label\nV1,1\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_outcome_labels(path)
