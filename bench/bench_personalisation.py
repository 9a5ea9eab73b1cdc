"""Personalisation: false alarms on healthy vehicles whose normal differs from the fleet, with vs without.

    .venv/bin/python bench/bench_personalisation.py --models runs/default
    .venv/bin/python bench/bench_personalisation.py --models runs/tiny_tr --vehicles 60 --days 14 \\
        --out runs/tiny_tr/evaluation/personalisation.md

A fresh fleet (seed different from training) is generated with the run's config. Twins run twice per
alert level: *fleet only* (``twins.personalise=false``: the LSTM-AE score against its validated alert
level) and *personalised* (per-vehicle head fine-tuned on the twin's own normal windows, and the
vehicle's own protected baseline). Reported per 100 vehicle-days of the *different-normal healthy*
vehicles (no failure in the observation; hot climate, aggressive driver or pack older than 4 years):
anomaly alerts outside any injected sensor fault. Event recall: failures (onset inside the
observation) with an anomaly alert between onset and failure, over all failing vehicles. The alert
level is swept, so the two variants are compared at equal recall. Writes a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from configs.settings import load_config  # noqa: E402
from twins.evaluation import score_alerts  # noqa: E402
from twins.host import HostSettings, TwinHost, to_block  # noqa: E402

LEVELS = (0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0)


def different_normal(profile) -> bool:
    return profile.climate == "hot" or profile.aggressive or profile.pack_age_years >= 4.0


def fleet(config, seed: int):
    from simulation.fleet import observation_window, sample_profiles
    from simulation.generator import stream_vehicle_batches, vehicle_events, vehicle_sensor_faults

    start_ms, end_ms = observation_window(config.simulation)
    vehicles = []
    for profile in sample_profiles(config.simulation, seed):
        events = [e for e in vehicle_events(profile, config.simulation, seed) if start_ms <= e.onset_ms <= end_ms]
        faults = vehicle_sensor_faults(profile, config.simulation, seed)
        table = pa.Table.from_batches(list(stream_vehicle_batches(profile, config.simulation, seed, batch_seconds=6 * 3600)))
        vehicles.append({"profile": profile, "events": [vars(e) for e in events],
                         "faults": [vars(f) for f in faults], "table": table})
    return vehicles, (end_ms - start_ms) / 86_400_000


def run_twins(config, model, vehicles, personalise: bool, level: float) -> list:
    twins_cfg = config.twins.model_copy(update={"personalise": personalise, "anomaly_alert_level": level})
    window_ms = int(config.dataset.window_minutes * 60_000)
    with tempfile.TemporaryDirectory() as ckpt:
        host = TwinHost(HostSettings(twins_cfg, window_ms, int(config.dataset.stride_minutes * 60_000), ckpt),
                        anomaly_model=model)
        alerts = []
        for vehicle in vehicles:
            for batch in vehicle["table"].to_batches():
                alerts += host.ingest(to_block(batch)[0]).alerts
            host.evict_idle()
        heads = [host.twin(v["profile"].vehicle_id).head.version for v in vehicles]
    return [a for a in alerts if a.rule == "anomaly"], float(np.mean(heads))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, help="trained run dir (its config and LSTM-AE are used)")
    parser.add_argument("--vehicles", type=int, default=40)
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--seed", type=int, default=1001, help="fleet seed (differs from training's)")
    parser.add_argument("--out", default=None, help="Markdown output (default: <models>/evaluation/personalisation.md)")
    parser.add_argument("--fine-tune-every", type=int, default=48,
                        help="twins.fine_tune_every_windows for this run (default 48: every 2 days of hourly windows)")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    from training.artifacts import load_anomaly_model

    config = load_config(Path(args.models) / "config.json",
                         overrides=[f"simulation.num_vehicles={args.vehicles}",
                                    f"simulation.duration_days_per_vehicle={args.days}",
                                    f"twins.fine_tune_every_windows={args.fine_tune_every}"])
    model = load_anomaly_model(args.models)
    t0 = time.perf_counter()
    vehicles, days = fleet(config, args.seed)
    healthy_diff = [v for v in vehicles if not v["events"] and different_normal(v["profile"])]
    failing = [v for v in vehicles if v["events"]]
    print(f"fleet: {len(vehicles)} vehicles x {days:g} days (seed {args.seed}, {time.perf_counter() - t0:.0f} s); "
          f"{len(healthy_diff)} healthy with a different normal, {len(failing)} with failures")
    subject = healthy_diff + failing
    events = [e for v in failing for e in v["events"]]
    faults = [f for v in subject for f in v["faults"]]
    slack = int(config.dataset.window_minutes * 60_000)
    healthy_ids = {v["profile"].vehicle_id for v in healthy_diff}
    rows = []
    for personalise in (False, True):
        for level in LEVELS:
            alerts, head = run_twins(config, model, subject, personalise, level)
            report = score_alerts(alerts, events, faults, risk_horizon_ms=0, slack_ms=slack)
            false_alarms = [a for a in alerts if a.vehicle_id in healthy_ids
                            and not any(f["vehicle_id"] == a.vehicle_id and f["start_ms"] - slack <= a.ts_ms <= f["end_ms"] + slack
                                        for f in faults)]
            fa_rate = 100.0 * len(false_alarms) / max(len(healthy_diff) * days, 1e-9)
            recall = report["detected"] / max(report["events"], 1)
            rows.append({"variant": "personalised" if personalise else "fleet only", "level": level,
                         "recall": recall, "fa": fa_rate, "false_alarms": len(false_alarms), "head": head})
            print(f"{rows[-1]['variant']:<13} level {level:<5} recall {recall:.2f}  "
                  f"false alarms/100 vd {fa_rate:6.2f} ({len(false_alarms)})  mean head version {head:.1f}")

    lines = [
        "# Personalisation: false alarms at equal recall",
        "",
        f"Command: `.venv/bin/python bench/bench_personalisation.py --models {args.models} --vehicles {args.vehicles} "
        f"--days {args.days:g} --seed {args.seed} --fine-tune-every {args.fine_tune_every}`",
        "",
        f"Fleet of {len(vehicles)} vehicles x {days:g} days generated with seed {args.seed} (not the training seed); "
        f"{len(healthy_diff)} healthy vehicles with a normal unlike the fleet's (hot climate, aggressive driver or "
        f"pack > 4 years), {len(failing)} vehicles with {len(events)} failures starting inside the observation.",
        "False alarms: anomaly alerts on those healthy vehicles outside injected sensor faults, per 100 vehicle-days. "
        "Recall: failures with an anomaly alert between onset and failure. The alert level is swept for both variants.",
        "",
        "| variant | alert level | event recall | false alarms / 100 vehicle-days | mean head version |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['level']:g} | {r['recall']:.2f} | {r['fa']:.2f} | {r['head']:.1f} |" for r in rows]
    lines += ["", "At equal recall (best false-alarm rate of each variant among levels reaching at least that recall):", "",
              "| recall at least | fleet only FA/100 vd | personalised FA/100 vd |", "|---|---|---|"]
    for target in sorted({r["recall"] for r in rows}, reverse=True):
        best = {}
        for variant in ("fleet only", "personalised"):
            candidates = [r["fa"] for r in rows if r["variant"] == variant and r["recall"] >= target - 1e-9]
            best[variant] = min(candidates) if candidates else None
        if None not in best.values():
            lines.append(f"| {target:.2f} | {best['fleet only']:.2f} | {best['personalised']:.2f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out) if args.out else Path(args.models) / "evaluation" / "personalisation.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
