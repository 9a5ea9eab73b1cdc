"""Personalisation: false alarms on healthy vehicles whose normal differs from the fleet, at equal event recall.

    .venv/bin/python bench/bench_personalisation.py --models runs/benchmark --vehicles 200 --days 60
    .venv/bin/python bench/bench_personalisation.py --models runs/tiny_tr --vehicles 30 --days 14 --bootstrap 200
    .venv/bin/python bench/bench_personalisation.py --models runs/benchmark-home --fleet-config configs/benchmark.json

A fresh fleet (seed different from training) is generated with the run's config (or, with ``--fleet-config``,
with another config's simulation section: vehicles unlike those the models were trained on). Only the vehicles the
comparison needs are streamed: the *healthy different-normal* ones (no failure onset in the observation;
hot climate, aggressive driver or pack >= 4 years), which give false alarms per 100 vehicle-days
(anomaly alerts outside injected sensor faults), and the failing ones (a failure onset inside the
observation), which give event recall (a failure with an anomaly alert between onset and failure).

The twins run ONCE, personalised, through ``TwinHost`` (per-vehicle head fine-tuned on the twin's own
normal windows, installed as versioned results), at the validated alert level 1.0; every closed window's
fleet-only score and personalised score are recorded. The alert gate (``training.alerting``, the
decision the twin itself applies) is then swept offline over a fine grid of levels for both variants.
The sweep is therefore the alert gate of twins whose *learning* is judged against a fixed reference
(level 1.0, the fleet model's validated alert level) whatever the operator's alert level: the head learns
the twin's first day and then windows the twin did not flag at 1.0 that its own feature baseline finds
usual, and the fleet-only score is the fleet model's error, which learns nothing. (twins/twin.py judges learning against 1.0 too,
``LEARNING_REFERENCE_LEVEL``; a twin deployed at another level additionally never learns from windows its
own gate flagged, so it may learn from slightly different windows than the sweep assumes.)
The bench checks that the offline gate at level 1.0
reproduces the twins' own alerts exactly, so the sweep is the twin's decision, not a copy of it.
Both variants hold alerts for the twin's first ``twins.anomaly_warmup_windows`` windows (the twin's
cold-start hold; the offline gate starts fresh after them, exactly as the twin's does).

"Equal recall": for each variant, the lowest false-alarm rate over the levels whose recall is at least r
(its operating frontier), read at several recalls r. 95% CIs: Wilson for recall, bootstrap over vehicles
for false-alarm rates and for the paired difference. Writes ``personalisation.json`` (read by
``evtwin evaluate`` into the report) and ``personalisation.md`` next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

from configs.settings import Config, TwinsConfig, load_config  # noqa: E402
from training.alerting import AlertPolicy, alert_indices  # noqa: E402
from training.evaluate import PERSONALISATION_FILE, equal_recall_comparison, personalisation_markdown  # noqa: E402
from training.features import FEATURE_NAMES  # noqa: E402
from twins.evaluation import score_alerts  # noqa: E402
from twins.types import Alert  # noqa: E402

_Z_INDEX = np.array([i for i, name in enumerate(FEATURE_NAMES) if name.endswith("_z")])  # for --save-windows
REFERENCE_LEVEL = 1.0  # the level the twins run at, and against which their learning judges windows
LEVELS = np.unique(np.append(np.round(np.geomspace(0.2, 8.0, 80), 4), REFERENCE_LEVEL))
RECALL_TARGETS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
VARIANTS = ("fleet only", "personalised")


def different_normal(profile: Any) -> bool:
    return profile.climate == "hot" or profile.aggressive or profile.pack_age_years >= 4.0


def select_subjects(config: Config, seed: int) -> tuple[list[dict[str, Any]], float]:
    """The healthy different-normal and the failing vehicles (profiles, events, faults); observed days."""
    from simulation.fleet import observation_window, sample_profiles
    from simulation.generator import vehicle_events, vehicle_sensor_faults

    start_ms, end_ms = observation_window(config.simulation)
    subjects = []
    for profile in sample_profiles(config.simulation, seed):
        events = [vars(e) for e in vehicle_events(profile, config.simulation, seed) if start_ms <= e.onset_ms <= end_ms]
        if not events and not different_normal(profile):
            continue
        subjects.append({"vehicle_id": profile.vehicle_id, "index": profile.index, "healthy": not events,
                         "events": events, "faults": [vars(f) for f in vehicle_sensor_faults(profile, config.simulation, seed)]})
    return subjects, (end_ms - start_ms) / 86_400_000


def _record_windows(target: dict[str, Any]) -> None:
    """Record every closed window's (end, fleet score, twin's score, head version) in ``target["windows"]``.

    From the twins' own output: each ``TwinStep``'s ``windows`` (``twins.types.WindowScore``), read from the
    steps ``twins.twin.ingest_many`` returns to ``TwinHost`` (the host only passes on alerts). With
    ``target["errors"]`` not None (``--save-windows``, for studying head designs offline) each window's
    per-signal fleet errors followed by its per-vehicle z-scores (the ``_z`` features, what the head's
    learning gate reads) are recorded too, one row per window (its ``ClosedWindow``), by wrapping ``VehicleTwin._close_window``
    (study instrumentation: steps do not carry them). Swap ``target``'s dicts to record another run.
    """
    import twins.host
    from twins.twin import ClosedWindow, VehicleTwin

    ingest_many = twins.host.ingest_many

    def recording_ingest(batch_twins: list[VehicleTwin], batches: list[Any]) -> list[Any]:
        steps = ingest_many(batch_twins, batches)
        for twin, step in zip(batch_twins, steps, strict=False):
            target["windows"].setdefault(twin.vehicle_id, []).extend(
                (w.end_ms, w.fleet_ratio, w.score, w.head_version) for w in step.windows)
        return steps

    twins.host.ingest_many = recording_ingest
    close = VehicleTwin._close_window

    def recording_close(self: VehicleTwin, window: ClosedWindow, step: Any) -> None:
        close(self, window, step)
        if target.get("errors") is not None and window.signal_errors is not None:
            target["errors"].setdefault(self.vehicle_id, []).append(np.concatenate([
                np.asarray(window.signal_errors, dtype=np.float32),
                np.asarray(window.features, dtype=np.float32)[_Z_INDEX]]))

    VehicleTwin._close_window = recording_close


def bench_config(models: str, fleet_config: str | None, overrides: list[str]) -> Config:
    """The models' run config (twins, dataset), with the fleet (simulation) of ``fleet_config`` if given."""
    config = load_config(Path(models) / "config.json", overrides=overrides)
    if fleet_config is None:
        return config
    fleet = load_config(Path(fleet_config), overrides=[o for o in overrides if o.startswith("simulation.")])
    return config.model_copy(update={"simulation": fleet.simulation})


def score_vehicles(models: str, fleet_config: str | None, overrides: list[str], seed: int, indices: list[int],
                   keep_errors: bool = False, fleet_only_checks: int = 1) -> dict[str, Any]:
    """Worker: stream the given vehicles through personalised twins; per-window scores and twin alerts.

    The first ``fleet_only_checks`` vehicles also go through fleet-only twins (``twins.personalise=false``),
    whose scores must equal the fleet scores recorded from the personalised twins (one run serves both).
    """
    import torch

    torch.set_num_threads(1)
    from configs.frames import FrameBatch
    from simulation.fleet import sample_profile
    from simulation.generator import stream_vehicle_batches
    from training.artifacts import load_anomaly_model
    from twins.host import HostSettings, TwinHost

    config = bench_config(models, fleet_config, overrides)
    model = load_anomaly_model(models)
    target: dict[str, Any] = {"windows": {}, "errors": {} if keep_errors else None}
    _record_windows(target)
    window_ms, stride_ms = config.dataset.window_ms, config.dataset.stride_ms

    def stream(personalise: bool, vehicles: list[int]) -> dict[str, list[int]]:
        twins_cfg = config.twins.model_copy(update={"personalise": personalise, "anomaly_alert_level": REFERENCE_LEVEL})
        alerts: dict[str, list[int]] = {}
        with tempfile.TemporaryDirectory() as ckpt:
            host = TwinHost(HostSettings(twins_cfg, window_ms, stride_ms, ckpt), anomaly_model=model)
            for index in vehicles:
                profile = sample_profile(config.simulation, seed, index)
                for batch in stream_vehicle_batches(profile, config.simulation, seed, batch_seconds=24 * 3600):
                    for alert in host.ingest(host_block(FrameBatch.from_columns, batch)).alerts:
                        if alert.rule == "anomaly":
                            alerts.setdefault(alert.vehicle_id, []).append(alert.ts_ms)
                host.drain(timeout_s=0.0)
        return alerts

    alerts = stream(True, indices)
    personalised, errors = target["windows"], target["errors"]
    target.update(windows={}, errors=None)
    stream(False, indices[:fleet_only_checks])
    return {"windows": {v: np.asarray(rows, dtype=np.float64) for v, rows in personalised.items()}, "alerts": alerts,
            "fleet_only": {v: np.asarray(rows, dtype=np.float64) for v, rows in target["windows"].items()},
            "errors": {v: np.stack(e) for v, e in (errors or {}).items()}}


def host_block(to_block: Any, batch: Any) -> Any:
    block, rejected = to_block(batch)
    if rejected:
        raise RuntimeError(f"generator frames refused by the front door: {rejected[:3]}")
    return block


def gate_outcomes(subjects: list[dict[str, Any]], windows: dict[str, np.ndarray], config: Config, slack_ms: int,
                  early_windows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per variant, (vehicles x levels) counts: false alarms (healthy vehicles), detected events (failing);
    and per variant and level, the healthy vehicles' false alarms within their twin's first ``early_windows``
    windows (before any personal head can exist: the same for both variants at the same level)."""
    twins = config.twins
    hold = twins.anomaly_warmup_windows
    policies = [AlertPolicy.for_twins(twins, level) for level in LEVELS]
    counts = {variant: np.zeros((len(subjects), len(LEVELS)), dtype=np.int64) for variant in VARIANTS}
    early = {variant: np.zeros(len(LEVELS), dtype=np.int64) for variant in VARIANTS}
    for i, subject in enumerate(subjects):
        rows = windows.get(subject["vehicle_id"])
        if rows is None or not len(rows):
            continue
        rows = rows[hold:]  # the twin's cold-start hold: its gate starts after these windows
        ends = rows[:, 0].astype(np.int64)
        for variant, column in zip(VARIANTS, (1, 2), strict=False):
            for j, policy in enumerate(policies):
                fired = alert_indices(ends, rows[:, column], policy)
                alerts = [Alert("", subject["vehicle_id"], "anomaly", ts_ms=int(t), seq=0, score=0.0, signals=(),
                                message="") for t in ends[fired]]
                report = score_alerts(alerts, subject["events"], subject["faults"], risk_horizon_ms=0, slack_ms=slack_ms)
                counts[variant][i, j] = report["by_rule"]["anomaly"]["false"] if subject["healthy"] else report["detected"]
                if subject["healthy"] and fired.size and fired[0] + hold < early_windows:
                    first = [a for a, k in zip(alerts, fired, strict=False) if k + hold < early_windows]
                    early[variant][j] += score_alerts(first, [], subject["faults"], risk_horizon_ms=0,
                                                      slack_ms=slack_ms)["by_rule"]["anomaly"]["false"]
    return counts, early


def check_offline_gate(subjects: list[dict[str, Any]], windows: dict[str, np.ndarray], twin_alerts: dict[str, list[int]],
                       config: Config) -> None:
    """The offline gate at the twins' own level must give exactly the twins' own anomaly alerts."""
    twins = config.twins
    policy = AlertPolicy.for_twins(twins, REFERENCE_LEVEL)
    for subject in subjects:
        rows = windows.get(subject["vehicle_id"], np.zeros((0, 4)))[twins.anomaly_warmup_windows:]
        ends = rows[:, 0].astype(np.int64)
        offline = ends[alert_indices(ends, rows[:, 2], policy)].tolist()
        if offline != twin_alerts.get(subject["vehicle_id"], []):
            raise RuntimeError(f"{subject['vehicle_id']}: offline gate {offline[:5]} != twin alerts "
                               f"{twin_alerts.get(subject['vehicle_id'], [])[:5]}: the sweep would not be the twin's decision")


def check_fleet_only(windows: dict[str, np.ndarray], fleet_only: dict[str, np.ndarray]) -> None:
    """Fleet-only twins must score exactly the fleet score the personalised twins recorded."""
    if not fleet_only:
        raise RuntimeError("no fleet-only twin was run to check the fleet-only variant")
    for vehicle, rows in fleet_only.items():
        if not np.array_equal(rows[:, [0, 2]], windows[vehicle][:, [0, 1]]):
            raise RuntimeError(f"{vehicle}: a fleet-only twin's scores differ from the fleet scores recorded by the "
                               "personalised twin: the fleet-only variant cannot be read from the personalised run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, help="trained run dir (its config and LSTM-AE are used)")
    parser.add_argument("--fleet-config", default=None,
                        help="config whose simulation section generates the fleet (default: the models' own); "
                             "e.g. the default mix for models trained on a temperate, calm, young home fleet")
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--days", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1001, help="fleet seed (differs from training's)")
    parser.add_argument("--failure-rate-multiplier", type=float, default=1.0,
                        help="simulation.levers.failure_rate_multiplier (more failures; healthy vehicles unchanged)")
    parser.add_argument("--fine-tune-every", type=int, default=48,
                        help="twins.fine_tune_every_windows (default 48: every 2 days of hourly windows)")
    head_defaults = TwinsConfig()
    parser.add_argument("--head-quantile", type=float, default=head_defaults.head_quantile,
                        help="twins.head_quantile (default: the shipped config's)")
    parser.add_argument("--head-prior-windows", type=float, default=head_defaults.head_prior_windows,
                        help="twins.head_prior_windows (default: the shipped config's)")
    parser.add_argument("--head-max-offset", type=float, default=head_defaults.head_max_offset,
                        help="twins.head_max_offset (default: the shipped config's, uncapped)")
    parser.add_argument("--workers", type=int, default=2, help="processes streaming twins")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over vehicles")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: <models>/evaluation); writes {PERSONALISATION_FILE} and .md")
    parser.add_argument("--save-windows", default=None, help="also save the per-window scores (npz) here")
    args = parser.parse_args()

    overrides = [f"simulation.num_vehicles={args.vehicles}", f"simulation.duration_days_per_vehicle={args.days}",
                 f"simulation.levers.failure_rate_multiplier={args.failure_rate_multiplier}",
                 f"twins.fine_tune_every_windows={args.fine_tune_every}", f"twins.head_quantile={args.head_quantile}",
                 f"twins.head_prior_windows={args.head_prior_windows}",
                 f"twins.head_max_offset={json.dumps(args.head_max_offset)}"]
    config = bench_config(args.models, args.fleet_config, overrides)
    subjects, days = select_subjects(config, args.seed)
    healthy = [s for s in subjects if s["healthy"]]
    events = sum(len(s["events"]) for s in subjects)
    print(f"fleet: {args.vehicles} vehicles x {days:g} days (seed {args.seed}); {len(healthy)} healthy with a "
          f"different normal, {len(subjects) - len(healthy)} failing vehicles with {events} failures", flush=True)

    t0 = time.perf_counter()
    shards = [[s["index"] for s in subjects[k::args.workers]] for k in range(args.workers)]
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(score_vehicles, [args.models] * args.workers, [args.fleet_config] * args.workers,
                              [overrides] * args.workers,
                              [args.seed] * args.workers, shards, [bool(args.save_windows)] * args.workers))
    windows = {v: rows for part in parts for v, rows in part["windows"].items()}
    twin_alerts = {v: ts for part in parts for v, ts in part["alerts"].items()}
    elapsed = time.perf_counter() - t0
    n_windows = sum(len(r) for r in windows.values())
    print(f"twins: {n_windows:,} windows in {elapsed:.0f} s ({n_windows / elapsed:,.0f} windows/s, "
          f"{args.workers} processes)", flush=True)
    check_offline_gate(subjects, windows, twin_alerts, config)
    check_fleet_only(windows, {v: rows for part in parts for v, rows in part["fleet_only"].items()})
    if args.save_windows:
        # Per vehicle: "<id>" (end, fleet score, personalised score, head version) and "<id>__errors"
        # (per-signal fleet errors, then the _z features; their names in "signals" and "z_features").
        errors = {f"{v}__errors": e for part in parts for v, e in part["errors"].items()}
        subjects_json = json.dumps([{k: s[k] for k in ("vehicle_id", "healthy", "events", "faults")} for s in subjects])
        from training.artifacts import load_anomaly_model
        np.savez_compressed(args.save_windows, **windows, **errors, subjects=np.frombuffer(subjects_json.encode(), np.uint8),
                            signals=np.array(load_anomaly_model(args.models).signal_names),
                            z_features=np.array(FEATURE_NAMES)[_Z_INDEX])

    counts, early = gate_outcomes(subjects, windows, config, slack_ms=config.dataset.window_ms,
                                  early_windows=args.fine_tune_every)
    head_versions = [float(rows[-1, 3]) for v, rows in windows.items()]
    from training.artifacts import load_anomaly_model
    reference_source = ("model meta" if load_anomaly_model(args.models).signal_error_reference is not None
                        else "none (a model trained before signal_error_reference: personalised twins refuse it)")
    result = equal_recall_comparison(
        counts, healthy=np.array([s["healthy"] for s in subjects]),
        events=np.array([len(s["events"]) for s in subjects]), days_per_vehicle=days, levels=LEVELS,
        recall_targets=RECALL_TARGETS, reference_level=REFERENCE_LEVEL, bootstrap=args.bootstrap, seed=args.seed)
    command = (f".venv/bin/python bench/bench_personalisation.py --models {args.models} --vehicles {args.vehicles} "
               f"--days {args.days:g} --seed {args.seed} --failure-rate-multiplier {args.failure_rate_multiplier:g} "
               f"--fine-tune-every {args.fine_tune_every} --head-quantile {args.head_quantile:g} "
               f"--head-prior-windows {args.head_prior_windows:g} "
               + (f"--head-max-offset {args.head_max_offset:g} " if args.head_max_offset is not None else "")
               + (f"--fleet-config {args.fleet_config} " if args.fleet_config else "")
               + f"--bootstrap {args.bootstrap}")
    result.update({
        "command": command, "models": str(args.models), "seed": args.seed, "vehicles": args.vehicles, "days": days,
        "failure_rate_multiplier": args.failure_rate_multiplier, "fine_tune_every_windows": args.fine_tune_every,
        "fleet_config": args.fleet_config,
        "anomaly_warmup_windows": config.twins.anomaly_warmup_windows,
        "head": {"kind": "excess over the fleet's per-signal normal error",
                 "prior_windows": config.twins.head_prior_windows, "reference": reference_source,
                 "quantile": config.twins.head_quantile, "max_offset": config.twins.head_max_offset,
                 "mean_final_version": float(np.mean(head_versions)) if head_versions else 0.0},
        "early_windows": args.fine_tune_every, "early_false_alarms": {v: early[v].tolist() for v in VARIANTS},
        "windows": n_windows, "twin_seconds": round(elapsed, 1), "load_average": list(os.getloadavg()),
    })
    out = Path(args.out) if args.out else Path(args.models) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    (out / PERSONALISATION_FILE).write_text(json.dumps(result, indent=1))
    text = "\n".join(personalisation_markdown(result)) + "\n"
    (out / PERSONALISATION_FILE).with_suffix(".md").write_text(text)
    print(text)
    print(f"written: {out / PERSONALISATION_FILE} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
