"""``evtwin generate``: write a synthetic fleet run directory, with a progress bar and a summary table.

    evtwin generate --config configs/config.json --out runs/default [--overwrite] [--plots] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from configs.cli import add_config_arguments, config_from_args
from simulation.failures import FAILURE_MODES, SEVERITY_LEVELS
from simulation.plots import write_precursor_plots
from simulation.writer import RunSummary, VehicleResult, write_run

console = Console(stderr=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate a synthetic fleet (frames, aggregates, ground truth)")
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, help="run directory (default: runs/<run_name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--plots", action="store_true", help="also write precursor plots under <out>/plots/")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: CPU count); the output does not depend on it")
    parser.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / config.run_name
    workers = args.workers or min(os.cpu_count() or 1, config.simulation.num_vehicles)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"run directory {out} already exists (use --overwrite to replace it)")
    columns = (TextColumn("[bold]generating"), BarColumn(), MofNCompleteColumn(), TextColumn("vehicles"),
               TextColumn("{task.fields[frames]:,} frames"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("generate", total=config.simulation.num_vehicles, frames=0)
        frames = 0

        def advance(result: VehicleResult) -> None:
            nonlocal frames
            frames += result.frames
            progress.update(task, advance=1, frames=frames)

        summary = write_run(config, out, overwrite=args.overwrite, workers=workers, on_vehicle_done=advance)
    console.print(summary_table(summary))
    if args.plots:
        written = write_precursor_plots(out)
        console.print(f"wrote {len(written)} plots under {out / 'plots'}")
    console.print(f"run written to [bold]{out}[/bold]")
    return 0


def summary_table(summary: RunSummary) -> Table:
    """Vehicles, frames and failure events by mode (observed in the window / latent after it)."""
    table = Table(title=f"synthetic fleet: {summary.run_dir}")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("vehicles", f"{summary.num_vehicles:,}")
    table.add_row("healthy vehicles (no failure)", f"{summary.healthy_vehicles:,}")
    table.add_row("frames", f"{summary.frames:,}")
    table.add_row("frames/s (wall)", f"{summary.frames_per_second:,.0f}")
    for mode in FAILURE_MODES:
        total = summary.events_by_mode.get(mode, 0)
        observed = summary.observed_by_mode.get(mode, 0)
        table.add_row(f"events {mode}", f"{total} ({observed} observed, {total - observed} latent)")
    for severity, count in summary.severity_counts.items():
        table.add_row(f"severity {severity} ({SEVERITY_LEVELS[severity]})", str(count))
    for kind, count in summary.sensor_faults_by_kind.items():
        table.add_row(f"sensor faults {kind}", str(count))
    return table
