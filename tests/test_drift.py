"""Drift: PSI against the training reference, per input, per profile, offline command, alerts and metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.settings import load_config
from serving.drift import run_drift
from serving.report import collect_report_inputs, render_report
from training.dataset import DATASET_DIR
from training.drift import DEFAULT_ALERT_LEVEL, compare, compare_groups, psi, reference_summary, summarise, write_reference
from training.features import FEATURE_NAMES, FEATURES_HASH
from twins.store import AlertStore

F = len(FEATURE_NAMES)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = summarise(rng.normal(size=20_000))
    assert psi(ref, rng.normal(size=20_000)) < 0.01
    assert 0.1 < psi(ref, rng.normal(0.4, 1.0, size=20_000)) < DEFAULT_ALERT_LEVEL  # watch, no alert (PSI ~ shift^2)
    assert psi(ref, rng.normal(1.0, 1.0, size=20_000)) > DEFAULT_ALERT_LEVEL
    assert psi(ref, rng.normal(0.0, 3.0, size=20_000)) > DEFAULT_ALERT_LEVEL  # a spread change is drift too


def test_a_sensor_that_stops_reporting_is_drift() -> None:
    rng = np.random.default_rng(1)
    ref = summarise(rng.normal(size=10_000))
    live = rng.normal(size=10_000)
    live[:3000] = np.nan
    assert ref["missing"] == 0.0 and psi(ref, live) > DEFAULT_ALERT_LEVEL


def test_a_constant_input_compares_without_error() -> None:
    ref = summarise(np.zeros(100))
    assert ref["edges"] == [0.0] and psi(ref, np.zeros(50)) == pytest.approx(0.0, abs=1e-9)
    assert psi(ref, np.full(50, np.nan)) > DEFAULT_ALERT_LEVEL


def test_reference_refuses_a_matrix_in_another_feature_order() -> None:
    with pytest.raises(ValueError, match=r"X: shape \(10, 3\)"):
        reference_summary(np.zeros((10, 3)), ["a", "b"])


def test_groups_are_judged_separately() -> None:
    rng = np.random.default_rng(2)
    reference = reference_summary(rng.normal(size=(4000, 2)), ["a", "b"])
    live = rng.normal(size=(2000, 2))
    groups = np.array(["taxi/hot"] * 1000 + ["commuter/cold"] * 1000)
    live[:1000, 1] += 1.5  # only the hot taxis drift, on input b
    by_group = compare_groups(reference, live, ["a", "b"], groups)
    assert by_group["taxi/hot"]["level"] > DEFAULT_ALERT_LEVEL and by_group["taxi/hot"]["worst_feature"] == "b"
    assert by_group["commuter/cold"]["level"] < 0.05
    assert compare(reference, live, ["a", "b"])["features"][0]["feature"] == "b"  # worst first


def _fake_run(root: Path, shift: float, seed: int = 0) -> Path:
    """A run with a drift reference in its models and a prepared test split (no trained model needed)."""
    rng = np.random.default_rng(seed)
    write_reference(root / "models", rng.normal(size=(3000, F)).astype(np.float32), FEATURE_NAMES)
    n = 600
    X = rng.normal(size=(n, F)).astype(np.float32)
    X[:, 0] += shift
    columns = {"vehicle_id": pa.array([f"V{i % 6}" for i in range(n)]),
               "window_end_ms": pa.array(np.arange(n, dtype=np.int64) * 3_600_000 + 1_767_571_200_000)}
    columns.update({name: pa.array(X[:, j]) for j, name in enumerate(FEATURE_NAMES)})
    table = pa.table(columns).replace_schema_metadata({"features_hash": FEATURES_HASH})
    (root / DATASET_DIR).mkdir(parents=True)
    pq.write_table(table, root / DATASET_DIR / "test.parquet")
    return root


def test_evtwin_drift_writes_results_metrics_and_one_alert_per_drifted_scope(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "drifted", shift=2.0)
    uri = str(run / "checkpoints")
    result = run_drift(run, load_config(), uri)
    assert result["features"][0]["feature"] == FEATURE_NAMES[0] and result["level"] > DEFAULT_ALERT_LEVEL
    assert "by_profile" not in result  # no manifest: not a generated fleet, no profiles
    written = json.loads((run / "drift" / "drift.json").read_text())
    assert written["level"] == pytest.approx(result["level"])
    prom = (run / "drift" / "drift.prom").read_text()
    assert f"evtwin_drift_level {result['level']:.6f}" in prom
    assert f'evtwin_drift_feature_psi{{feature="{FEATURE_NAMES[0]}"}}' in prom
    alerts = AlertStore(uri).read_all()
    assert [(a.rule, a.vehicle_id) for a in alerts] == [("model_drift", "fleet")]
    assert alerts[0].signals[0][0] == FEATURE_NAMES[0] and "PSI" in alerts[0].message
    run_drift(run, load_config(), uri)  # the same data again: the same alert, not a second one
    assert len(AlertStore(uri).read_all()) == 1
    page = render_report(collect_report_inputs(run, load_config(), uri))
    assert "drift-table" in page and "model_drift" in page

    stable = _fake_run(tmp_path / "stable", shift=0.0, seed=1)
    result = run_drift(stable, load_config(), str(stable / "checkpoints"))
    assert result["level"] < DEFAULT_ALERT_LEVEL and result["alerts"] == []
    with pytest.raises(ValueError, match="alert_level=0"):
        run_drift(stable, load_config(), None, alert_level=0)


def test_drift_per_vehicle_ranks_the_drifted_vehicle_first_in_json_metrics_and_report(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "one", shift=0.0, seed=3)  # 6 vehicles, 100 windows each
    table = pq.read_table(run / DATASET_DIR / "test.parquet")
    drifted = np.array([v == "V4" for v in table.column("vehicle_id").to_pylist()])
    values = table.column(FEATURE_NAMES[3]).to_numpy().copy()
    values[drifted] += 3.0  # only V4's windows move, on one input
    table = table.set_column(table.schema.get_field_index(FEATURE_NAMES[3]), FEATURE_NAMES[3], pa.array(values))
    # a vehicle with too few windows to judge, and an augmented training copy that is no vehicle
    extra = table.slice(0, 60).to_pydict()
    extra["vehicle_id"] = ["V9"] * 10 + ["V0~no-cooling"] * 50
    table = pa.concat_tables([table, pa.table(extra, schema=table.schema)])
    pq.write_table(table, run / DATASET_DIR / "test.parquet")

    uri = str(run / "checkpoints")
    result = run_drift(run, load_config(), uri)
    by_vehicle = result["by_vehicle"]
    assert set(by_vehicle) == {"V0", "V1", "V2", "V3", "V4", "V5", "V9"}  # the augmented copy is not a vehicle
    assert by_vehicle["V4"]["level"] > DEFAULT_ALERT_LEVEL and by_vehicle["V4"]["worst_feature"] == FEATURE_NAMES[3]
    assert by_vehicle["V4"]["windows"] == 100 and not by_vehicle["V9"]["enough_windows"]
    assert result["top_vehicles"][0] == "V4" and "V9" not in result["top_vehicles"]
    assert all(by_vehicle[v]["level"] < by_vehicle["V4"]["level"] / 5 for v in ("V0", "V1", "V2", "V3", "V5"))
    assert {a.vehicle_id for a in AlertStore(uri).read_all()} <= {"fleet"}  # vehicles are listed, not alerted
    written = json.loads((run / "drift" / "drift.json").read_text())
    assert written["top_vehicles"] == result["top_vehicles"]
    assert 'evtwin_drift_vehicle_level{vehicle_id="V4"}' in (run / "drift" / "drift.prom").read_text()
    page = render_report(collect_report_inputs(run, load_config(), uri))
    vehicles_table = page[page.index("drift-vehicles"):]
    assert "V4" in vehicles_table and vehicles_table.index("V4") < vehicles_table.index("V0")
