"""A fleet on disk for the report's tests and benchmark: real twin checkpoints, alert history, lifecycle log.

Twins are real ``VehicleTwin``s fed synthetic frames through a ``TwinHost``; their latest risk is set as a
failure model would have answered (no model is trained here), alerts are appended to the real
``AlertStore`` and a share of them acknowledged, assigned and resolved through ``AlertStateLog``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.alert_states import AlertStateLog
from configs.frames import FrameBatch
from configs.schema import SCHEMA
from configs.settings import load_config
from twins.host import HostSettings, TwinHost
from twins.store import AlertStore
from twins.synthetic import synthetic_frames
from twins.types import Alert, Rule, alert_id

HORIZONS = (7, 30)
MODES = ("coolant_pump", "hv_isolation", "tyre_slow_leak", "cell_imbalance")


def build_fleet(checkpoint_uri: str | Path, vehicles: int, alerts: int, seed: int = 0,
                frames_per_vehicle: int = 12) -> list[str]:
    """Write the fleet under ``checkpoint_uri``; returns the vehicle ids."""
    rng = np.random.default_rng(seed)
    config = load_config()
    host = TwinHost(HostSettings(twins=config.twins, window_ms=config.dataset.window_ms,
                                 stride_ms=config.dataset.stride_ms, checkpoint_uri=str(checkpoint_uri)))
    ids = [f"R{i:05d}" for i in range(vehicles)]
    for start in range(0, vehicles, 250):
        chunk = ids[start:start + 250]
        parts = [synthetic_frames(v, frames_per_vehicle, seed) for v in chunk]
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        columns["vehicle_id"] = np.concatenate([np.full(frames_per_vehicle, v, dtype=object) for v in chunk])
        host.ingest(FrameBatch.from_columns(columns)[0])
    for vehicle_id in ids:  # the latest answer of a failure model, monotone in the horizon
        short = float(rng.beta(0.6, 6.0))
        host.twins[vehicle_id].schedule.risk = {HORIZONS[0]: short, HORIZONS[1]: min(1.0, short * 2.5)}
    host.checkpoint_all()

    store, log = AlertStore(str(checkpoint_uri)), AlertStateLog(str(checkpoint_uri))
    sensors = SCHEMA.sensor_names
    by_vehicle: dict[str, list[Alert]] = {}
    rules = (Rule.FAILURE_RISK, Rule.ANOMALY, Rule.SENSOR_FAULT)
    for k in range(alerts):
        vehicle_id = ids[int(rng.integers(vehicles))]
        rule = rules[k % 3]
        seq = 1_000 + k
        picked = rng.choice(len(sensors), 3, replace=False)
        alert = Alert(alert_id=alert_id(vehicle_id, rule, seq), vehicle_id=vehicle_id, rule=rule,
                      ts_ms=1_767_571_210_000 + k * 60_000, seq=seq, score=float(rng.uniform(1, 4)),
                      signals=tuple((sensors[j], float(rng.uniform(-1, 1))) for j in picked),
                      message=f"{rule} on {vehicle_id}", mode=MODES[k % len(MODES)] if rule != Rule.SENSOR_FAULT else None,
                      risk={7: 0.4, 30: 0.7} if rule == Rule.FAILURE_RISK else None,
                      severity=int(rng.integers(1, 4)))
        by_vehicle.setdefault(vehicle_id, []).append(alert)
    for vehicle_id, raised in by_vehicle.items():
        store.append(vehicle_id, raised)
        for alert in raised:
            draw = rng.uniform()
            if draw < 0.15:
                log.change(alert, "acknowledge", by="alice", now_ms=alert.ts_ms + 1)
            elif draw < 0.25:
                log.change(alert, "assign", by="alice", now_ms=alert.ts_ms + 1, assignee="carol")
            elif draw < 0.45:
                right = rng.uniform() < 0.6
                if alert.rule == Rule.SENSOR_FAULT:
                    outcome, mode = ("sensor_problem", "") if right else ("false_alarm", "")
                else:
                    outcome, mode = ("confirmed_failure", alert.mode or MODES[0]) if right else ("false_alarm", "")
                log.change(alert, "resolve", by="bob", now_ms=alert.ts_ms + 2, outcome=outcome, mode=mode,
                           note="<b>workshop</b> & note")
    return ids
