"""``evtwin run``: drive a generated fleet through twins on Ray (and the model services on Ray Serve).

    evtwin run --run runs/default                   # local Ray; frames from the run dir (or generated live)
    evtwin run --run runs/default --address auto    # join a running cluster instead
    evtwin run --run runs/default --set twins.twins_per_actor=64 --vehicles 200

Alerts are printed as they come; the summary judges them against the run's ground truth
(``events.parquet``, ``sensor_faults.parquet``): alerts by rule, true/false, detected failures by mode
and lead times.
"""
from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.cli import add_config_arguments, config_from_args
from configs.runs import EVENTS_FILE, list_vehicles, read_events, read_sensor_faults, read_vehicle_frames
from configs.settings import Config, TwinsConfig
from serving.deployments import deploy_models
from serving.predictor import ServePredictor
from simulation.fleet import frame_count, observation_window, sample_profiles
from simulation.generator import stream_vehicle_batches
from twins.evaluation import score_alerts
from twins.hosting import TwinFleet
from twins.types import Alert, Rule

console = Console(stderr=True)
_RULE_STYLE = {Rule.ANOMALY: "yellow", Rule.SENSOR_FAULT: "magenta", Rule.FAILURE_RISK: "red"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="drive a fleet through twins on Ray and model services on Ray Serve")
    add_config_arguments(parser)
    parser.add_argument("--run", dest="run_dir", default=None, help="run directory (default: runs/<run_name>)")
    parser.add_argument("--address", default=None, help="join this Ray cluster (default: start a local Ray)")
    parser.add_argument("--source", choices=("auto", "files", "live"), default="auto",
                        help="frames from the run's Parquet files, or generated live (auto: files when present)")
    parser.add_argument("--vehicles", type=int, default=None, help="only the first N vehicles")
    parser.add_argument("--batch-minutes", type=float, default=360.0,
                        help="frame time per ingest call (bigger: fewer actor calls, faster)")
    parser.add_argument("--no-models", action="store_true", help="do not deploy the Serve model services")
    parser.add_argument("--quiet", action="store_true", help="do not print each alert")
    parser.add_argument("--resume", action="store_true",
                        help="keep the twins' checkpoints from an earlier run (default: start fresh)")
    parser.set_defaults(func=run_fleet)


def _file_batches(run_dir: Path, vehicles: list[str], batch_ms: int) -> Iterator[pa.Table]:
    """All vehicles' frames, one table per ``batch_ms`` of frame time (vehicles interleaved as in reality)."""
    tables = [read_vehicle_frames(run_dir, v) for v in vehicles]
    tables = [t.append_column("_bucket", pa.array(t.column("ts").cast(pa.int64()).to_numpy() // batch_ms))
              for t in tables]
    buckets = sorted({int(b) for t in tables for b in (t.column("_bucket")[0].as_py(), t.column("_bucket")[-1].as_py())
                      if t.num_rows})
    if not buckets:
        return
    for bucket in range(buckets[0], buckets[-1] + 1):
        parts = [t.filter(pc.equal(t.column("_bucket"), bucket)).drop_columns(["_bucket"]) for t in tables]
        parts = [p for p in parts if p.num_rows]
        if parts:
            yield pa.concat_tables(parts)


def _live_batches(config: Config, count: int | None, batch_ms: int) -> Iterator[pa.Table]:
    profiles = sample_profiles(config.simulation, config.seed)[: count or None]
    streams = [stream_vehicle_batches(p, config.simulation, config.seed, batch_seconds=batch_ms / 1000) for p in profiles]
    while streams:
        parts, alive = [], []
        for stream in streams:
            batch = next(stream, None)
            if batch is not None:
                parts.append(pa.Table.from_batches([batch]))
                alive.append(stream)
        streams = alive
        if parts:
            yield pa.concat_tables(parts)


def _checkpoints_in_run(config: Config, run_dir: Path, fresh: bool) -> Config:
    """Keep twin checkpoints inside the run (unless a URI was configured); a fresh run starts empty,
    since a twin restored from another run would take this run's frames for duplicates."""
    uri = config.twins.checkpoint_uri
    if uri == TwinsConfig().checkpoint_uri:
        uri = str(run_dir / "twin_checkpoints")
        config = config.model_copy(update={"twins": config.twins.model_copy(update={"checkpoint_uri": uri})})
    if fresh and "://" not in uri and Path(uri).is_dir():
        shutil.rmtree(uri)
    return config


def _print_alert(alert: Alert) -> None:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(alert.ts_ms / 1000))
    style = _RULE_STYLE.get(alert.rule, "white")
    console.print(f"[{style}]{alert.rule:<12}[/{style}] {alert.vehicle_id:<10} {when}  {alert.message}")


def run_fleet(args: argparse.Namespace) -> int:
    import ray

    config = config_from_args(args)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / config.run_name
    config = _checkpoints_in_run(config, run_dir, fresh=not args.resume)
    batch_ms = int(args.batch_minutes * 60_000)
    on_disk = list_vehicles(run_dir) if run_dir.is_dir() else []
    use_files = args.source == "files" or (args.source == "auto" and on_disk)
    if use_files and not on_disk:
        raise FileNotFoundError(f"no frames under {run_dir} (run `evtwin generate --out {run_dir}` or use --source live)")
    vehicles = on_disk[: args.vehicles] if use_files else None
    n_vehicles = len(vehicles) if vehicles is not None else min(args.vehicles or config.simulation.num_vehicles,
                                                                config.simulation.num_vehicles)

    started = False
    if not ray.is_initialized():
        ray.init(address=args.address, namespace="evtwin", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        started = True
    use_models = False
    try:
        if not args.no_models and (run_dir / "models").is_dir():
            try:
                deploy_models(config, str(run_dir))
                use_models = True
            except Exception as error:  # the twins run without risk predictions
                console.print(f"[yellow]model services not deployed:[/yellow] {error!r}")
        fleet = TwinFleet.create(config, run_dir=str(run_dir) if (run_dir / "models").is_dir() else None,
                                 expected_vehicles=n_vehicles,
                                 predictor_factory=ServePredictor if use_models else None)
        batches = _file_batches(run_dir, vehicles, batch_ms) if use_files else _live_batches(config, n_vehicles, batch_ms)
        total = n_vehicles * frame_count(config.simulation) if not use_files else None
        alerts: list[Alert] = []
        driven: set[str] = set()
        frames = 0
        t0 = time.perf_counter()
        with Progress(TextColumn("twins"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("frames", total=total, rate="")
            for table in batches:
                result = fleet.ingest(table)
                frames += table.num_rows
                driven.update(table.column("vehicle_id").unique().to_pylist())
                for alert in result.alerts:
                    if not args.quiet:
                        _print_alert(alert)
                alerts.extend(result.alerts)
                rate = frames / max(time.perf_counter() - t0, 1e-9)
                progress.update(task, advance=table.num_rows, rate=f"{rate:,.0f} frames/s")
        alerts.extend(fleet.drain(timeout_s=10))
        elapsed = time.perf_counter() - t0
        fleet.close()
    finally:
        if use_models:
            from ray import serve
            serve.shutdown()
        if started:
            ray.shutdown()
    _summary(run_dir, config, alerts, frames, elapsed, driven, observation_window(config.simulation))
    return 0


def _summary(run_dir: Path, config: Config, alerts: list[Alert], frames: int, elapsed: float, vehicles: set[str],
             observed: tuple[int, int]) -> None:
    console.print(f"\n{frames:,} frames from {len(vehicles)} vehicles in {elapsed:.1f} s "
                  f"({frames / max(elapsed, 1e-9):,.0f} frames/s), {len(alerts)} alerts")
    events, faults = [], []
    if (run_dir / EVENTS_FILE).exists():
        events = [e for e in read_events(run_dir).to_pylist() if e["vehicle_id"] in vehicles]
        faults = [f for f in read_sensor_faults(run_dir).to_pylist() if f["vehicle_id"] in vehicles]
    horizon_ms = min(config.labels.failure_horizons_days) * 86_400_000
    start_ms, end_ms = observed
    report = score_alerts(alerts, events, faults, risk_horizon_ms=horizon_ms, slack_ms=config.dataset.window_ms,
                          end_ms=end_ms, start_ms=start_ms, vehicles=vehicles,
                          post_failure_ms=int(config.labels.post_failure_grace_days * 86_400_000))
    rules = Table(title="alerts by rule (against ground truth)")
    for column in ("rule", "alerts", "true", "false", "unjudged"):
        rules.add_column(column, justify="right" if column != "rule" else "left")
    for rule, counts in report["by_rule"].items():
        rules.add_row(rule, str(counts["alerts"]), str(counts["true"]), str(counts["false"]),
                      str(counts.get("unjudged", 0)))
    console.print(rules)
    rate = report["false_alarms_per_100_vehicle_days"]
    console.print(f"false alarms: {report['false_alarms']}"
                  + ("" if rate is None else f" ({rate:.2f} per 100 healthy vehicle-days)")
                  + f"; sensor faults caught: {report['sensor_faults_caught']} of {report['sensor_faults']}")
    modes = Table(title="failures by mode")
    for column in ("mode", "events", "detected", "median lead (h)"):
        modes.add_column(column, justify="right" if column != "mode" else "left")
    for mode, stats in sorted(report["by_mode"].items()):
        lead = stats["median_lead_h"]
        modes.add_row(mode, str(stats["events"]), str(stats["detected"]), "-" if lead is None else f"{lead:.1f}")
    console.print(modes)
