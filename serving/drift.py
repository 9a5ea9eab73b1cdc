"""``evtwin drift --run RUN``: the run's windows against the training reference of its models, offline.

    evtwin drift --run runs/default                          # the run's test split (never trained on)
    evtwin drift --run runs/default --live runs/other-fleet  # every prepared window of another fleet
    evtwin drift --run runs/default --alert-level 0.2

Writes ``<live run>/drift/``: ``drift.json`` (PSI per input, per vehicle profile, per vehicle
(``by_vehicle``, ``top_vehicles``), of the failure model's scores; read by ``evtwin report``), ``drift.prom``
(the same as Prometheus metrics in the text format, for a node-exporter textfile collector) and, above the
alert level, ``model_drift`` alerts in the alert store beside the checkpoints (``ListAlerts``, the report), one
per fleet / per profile, ids stable per data.
Per-vehicle drift is listed, not alerted: one vehicle's windows differ from the fleet's training mix by nature
(its climate, duty cycle, pack), so a vehicle's PSI ranks which vehicles the models know least, for a look.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from configs.runs import read_manifest
from configs.settings import Config, SimulationConfig
from simulation.fleet import sample_profiles
from training.artifacts import MODELS_DIR
from training.dataset import AUGMENTED_SEPARATOR, read_split
from training.drift import DEFAULT_ALERT_LEVEL, compare, compare_groups, failure_scores, read_reference, top_groups
from training.features import FEATURE_NAMES
from twins.store import AlertStore
from twins.types import Alert, Rule, alert_id

DRIFT_DIR = "drift"
FLEET_ID = "fleet"  # the vehicle id of fleet-wide alerts (drift of the whole fleet)
TOP_VEHICLES = 10  # vehicles listed as most drifted (drift.json, drift.prom, the report)


def live_windows(run_dir: Path, same_as_training: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vehicle ids, window ends, X) of the windows to judge: the test split of the training run itself
    (its train and validation windows are the reference), else every split that was prepared."""
    splits = ("test",) if same_as_training else ("train", "validation", "test")
    tables = []
    for split in splits:
        try:
            tables.append(read_split(run_dir, split, ["vehicle_id", "window_end_ms", *FEATURE_NAMES]))
        except FileNotFoundError:
            continue
    if not tables:
        raise FileNotFoundError(f"{run_dir}: no prepared windows (run `evtwin prepare --run {run_dir}` first)")
    vehicles = np.concatenate([t.column("vehicle_id").to_numpy(zero_copy_only=False).astype(str) for t in tables])
    ends = np.concatenate([t.column("window_end_ms").to_numpy() for t in tables])
    X = np.concatenate([np.stack([t.column(n).to_numpy().astype(np.float32) for n in FEATURE_NAMES], axis=1)
                        for t in tables]) if vehicles.size else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    return vehicles, ends, X


def profile_groups(run_dir: Path, vehicles: np.ndarray) -> np.ndarray | None:
    """``<duty cycle>/<climate>`` per window for a generated fleet; None when the run has no profiles."""
    try:
        manifest = read_manifest(run_dir)
        sim = SimulationConfig.model_validate(manifest["config"]["simulation"])
        profiles = {p.vehicle_id: f"{p.duty_cycle}/{p.climate}" for p in sample_profiles(sim, int(manifest["seed"]))}
    except (FileNotFoundError, KeyError, ValueError):
        return None  # an imported fleet: no profiles to group by
    return np.array([profiles.get(v, "unknown") for v in vehicles])


def drift_alerts(result: dict[str, Any], alert_level: float, seq: int) -> list[Alert]:
    """``model_drift`` alerts: the fleet, and each profile with enough windows, above ``alert_level``."""
    alerts = []
    scopes = [(FLEET_ID, result["level"], result["features"][0]["feature"] if result["features"] else "",
               result["enough_windows"])]
    scopes += [(f"profile:{g}", p["level"], p["worst_feature"], p["enough_windows"])
               for g, p in result.get("by_profile", {}).items()]
    top = [(f["feature"], float(f["psi"])) for f in result["features"][:5]]
    for scope, level, worst, enough in scopes:
        if not enough or level <= alert_level:
            continue
        vehicle_id = re.sub(r"[^A-Za-z0-9._:/-]", "_", scope)[:64]
        alerts.append(Alert(alert_id=alert_id(vehicle_id, Rule.MODEL_DRIFT, seq), vehicle_id=vehicle_id,
                            rule=Rule.MODEL_DRIFT, ts_ms=int(result["live_until_ms"]), seq=seq, score=float(level),
                            signals=tuple(top) if scope == FLEET_ID else ((worst, float(level)),),
                            message=f"model inputs drifted ({scope}): PSI {level:.2f} > {alert_level:.2f}, "
                                    f"worst input {worst}"))
    return alerts


def prometheus_text(result: dict[str, Any]) -> str:
    """The drift numbers in the Prometheus text format (names as in deploy/grafana)."""
    lines = ["# HELP evtwin_drift_level Largest population stability index over the model inputs.",
             "# TYPE evtwin_drift_level gauge", f"evtwin_drift_level {result['level']:.6f}",
             "# HELP evtwin_drift_feature_psi Population stability index of one model input.",
             "# TYPE evtwin_drift_feature_psi gauge"]
    lines += [f'evtwin_drift_feature_psi{{feature="{f["feature"]}"}} {f["psi"]:.6f}' for f in result["features"]]
    lines += ["# HELP evtwin_drift_score_psi Population stability index of a model score.",
              "# TYPE evtwin_drift_score_psi gauge"]
    lines += [f'evtwin_drift_score_psi{{score="{k}"}} {v:.6f}' for k, v in result["score_psi"].items()]
    lines += ["# HELP evtwin_drift_profile_level Largest input PSI within one vehicle profile.",
              "# TYPE evtwin_drift_profile_level gauge"]
    lines += [f'evtwin_drift_profile_level{{profile="{g}"}} {p["level"]:.6f}'
              for g, p in result.get("by_profile", {}).items()]
    lines += ["# HELP evtwin_drift_vehicle_level Largest input PSI of one vehicle's windows (the most drifted only).",
              "# TYPE evtwin_drift_vehicle_level gauge"]
    lines += [f'evtwin_drift_vehicle_level{{vehicle_id="{v}"}} {result["by_vehicle"][v]["level"]:.6f}'
              for v in result.get("top_vehicles", [])]
    return "\n".join(lines) + "\n"


def run_drift(models_run: str | Path, config: Config, checkpoint_uri: str | None, live_run: str | Path | None = None,
              alert_level: float = DEFAULT_ALERT_LEVEL) -> dict[str, Any]:
    """Compare, write ``drift/`` under the live run, raise alerts; returns the result (as in drift.json)."""
    if not alert_level > 0:
        raise ValueError(f"alert_level={alert_level}: must be > 0 (PSI 0.1 watch, 0.25 act)")
    models_run = Path(models_run)
    live = Path(live_run) if live_run is not None else models_run
    reference = read_reference(models_run / MODELS_DIR)
    vehicles, ends, X = live_windows(live, same_as_training=live.resolve() == models_run.resolve())
    result = compare(reference, X, FEATURE_NAMES, failure_scores(models_run, X))
    groups = profile_groups(live, vehicles)
    if groups is not None:
        result["by_profile"] = compare_groups(reference, X, FEATURE_NAMES, groups)
    real = np.char.find(vehicles.astype(str), AUGMENTED_SEPARATOR) < 0  # not the training's masked copies
    result["by_vehicle"] = compare_groups(reference, X[real], FEATURE_NAMES, vehicles[real])
    result["top_vehicles"] = top_groups(result["by_vehicle"], TOP_VEHICLES)
    result.update(alert_level=alert_level, models_run=str(models_run), live_run=str(live),
                  live_until_ms=int(ends.max()) if ends.size else 0, computed_ms=int(time.time() * 1000))
    alerts = drift_alerts(result, alert_level, seq=int(ends.max()) if ends.size else 0)
    result["alerts"] = [a.alert_id for a in alerts]
    if checkpoint_uri is not None and alerts:
        store = AlertStore(checkpoint_uri)
        for alert in alerts:
            store.append(alert.vehicle_id, [alert])  # same data, same id: re-running adds no duplicate
    out = live / DRIFT_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "drift.prom").write_text(prometheus_text(result))
    return result
