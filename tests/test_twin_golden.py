"""Golden regression: a recorded fleet through the twins gives exactly the recorded alerts, scores and state.

A small deterministic fleet from the project's own generator (3 vehicles, 3 days, 10 min frames): one
vehicle with an injected coolant-pump failure, one with sensor faults (NaN, an impossible SOC, a
dropout), frames shuffled and re-sent within the reorder buffer. It streams through ``ingest_many``
(twins with a feature-sequence fleet model: heads fitted inline, predictions answered from the features)
and through ``VehicleTwin.ingest`` alone (no model: baseline scores). Compared with
``tests/data/twin_golden.json``: every alert (rule, window end / frame time, seq, score), every window's
scores, and the sha256 of every twin's ``to_bytes()`` at the end and at the mid-stream round trip (the
twins are rebuilt from their bytes halfway; the run must not notice).

Regenerate only for an intended change of behaviour or byte layout: ``EVTWIN_REGEN_GOLDEN=1 pytest
tests/test_twin_golden.py``, and say in the commit why the figures moved.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from simulation.failures import FailureEvent
from simulation.fleet import observation_window
from simulation.whatif.runner import build_fleet
from simulation.whatif.scenarios import load_scenario
from simulation.whatif.twin_detector import coarse_simulation, vehicle_frame_batches
from training.features import FEATURE_NAMES
from twins.personalise import fit_personal_head
from twins.twin import SENSORS, VehicleTwin, ingest_many

GOLDEN = Path(__file__).parent / "data" / "twin_golden.json"
WINDOW_MS = 3_600_000
POLL_S = 4 * 3600.0
SEED = 11
DIGITS = 9


class GoldenSequenceModel:
    """A deterministic stand-in for the trained LSTM-AE: sequences of window features, per-signal errors."""

    signal_names = ("motor_rise_per_torque", "pack_rise_per_load", "coolant_dt_per_flow", "cell_temp_max_mean")
    sequence_length = 4
    threshold = 0.02
    alert_threshold = 1.0
    signal_error_reference = np.array([0.004, 0.004, 0.004, 0.004])

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spread = sequences.max(axis=1) - sequences.min(axis=1)
        per_signal = (spread / (np.abs(sequences).mean(axis=1) + 1.0)) ** 2
        total = per_signal.sum(axis=1)
        return total, per_signal / np.maximum(total[:, None], 1e-12)


def _config() -> Any:
    return load_scenario("baseline", overrides=[
        "simulation.num_vehicles=3", "simulation.duration_days_per_vehicle=3",
        "twins.baseline_warmup_windows=6", "twins.fine_tune_every_windows=5", "twins.reorder_buffer_frames=8",
        "twins.anomaly_warmup_windows=6", "twins.prediction_interval_minutes=180", "twins.risk_alert_threshold=0.6",
        "twins.alert_cooldown_minutes=120", "twins.sensor_fault_clear_minutes=30"]).config


def _fleet_polls(config: Any) -> tuple[list[str], list[list[dict[str, np.ndarray]]]]:
    """Per poll, per vehicle: the generator's frames, with a failure, sensor faults, shuffles and re-sends."""
    profiles, _ = build_fleet(config, SEED)
    sim_cfg = coarse_simulation(config.simulation, 600.0)
    start_ms, _ = observation_window(sim_cfg)
    failing = FailureEvent(profiles[0].vehicle_id, "coolant_pump", onset_ms=start_ms + 6 * 3_600_000,
                           failure_ms=start_ms + 2 * 86_400_000, severity=2, observed=True)
    streams = [vehicle_frame_batches(p, sim_cfg, SEED, POLL_S, events=[failing] if i == 0 else [])
               for i, p in enumerate(profiles)]
    rng = np.random.default_rng(SEED)
    polls: list[list[dict[str, np.ndarray]]] = []
    for batches in zip(*streams, strict=False):
        per_vehicle = []
        for i, batch in enumerate(batches):
            cols = {k: v.copy() for k, v in batch.columns().items()}
            if i == 1 and len(polls) in (2, 7):  # sensor faults on vehicle 1: NaN, impossible, dropout
                cols["values"][3, SENSORS.index("motor_temp")] = np.nan
                cols["values"][5, SENSORS.index("soc")] = 250.0
                cols["values"][6:10, SENSORS.index("cell_temp_max")] = np.nan
            rows = np.arange(cols["seq"].size)
            if i == 2:  # vehicle 2: out of order within the buffer, with re-sends
                rows = np.concatenate([rows, rng.choice(rows, 3)])
                for lo in range(0, rows.size, 6):
                    rng.shuffle(rows[lo:lo + 6])
            per_vehicle.append({k: v[rows] for k, v in cols.items()})
        polls.append(per_vehicle)
    return [p.vehicle_id for p in profiles], polls


def _risk(features: np.ndarray) -> dict[int, float]:
    x = float(features[FEATURE_NAMES.index("coolant_dt_per_flow_z")])
    p = 1.0 / (1.0 + np.exp(-(abs(x) - 2.0)))
    return {7: round(p, 6), 14: round(min(1.0, p * 1.2), 6), 30: round(min(1.0, p * 1.4), 6)}


def _alert_record(alert: Any) -> list[Any]:
    return [str(alert.rule), int(alert.ts_ms), int(alert.seq), round(float(alert.score), DIGITS)]


def _digest(twin: VehicleTwin) -> str:
    return hashlib.sha256(twin.to_bytes()).hexdigest()


def _run(config: Any, ids: list[str], polls: list[list[dict[str, np.ndarray]]], with_model: bool,
         round_trip: bool = True) -> dict[str, Any]:
    model = GoldenSequenceModel() if with_model else None
    twins = [VehicleTwin(v, config.twins, WINDOW_MS, WINDOW_MS, model) for v in ids]
    alerts: dict[str, list[list[Any]]] = {v: [] for v in ids}
    windows: dict[str, list[list[Any]]] = {v: [] for v in ids}
    mid_digests: dict[str, str] = {}
    for k, poll in enumerate(polls):
        if round_trip and k == len(polls) // 2:  # mid-stream round trip: rebuilt from bytes, unnoticed by the run
            mid_digests = {t.vehicle_id: _digest(t) for t in twins}
            twins = [VehicleTwin.from_bytes(t.to_bytes(), model) for t in twins]
        steps = ingest_many(twins, poll) if with_model else [t.ingest(b) for t, b in zip(twins, poll, strict=False)]
        for twin, step in zip(twins, steps, strict=False):
            alerts[twin.vehicle_id] += [_alert_record(a) for a in step.alerts]
            windows[twin.vehicle_id] += [[w.end_ms, round(w.fleet_ratio, DIGITS), round(w.score, DIGITS),
                                          w.head_version] for w in step.windows]
            request = twin.take_prediction_request()
            if step.prediction_due and request is not None:
                end_ms, features = request
                answer = twin.apply_prediction(end_ms, _risk(features), severity=2, mode="coolant_pump",
                                               contributions=[("coolant_dt_per_flow_z", 0.5)])
                alerts[twin.vehicle_id] += [_alert_record(a) for a in answer]
            if step.fine_tune_due:  # what the host's inline runner does
                errors, reference = twin.fine_tune_inputs()
                twin.install_head(fit_personal_head(errors, reference, twin.head.version + 1, *twin.head_settings()))
    return {"alerts": alerts, "windows": windows, "mid_sha256": mid_digests,
            "end_sha256": {t.vehicle_id: _digest(t) for t in twins}}


def _record() -> dict[str, Any]:
    config = _config()
    ids, polls = _fleet_polls(config)
    record = {"with_model": _run(config, ids, polls, True), "without_model": _run(config, ids, polls, False)}
    uninterrupted = _run(config, ids, polls, True, round_trip=False)
    assert uninterrupted["end_sha256"] == record["with_model"]["end_sha256"]  # the round trip went unnoticed
    assert uninterrupted["alerts"] == record["with_model"]["alerts"]
    return record


def test_a_recorded_fleet_gives_the_recorded_alerts_scores_and_state() -> None:
    recorded = json.loads(json.dumps(_record()))  # the JSON view: tuples as lists, keys as strings
    if os.environ.get("EVTWIN_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for run in ("with_model", "without_model"):
        for part in ("alerts", "windows", "mid_sha256", "end_sha256"):
            assert recorded[run][part] == golden[run][part], f"{run}: {part} differ from {GOLDEN.name}"


def test_the_golden_fleet_exercises_every_rule_and_the_head() -> None:
    """The golden file is worth pinning only if it covers what the twin does (guards a regeneration)."""
    golden = json.loads(GOLDEN.read_text())
    rules = {a[0] for run in golden.values() for alerts in run["alerts"].values() for a in alerts}
    assert rules == {"anomaly", "sensor_fault", "failure_risk"}
    head_versions = {w[3] for windows in golden["with_model"]["windows"].values() for w in windows}
    assert max(head_versions) >= 2
    assert all(len(w) > 40 for w in golden["without_model"]["windows"].values())
