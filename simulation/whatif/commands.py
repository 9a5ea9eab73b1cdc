"""``evtwin simulate``: what-if runs of the fleet under scenarios and maintenance policies.

    evtwin simulate --scenario heatwave --policy predictive --replications 8
    evtwin simulate --compare --replications 4 --detector oracle
    evtwin simulate --scenario baseline --policy reactive --set whatif.workshop_bays=2

Results go to ``runs/<name>/whatif/`` (Parquet, Markdown, PNG); a table is printed at the end.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from configs.cli import add_config_arguments
from configs.settings import load_config
from simulation.whatif.parallel import run_tasks
from simulation.whatif.report import CONSOLE_KPIS, comparison_rows, write_report
from simulation.whatif.runner import ReplicationTask, models_dir_or_none
from simulation.whatif.scenarios import POLICY_NAMES, list_scenarios, load_scenario

COMPARE_SCENARIOS: tuple[str, ...] = ("baseline", "heatwave", "fast_charge_heavy", "aged_fleet", "small_workshop")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("simulate", help="what-if simulation of the fleet (SimPy, replications on Ray)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--scenario", action="append", default=[],
                        help=f"scenario name or JSON path (repeatable); shipped: {', '.join(list_scenarios())}")
    parser.add_argument("--policy", action="append", default=[], choices=POLICY_NAMES,
                        help="maintenance policy (repeatable); default: the scenario's policies")
    parser.add_argument("--compare", action="store_true",
                        help="run every scenario (or those given) under every policy")
    parser.add_argument("--replications", type=int, default=None, help="replications per cell (seeds seed..seed+n-1)")
    parser.add_argument("--detector", choices=("auto", "twin", "oracle", "random"), default="auto",
                        help="what the predictive policy listens to: twin = real twins and trained models (auto "
                             "when a trained run exists); oracle/random = test detectors")
    parser.add_argument("--models", default=None, help="trained run directory (default runs/<run_name>)")
    parser.add_argument("--out", default=None, help="run directory (default runs/<run_name>); writes <out>/whatif/")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray CPUs for replications (0 = no Ray, in this process); default: all cores")
    parser.add_argument("--address", default=None, help="join an existing Ray cluster")
    parser.set_defaults(func=run)


def _tasks(args: argparse.Namespace) -> tuple[list[Any], dict[str, str]]:
    base = load_config(args.config)
    names = list(args.scenario) or (list(COMPARE_SCENARIOS) if args.compare else ["baseline"])
    tasks, questions = [], {}
    for name in names:
        scenario = load_scenario(name, base=base, overrides=args.overrides)
        config = scenario.config
        questions[scenario.name] = scenario.question
        policies = list(args.policy) or (list(POLICY_NAMES) if args.compare else list(scenario.policies))
        replications = args.replications or config.whatif.replications
        run_dir = Path(args.models) if args.models else Path("runs") / config.run_name
        models_dir = models_dir_or_none(run_dir)
        for policy in policies:
            detector = args.detector
            if policy == "predictive" and detector in ("auto", "twin"):
                if models_dir is None and detector == "twin":
                    raise FileNotFoundError(f"--detector twin needs a trained run: no {run_dir}/models "
                                            "(run `evtwin train`, or pass --models)")
                if models_dir is None:
                    raise FileNotFoundError(
                        f"the predictive policy acts on the twins' predictions, but {run_dir}/models does not exist: "
                        "train first (`evtwin train`), point --models at a trained run, or choose "
                        "--detector oracle|random to bound the policy with a test detector")
                detector = "twin"
            for r in range(replications):
                tasks.append(ReplicationTask(scenario.name, policy, r, config,
                                             detector if detector != "auto" else "twin", models_dir))
    return tasks, questions


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=True)
    tasks, questions = _tasks(args)
    base = load_config(args.config, args.overrides)
    out_dir = Path(args.out) if args.out else Path("runs") / base.run_name
    vehicle_days = sum(t.config.simulation.num_vehicles * t.config.simulation.duration_days_per_vehicle for t in tasks)
    console.print(f"[bold]what-if[/bold]: {len(tasks)} replications ({len(questions)} scenarios), "
                  f"{vehicle_days:,.0f} vehicle-days -> {out_dir / 'whatif'}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        bar = progress.add_task("replications", total=len(tasks))

        def done(result: Any) -> None:
            progress.update(bar, advance=1, description=f"{result.scenario}/{result.policy} #{result.replication}")

        results = run_tasks(tasks, num_cpus=args.workers, on_result=done, address=args.address)
    written = write_report(results, out_dir / "whatif", questions)
    table = Table(title="What-if results (mean ± 95% CI half-width; full table in report.md)")
    for column in ["scenario", "policy", *CONSOLE_KPIS.values()]:
        table.add_column(column, overflow="fold")
    for row in comparison_rows(written["summary"], kpis=tuple(CONSOLE_KPIS), compact=True):
        table.add_row(*row)
    Console().print(table)
    console.print(f"written: {out_dir / 'whatif'} (report.md, *.parquet, *.png)")
    return 0
