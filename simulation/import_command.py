"""``evtwin import``: a real fleet's CSV/Parquet recordings -> a run folder, through a signal catalog.

    evtwin import --catalog configs/catalogs/voltra_e5.json --model E5-LR --out runs/myfleet logs/*.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.catalog import load_catalog
from simulation.importer import ImportSummary, import_fleet

console = Console(stderr=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import", help="import CSV/Parquet recordings of a real fleet through a signal catalog")
    parser.add_argument("--catalog", required=True,
                        help="catalog JSON (or the name of one in configs/catalogs/, e.g. voltra_e5)")
    parser.add_argument("--model", default=None, help="vehicle model in the catalog (default: its 'default')")
    parser.add_argument("--out", required=True, help="run directory to write, e.g. runs/myfleet")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("inputs", nargs="+", help="CSV (.csv, .csv.gz, .tsv) or Parquet files")
    parser.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"run directory {out} already exists (use --overwrite to replace it)")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        reading = progress.add_task("reading files", total=len(args.inputs), info="")
        writing = progress.add_task("writing vehicles", total=None, info="", start=False)
        rows = 0

        def file_done(path: str, frames: int) -> None:
            nonlocal rows
            rows += frames
            progress.update(reading, advance=1, info=f"{rows:,} rows")

        def vehicle_done(vehicle) -> None:  # noqa: ANN001 - VehicleFrames
            if not progress.tasks[writing].started:
                progress.start_task(writing)
            progress.update(writing, advance=1, info=vehicle.vehicle_id)

        summary = import_fleet(catalog, args.model, args.inputs, out, overwrite=args.overwrite,
                               on_file=file_done, on_vehicle=vehicle_done)
    console.print(summary_table(summary))
    for line in summary_notes(summary):
        console.print(line)
    console.print(f"run written to [bold]{summary.run_dir}[/bold]")
    return 0


def summary_table(summary: ImportSummary) -> Table:
    """Vehicles, frames, fields sent, bad values per signal and counter restarts."""
    manifest = summary.manifest
    table = Table(title=f"imported fleet: {summary.run_dir} (catalog {manifest['catalog']['name']}, "
                        f"model {manifest['catalog']['model']})")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("files", str(len(summary.report.files)))
    table.add_row("rows read", f"{summary.report.rows_read:,}")
    table.add_row("vehicles", f"{summary.num_vehicles:,}")
    table.add_row("frames written", f"{summary.frames:,}")
    interval = manifest["frame_interval_s"]
    table.add_row("median frame interval", f"{interval:g} s" if interval is not None else "-")
    fitted_counts = sorted({len(f) for f in summary.fitted_sensors.values()})
    table.add_row("fields sent per vehicle", ", ".join(map(str, fitted_counts)))
    counters = summary.report.counters.values()
    for name in ("restarts", "duplicates", "late", "lost_frames"):
        table.add_row(f"counter {name.replace('_', ' ')}", f"{sum(getattr(c, name) for c in counters):,}")
    for signal, kinds in summary.report.issues_by_signal().items():
        for kind, count in kinds.items():
            table.add_row(f"bad values {signal} ({kind.replace('_', ' ')})", f"{count:,}")
    return table


def summary_notes(summary: ImportSummary) -> list[str]:
    notes = ["[yellow]no events.parquet[/yellow]: the input has no failure records, so the run has no failure "
             "labels (the anomaly path and baselines can train on it; failure models need labels)"]
    if summary.report.missing_signals:
        notes.append(f"catalog signals in no input file: {', '.join(sorted(summary.report.missing_signals))}")
    if summary.report.ignored_columns:
        notes.append(f"input columns the catalog does not map (ignored): "
                     f"{', '.join(sorted(summary.report.ignored_columns))}")
    restarted = {v: c.restarts for v, c in summary.report.counters.items() if c.restarts}
    if restarted:
        listed = ", ".join(f"{v} ({n})" for v, n in sorted(restarted.items())[:10])
        notes.append(f"counter restarts (re-based to a continuous seq): {listed}"
                     + (f" and {len(restarted) - 10} more vehicles" if len(restarted) > 10 else ""))
    return notes
