"""CLI subcommands of the training area (assembled by serving/cli.py)::

    evtwin prepare  --run runs/<name> [--workers N] [--outcomes labels.csv] [--outcome-labels labels.csv]
    evtwin train    --run runs/<name>
    evtwin evaluate --run runs/<name> [--test-run runs/<other-seed>] [--publish docs/EVALUATION.md]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.alert_states import read_states, write_outcome_labels
from configs.cli import add_config_arguments, config_from_args
from configs.runs import list_vehicles
from configs.settings import Config, TwinsConfig
from training.dataset import prepare_dataset
from training.evaluate import evaluate_run
from training.train import train_all

console = Console(stderr=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    prepare = subparsers.add_parser("prepare", help="windows, features, labels and splits of a generated run")
    add_config_arguments(prepare)
    prepare.add_argument("--run", required=True, help="run directory written by `evtwin generate`")
    prepare.add_argument("--all-test", action="store_true",
                         help="put every vehicle in the test split (a fleet kept for out-of-sample evaluation)")
    prepare.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    prepare.add_argument("--outcomes", default=None, metavar="FILE",
                         help="also write the resolved alert outcomes (the lifecycle log beside the run's "
                              "checkpoints) as a label CSV to FILE (configs.alert_states.read_outcome_labels)")
    prepare.add_argument("--maintenance", default=None,
                         help="maintenance-records CSV (vehicle, date, component or mode[, severity]): its records "
                              "become failure events, so `evtwin train` can train the failure models")
    prepare.add_argument("--outcome-labels", default=None, metavar="FILE",
                         help="resolved alert outcomes (a label CSV from --outcomes): confirmed failures become "
                              "failure events (mode, alert time), false alarms mark the vehicle healthy then")
    prepare.set_defaults(func=run_prepare)

    train = subparsers.add_parser("train", help="train failure, severity and anomaly models on a prepared run")
    add_config_arguments(train)
    train.add_argument("--run", required=True, help="run directory prepared by `evtwin prepare`")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("evaluate", help="judge the trained models on the test split (or another run)")
    add_config_arguments(evaluate)
    evaluate.add_argument("--run", required=True, help="run directory holding the trained models")
    evaluate.add_argument("--test-run", default=None, help="evaluate on every vehicle of this run instead "
                          "(e.g. a fleet generated with another seed); it is prepared if needed")
    evaluate.add_argument("--publish", default=None, help="also copy the Markdown report to this path")
    evaluate.set_defaults(func=run_evaluate)


def checkpoint_uri(run: Path, cfg: Config) -> str:
    """Where the run's twins keep their checkpoints: as configured, else ``<run>/checkpoints`` (as ``evtwin serve``)."""
    configured = cfg.twins.checkpoint_uri
    return str(run / "checkpoints") if configured == TwinsConfig().checkpoint_uri else configured


def export_outcomes(run: Path, cfg: Config, path: str | Path) -> int:
    """The run's resolved alert outcomes as a label CSV at ``path``; returns the number of rows."""
    return write_outcome_labels(path, read_states(checkpoint_uri(run, cfg)))


def run_prepare(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    run = Path(args.run)
    if args.outcomes:  # first: a bad path fails before minutes of preparation
        rows = export_outcomes(run, cfg, args.outcomes)
        console.print(f"{rows} resolved alert outcomes -> {args.outcomes}")
    total = len(list_vehicles(run))
    workers = args.workers or min(os.cpu_count() or 1, max(total, 1))
    columns = (SpinnerColumn(), TextColumn("[bold]preparing"), BarColumn(), MofNCompleteColumn(),
               TextColumn("vehicles"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("prepare", total=total)
        card = prepare_dataset(run, cfg, all_test=args.all_test, workers=workers,
                               on_vehicle=lambda _v: progress.advance(task),
                               maintenance=Path(args.maintenance) if args.maintenance else None,
                               outcome_labels=Path(args.outcome_labels) if args.outcome_labels else None)
    table = Table(title=f"dataset {run / 'dataset'} (hash {card['data_hash']})")
    table.add_column("split")
    table.add_column("vehicles", justify="right")
    table.add_column("windows", justify="right")
    for h in card["horizons"]:
        table.add_column(f"pos {h}d", justify="right")
        table.add_column(f"cens {h}d", justify="right")
    for split in ("train", "validation", "test"):
        cells = [str(x) for h in card["horizons"] for x in (card["positives"][split][str(h)], card["censored"][split][str(h)])]
        table.add_row(split, str(card["vehicles"][split]), str(card["windows"][split]), *cells)
    console.print(table)
    if not card["failure_labels"]:
        console.print("[yellow]no failure labels (no events.parquet, no --maintenance records): `evtwin train` will "
                      "train the anomaly model, the plant relations and the baselines; failure models need labels")
    return 0


def run_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("training", total=None)
        summary = train_all(Path(args.run), cfg, on_step=lambda name: progress.update(task, description=name))
    table = Table(title=f"models in {Path(args.run) / 'models'}")
    table.add_column("model")
    table.add_column("seconds", justify="right")
    table.add_column("validation")
    metrics = summary["metrics"]
    fitted = [name for name, fit in summary["plant"].items() if fit["coefficients"] is not None]
    table.add_row("plant relations (robust LS)", f"{summary['timings']['plant_s']:.1f}",
                  f"{len(fitted)} of {len(summary['plant'])} fitted: {', '.join(fitted) or 'none'}")
    if "failure" in metrics:
        failure = ", ".join(f"{h}d PR-AUC {m['validation_pr_auc']:.3f}" for h, m in metrics["failure"].items())
        table.add_row("failure (LightGBM x horizons)", f"{summary['timings']['failure_s']:.1f}", failure)
        table.add_row("severity (LightGBM)", f"{summary['timings']['severity_s']:.1f}",
                      f"macro-F1 {metrics['severity']['validation_macro_f1']:.3f}")
    else:
        table.add_row("failure, severity", "-", "[yellow]not trained: no failure labels")
    a = metrics["anomaly"]
    table.add_row("anomaly (LSTM-AE)", f"{summary['timings']['anomaly_s']:.1f}",
                  f"event recall {a['validation_event_recall']:.2f} at "
                  f"{a['validation_false_alarms_per_100_vehicle_days']:.2f} FA/100 veh-days ({a['device']})")
    table.add_row("baselines", f"{summary['timings']['baselines_s']:.1f}", "thresholds under the alert budget")
    console.print(table)
    if summary["failure_models"] != "trained":
        console.print(f"[yellow]{summary['failure_models']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    with Progress(SpinnerColumn(), TextColumn("evaluating"), TimeElapsedColumn(), console=console) as progress:
        progress.add_task("evaluate", total=None)
        report = evaluate_run(Path(args.run), cfg, Path(args.test_run) if args.test_run else None)
    table = Table(title=f"targets ({report['evaluated_on']})")
    for col in ("metric", "target", "value", "met"):
        table.add_column(col)
    for t in report["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        met = "n/a" if t["met"] is None else ("[green]yes" if t["met"] else "[red]NO")
        table.add_row(t["metric"], t["target"], value, met)
    console.print(table)
    for loss in report["baseline_wins"]:
        console.print(f"[yellow]baseline as good or better:[/yellow] {loss}")
    markdown = Path(report["out_dir"]) / "report.md"
    if args.publish:
        Path(args.publish).parent.mkdir(parents=True, exist_ok=True)
        Path(args.publish).write_text(markdown.read_text())
    console.print(f"report: {markdown} (and report.json, PNG plots beside it)")
    print(json.dumps({"out_dir": report["out_dir"], "headline": report["headline"]}, default=float))
    return 0
