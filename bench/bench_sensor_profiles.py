"""Models on sensor subsets: with and without sensor-subset augmentation (issue 12 item 3).

Generates a small fleet once (runs/bench_profiles/fleet), prepares and trains it twice (two run folders
sharing the frames: ``dataset.sensor_subset_augmentation`` 0 and ``--augment``), then judges each model
on the test split's vehicles as sent by four sensor profiles: every sensor; no coolant-loop sensors;
no motor/inverter telemetry; no GPS and no DC-DC current. The profile's sensors are removed from the
frames (all NaN, as a vehicle that does not send them) before the features, exactly as a twin would see
that vehicle. Reported per profile: anomaly event recall and false alarms per 100 healthy vehicle-days
(the LSTM-AE at its trained alert threshold, the twins' alerting policy) and the 7-day failure-risk
ROC-AUC over the test windows.

    .venv/bin/python bench/bench_sensor_profiles.py [--vehicles 40] [--days 45] [--augment 0.5]

Prints a Markdown table (docs/EVALUATION.md holds one run of it, with the load average).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.runs import EVENTS_FILE, RAW_FRAMES, SENSOR_FAULTS_FILE, read_manifest  # noqa: E402
from configs.settings import load_config  # noqa: E402
from training.artifacts import load_anomaly_model, load_failure_model  # noqa: E402
from training.dataset import (  # noqa: E402
    DATASET_DIR,
    SENSOR_SUBSYSTEMS,
    PreparePlan,
    events_by_vehicle,
    known_until_ms,
    prepare_dataset,
    read_card,
    read_ground_truth,
    vehicle_table,
)
from training.detectors import alert_outcome  # noqa: E402
from training.features import FEATURE_NAMES  # noqa: E402
from training.labels import MS_PER_DAY, VehicleEvents  # noqa: E402
from training.metrics import roc_auc  # noqa: E402
from training.train import SplitData, alert_policy_factory, train_all, vehicle_blocks  # noqa: E402

PROFILES: dict[str, tuple[str, ...]] = {
    "all sensors": (),
    "no coolant loop": SENSOR_SUBSYSTEMS["coolant_loop"],
    "no motor/inverter": SENSOR_SUBSYSTEMS["drivetrain"],
    "no GPS, no DC-DC": SENSOR_SUBSYSTEMS["gps_dcdc"],
}
ROOT = Path(__file__).resolve().parents[1] / "runs" / "bench_profiles"


def generate(vehicles: int, days: float) -> tuple[Path, list[str]]:
    from simulation.writer import write_run

    overrides = [f"simulation.num_vehicles={vehicles}", f"simulation.duration_days_per_vehicle={days}",
                 "simulation.frame_interval_s=120", "simulation.levers.failure_rate_multiplier=3"]
    fleet = ROOT / f"fleet-{vehicles}x{days:g}"
    if not (fleet / "manifest.json").exists():
        write_run(load_config(overrides=overrides), fleet, overwrite=True, workers=min(2, os.cpu_count() or 1))
    return fleet, overrides


def model_run(fleet: Path, name: str) -> Path:
    """A run folder for one model sharing the fleet's frames and ground truth (links, no copies)."""
    run = ROOT / f"{fleet.name}-{name}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    for item in (RAW_FRAMES, "manifest.json", "config.json", EVENTS_FILE, SENSOR_FAULTS_FILE):
        if (fleet / item).exists():
            (run / item).symlink_to((fleet / item).resolve())
    return run


def profiled_test(run: Path, cfg, drop: tuple[str, ...]) -> tuple[SplitData, list]:
    """The test split recomputed from the frames with ``drop`` removed, and its vehicle blocks."""
    import pyarrow.parquet as pq

    card = read_card(run)
    manifest = read_manifest(run)
    horizons = tuple(int(h) for h in card["horizons"])
    plan = PreparePlan(run_dir=str(run), window_ms=int(card["window_ms"]), stride_ms=int(card["stride_ms"]),
                       min_frames=cfg.dataset.min_frames_per_window, horizons_days=horizons,
                       known_until_ms=known_until_ms(manifest), cutoff_ms=card["cutoff_ms"],
                       post_failure_ms=int(cfg.labels.post_failure_grace_days * MS_PER_DAY))
    events, faults = read_ground_truth(run)
    per_vehicle = events_by_vehicle(events, faults)
    vehicles = [r["vehicle_id"] for r in pq.read_table(run / DATASET_DIR / "vehicles.parquet").to_pylist()
                if r["split"] == "test"]
    tables = [vehicle_table(plan, v, "test", per_vehicle.get(v, VehicleEvents()), drop) for v in vehicles]
    vid = np.concatenate([np.asarray(t.column("vehicle_id").to_pylist()) for t in tables])
    ends = np.concatenate([t.column("window_end_ms").to_numpy() for t in tables])
    X = np.concatenate([np.column_stack([t.column(n).to_numpy() for n in FEATURE_NAMES]) for t in tables])
    labels = {k: np.concatenate([np.asarray(t.column(k).to_numpy(zero_copy_only=False)) for t in tables])
              for k in ("y_7d", "anomaly", "post_failure")}
    data = SplitData(vid, ends, X.astype(np.float32), labels)
    test_events = pq.read_table(run / DATASET_DIR / "events.parquet")
    return data, vehicle_blocks(data, test_events, int(card["stride_ms"]))


def judge(run: Path, cfg) -> dict[str, dict[str, float]]:
    failure, anomaly = load_failure_model(run), load_anomaly_model(run)
    stride = int(read_card(run)["stride_ms"])
    out = {}
    for profile, drop in PROFILES.items():
        data, blocks = profiled_test(run, cfg, drop)
        y = data.labels["y_7d"]
        rows = y >= 0
        risk = failure.predict(data.X[rows])[7]
        scores = {b.vehicle_id: anomaly.score_vehicle(b.X)[0] for b in blocks}
        outcome = alert_outcome(blocks, scores, anomaly.alert_threshold, alert_policy_factory(cfg), stride)
        out[profile] = {"recall": outcome.event_recall, "events": outcome.events,
                        "fa100": outcome.false_alarms_per_100, "auc7": roc_auc(y[rows] == 1, risk)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=40)
    parser.add_argument("--days", type=float, default=45.0)
    parser.add_argument("--augment", type=float, default=0.5, help="dataset.sensor_subset_augmentation of the second model")
    args = parser.parse_args()
    t0 = time.perf_counter()
    fleet, overrides = generate(args.vehicles, args.days)
    fast = ["training.lstm_epochs=4", "training.lightgbm_num_rounds=200"]
    results = {}
    for name, share in (("plain", 0.0), ("augmented", args.augment)):
        cfg = load_config(overrides=overrides + fast + [f"dataset.sensor_subset_augmentation={share}"])
        run = model_run(fleet, name)
        prepare_dataset(run, cfg, workers=min(2, os.cpu_count() or 1))
        train_all(run, cfg)
        results[name] = judge(run, cfg)
    print(f"fleet {fleet.name}: {args.vehicles} vehicles x {args.days:g} days, test split; "
          f"{time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print("| profile | model | anomaly events | anomaly recall | false alarms / 100 vehicle-days | 7-day ROC-AUC |")
    print("|---|---|---|---|---|---|")
    for profile in PROFILES:
        for name in results:
            r = results[name][profile]
            print(f"| {profile} | {name} | {r['events']} | {r['recall']:.2f} | {r['fa100']:.2f} | {r['auc7']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
