"""Learning from a customer's own history (issue 12 item 9) and sensor-subset augmentation (item 3).

A run folder without events.parquet (an imported fleet) trains the plant, the anomaly model and the
baselines and says that failure models need labels; a maintenance-records CSV turns into failure events
and the failure models are trained too.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from configs.alert_states import LABEL_COLUMNS
from configs.runs import EVENTS_FILE, SENSOR_FAULTS_FILE
from configs.settings import load_config
from training.dataset import (
    AUGMENTED_SEPARATOR,
    SENSOR_SUBSYSTEMS,
    augmented_copies,
    onsets_after_false_alarms,
    prepare_dataset,
    read_maintenance_records,
    read_outcome_events,
)
from training.features import FEATURE_NAMES, STAT_SIGNALS

pytestmark = pytest.mark.slow

SMALL = ["simulation.num_vehicles=10", "simulation.duration_days_per_vehicle=21", "simulation.frame_interval_s=120",
         "simulation.levers.failure_rate_multiplier=3"]
FAST = ["training.lstm_epochs=1", "training.lightgbm_num_rounds=30", "training.lstm_max_train_sequences=2000"]
DAY = 86_400_000


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> dict:
    """A generated fleet, and a copy of it without ground truth (what `evtwin import` gives for a real fleet)."""
    from simulation.writer import write_run

    root = tmp_path_factory.mktemp("history")
    run = root / "fleet"
    write_run(load_config(overrides=SMALL), run, workers=1)
    bare = root / "bare"
    shutil.copytree(run, bare)
    (bare / EVENTS_FILE).unlink()
    (bare / SENSOR_FAULTS_FILE).unlink()
    return {"run": run, "bare": bare, "root": root}


def _records(run: Path, path: Path) -> int:
    events = pq.read_table(run / EVENTS_FILE).to_pylist()
    lines = ["vehicle,date,component"]
    for e in events:
        if e["observed"]:
            day = np.datetime64(int(e["failure_ms"]), "ms").astype("datetime64[D]")
            lines.append(f"{e['vehicle_id']},{day},{e['mode']}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def test_a_fleet_without_labels_trains_the_anomaly_path_and_says_failure_models_need_labels(history, capsys) -> None:
    from serving.cli import main

    bare = history["bare"]
    sets = [arg for o in FAST for arg in ("--set", o)]
    assert main(["prepare", "--run", str(bare), "--workers", "1"]) == 0
    assert main(["train", "--run", str(bare), *sets]) == 0
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())  # the console wraps long lines
    assert "failure models need labels" in said
    models = bare / "models"
    summary = json.loads((models / "training.json").read_text())
    assert "need labels" in summary["failure_models"]
    assert set(summary["metrics"]) == {"anomaly"}
    assert (models / "anomaly" / "meta.json").exists() and (models / "baselines.json").exists()
    assert not (models / "failure" / "meta.json").exists()
    assert any(fit["coefficients"] is not None for fit in summary["plant"].values())


def test_maintenance_records_become_events_and_train_the_failure_models(history, capsys) -> None:
    from serving.cli import main
    from training.artifacts import load_failure_model, load_plant

    bare, root = history["bare"], history["root"]
    csv = root / "maintenance.csv"
    count = _records(history["run"], csv)
    assert count > 0
    sets = [arg for o in FAST for arg in ("--set", o)]
    assert main(["prepare", "--run", str(bare), "--workers", "1", "--maintenance", str(csv)]) == 0
    card = json.loads((bare / "dataset" / "card.json").read_text())
    assert card["failure_labels"] and card["maintenance_records"] == str(csv)
    assert sum(card["positives"]["train"].values()) > 0
    assert main(["train", "--run", str(bare), *sets]) == 0
    summary = json.loads((bare / "models" / "training.json").read_text())
    assert summary["failure_models"] == "trained" and "failure" in summary["metrics"]
    model = load_failure_model(bare)
    test = pq.read_table(bare / "dataset" / "test.parquet")
    X = np.column_stack([test.column(n).to_numpy() for n in FEATURE_NAMES]).astype(np.float32)
    risk = model.predict(X[:5])
    assert all(r.shape == (5,) and np.isfinite(r).all() for r in risk.values())
    assert load_plant(bare) == model.plant


def test_maintenance_records_are_checked(history, tmp_path) -> None:
    vehicles = ["v1"]
    path = tmp_path / "m.csv"
    path.write_text("vehicle,date,component\nv1,2026-01-05,coolant_pump\n")
    table = read_maintenance_records(path, vehicles, 30, 10 * DAY)
    row = table.to_pylist()[0]
    assert row["failure_ms"] == int(np.datetime64("2026-01-05", "ms").astype(np.int64))
    assert row["onset_ms"] == row["failure_ms"] - 30 * DAY and row["severity"] == 2 and row["mode"] == "coolant_pump"
    path.write_text("vehicle,date,component\nv9,2026-01-05,coolant_pump\n")
    with pytest.raises(ValueError, match="row 1: vehicle='v9'"):
        read_maintenance_records(path, vehicles, 30, 0)
    path.write_text("vehicle,date,component\nv1,yesterday,coolant_pump\n")
    with pytest.raises(ValueError, match="date='yesterday'"):
        read_maintenance_records(path, vehicles, 30, 0)
    path.write_text("vehicle,when,component\nv1,2026-01-05,x\n")
    with pytest.raises(ValueError, match="missing \\['date'\\]"):
        read_maintenance_records(path, vehicles, 30, 0)
    path.write_text("vehicle,date,mode,severity\nv1,2026-01-05T10:00:00,x,7\n")
    with pytest.raises(ValueError, match="severity=7"):
        read_maintenance_records(path, vehicles, 30, 0)


def test_augmentation_adds_train_copies_without_a_subsystem(history) -> None:
    run = history["run"]
    cfg = load_config(overrides=["dataset.sensor_subset_augmentation=1.0"])
    card = prepare_dataset(run, cfg)
    copies = card["augmented_copies"]
    vehicles = pq.read_table(run / "dataset" / "vehicles.parquet").to_pylist()
    train = [v["vehicle_id"] for v in vehicles if v["split"] == "train"]
    assert len(copies) == len(train) and all(c.split(AUGMENTED_SEPARATOR)[0] in train for c in copies)
    table = pq.read_table(run / "dataset" / "train.parquet")
    ids = np.asarray(table.column("vehicle_id").to_pylist())
    copy = copies[0]
    dropped = copy.split(AUGMENTED_SEPARATOR)[1].split("+")
    assert all(d in SENSOR_SUBSYSTEMS for d in dropped)
    sensor = next(c for c in SENSOR_SUBSYSTEMS[dropped[0]] if c in STAT_SIGNALS)
    values = table.column(f"{sensor}_mean").to_numpy(zero_copy_only=False)
    assert np.isnan(values[ids == copy]).all() and np.isfinite(values[ids == copy.split(AUGMENTED_SEPARATOR)[0]]).any()
    # the copy keeps its source's labels
    y = table.column("y_7d").to_numpy()
    np.testing.assert_array_equal(y[ids == copy], y[ids == copy.split(AUGMENTED_SEPARATOR)[0]])
    # deterministic, and off by default
    assert augmented_copies(train, {v: "train" for v in train}, 1.0, cfg.seed) == \
        augmented_copies(train, {v: "train" for v in train}, 1.0, cfg.seed)
    assert augmented_copies(train, {v: "train" for v in train}, 0.0, cfg.seed) == []
    assert load_config().dataset.sensor_subset_augmentation == 0.0


def _outcome_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"alert_id": f"a{i}", "rule": "failure_risk", "mode": "", "label": "", "resolved_ms": 0,
                             "resolved_by": "ops", "note": "", **row})
    return path


def test_outcome_labels_are_checked_merged_and_move_guessed_onsets(tmp_path) -> None:
    path = _outcome_csv(tmp_path / "o.csv", [
        {"vehicle_id": "v1", "ts_ms": 40 * DAY, "outcome": "confirmed_failure", "mode": "coolant_pump", "label": 1},
        {"vehicle_id": "v1", "ts_ms": 41 * DAY, "outcome": "confirmed_failure", "mode": "coolant_pump", "label": 1},
        {"vehicle_id": "v1", "ts_ms": 25 * DAY, "outcome": "false_alarm", "label": 0},
        {"vehicle_id": "v2", "ts_ms": 30 * DAY, "outcome": "sensor_problem"},
    ])
    events, false_alarms, counts = read_outcome_events(path, ["v1", "v2"], 30, 50 * DAY)
    # two alerts of one pump failure a day apart are one failure, at the first alert
    assert events.to_pylist() == [{"vehicle_id": "v1", "mode": "coolant_pump", "onset_ms": 10 * DAY,
                                   "failure_ms": 40 * DAY, "severity": 2, "observed": True, "component": ""}]
    assert false_alarms == [("v1", 25 * DAY)]
    assert counts == {"confirmed_failure": 2, "false_alarm": 1, "sensor_problem": 1, "failure_events": 1}
    moved, count = onsets_after_false_alarms(events, false_alarms)
    assert count == 1 and moved.column("onset_ms").to_pylist() == [25 * DAY]  # healthy at day 25: onset after
    unmoved, count = onsets_after_false_alarms(events, [("v2", 25 * DAY), ("v1", 45 * DAY)])  # other vehicle; after
    assert count == 0 and unmoved.column("onset_ms").to_pylist() == [10 * DAY]

    _outcome_csv(path, [{"vehicle_id": "v9", "ts_ms": 1, "outcome": "false_alarm", "label": 0}])
    with pytest.raises(ValueError, match="row 1: vehicle_id='v9'"):
        read_outcome_events(path, ["v1"], 30, 0)
    _outcome_csv(path, [{"vehicle_id": "v1", "ts_ms": 1, "outcome": "confirmed_failure", "label": 1}])
    with pytest.raises(ValueError, match="confirmed_failure needs its mode"):
        read_outcome_events(path, ["v1"], 30, 0)
    _outcome_csv(path, [{"vehicle_id": "v1", "ts_ms": 1, "outcome": "fixed"}])
    with pytest.raises(ValueError, match="outcome='fixed'"):
        read_outcome_events(path, ["v1"], 30, 0)


def test_prepare_reads_outcome_labels_as_failure_events(history, tmp_path) -> None:
    from serving.cli import main

    bare = history["bare"]
    observed = [e for e in pq.read_table(history["run"] / EVENTS_FILE).to_pylist() if e["observed"]]
    assert observed
    # the twin alerted two days before each failure and the workshop confirmed it; one false alarm before the first
    first = observed[0]
    rows = [{"vehicle_id": e["vehicle_id"], "ts_ms": int(e["failure_ms"]) - 2 * DAY, "outcome": "confirmed_failure",
             "mode": e["mode"], "label": 1} for e in observed]
    rows.append({"vehicle_id": first["vehicle_id"], "ts_ms": int(first["failure_ms"]) - 10 * DAY,
                 "outcome": "false_alarm", "label": 0})
    path = _outcome_csv(tmp_path / "outcomes.csv", rows)
    assert main(["prepare", "--run", str(bare), "--workers", "1", "--outcome-labels", str(path)]) == 0
    card = json.loads((bare / "dataset" / "card.json").read_text())
    assert card["failure_labels"] and sum(card["positives"]["train"].values()) > 0
    assert card["outcome_labels"]["confirmed_failure"] == len(observed)
    assert 1 <= card["outcome_labels"]["failure_events"] <= len(observed)
    assert card["outcome_labels"]["false_alarm"] == 1 and card["outcome_labels"]["onsets_moved"] >= 1
    events = pq.read_table(bare / "dataset" / "events.parquet").to_pylist()
    moved = [e for e in events if e["vehicle_id"] == first["vehicle_id"]
             and e["failure_ms"] == int(first["failure_ms"]) - 2 * DAY]
    assert [e["onset_ms"] for e in moved] == [int(first["failure_ms"]) - 10 * DAY]
