"""Write what-if results: Parquet tables, a Markdown comparison and PNG figures.

``write_report(results, out_dir, questions)`` writes into ``out_dir`` (``runs/<name>/whatif/``):

- ``replications.parquet``: one row per (scenario, policy, replication) with every KPI;
- ``summary.parquet``: mean and 95% CI per (scenario, policy, KPI);
- ``differences.parquet``: paired differences to reactive (per scenario) and to baseline (per policy);
- ``events.parquet``, ``visits.parquet``, ``lead_times.parquet``, ``queue.parquet``: the records behind them;
- ``report.md``: the questions and the comparison table;
- ``downtime_cost_by_policy.png``, ``lead_times.png``, ``workshop_queue.png``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from simulation.whatif.kpis import DIFFERENCE_KPIS, KPI_NAMES, SCENARIO_DIFFERENCE_KPIS, paired_differences, summarise
from simulation.whatif.runner import ReplicationResult

TABLE_KPIS: tuple[str, ...] = (
    "total_cost", "roadside_failures", "caught_early", "downtime_hours", "false_alarm_visits",
    "workshop_utilisation", "mean_workshop_wait_hours", "alert_lead_time_median_hours",
)


def _records(results: Sequence[ReplicationResult], attribute: str) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        for item in getattr(r, attribute):
            rows.append({"scenario": r.scenario, "policy": r.policy, "replication": r.replication, **item})
    return rows


def _write(rows: list[dict[str, Any]], path: Path) -> None:
    if rows:
        pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")


def format_cell(mean: float, low: float, high: float) -> str:
    """``mean [low, high]`` with sensible digits.

    >>> format_cell(1234.5, 1000.0, 1500.0)
    '1,234 [1,000, 1,500]'
    >>> format_cell(0.25, math.nan, math.nan)
    '0.25'
    """
    def number(x: float) -> str:
        if math.isnan(x):
            return "n/a"
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"

    if math.isnan(low) or math.isnan(high):
        return number(mean)
    return f"{number(mean)} [{number(low)}, {number(high)}]"


CONSOLE_KPIS: dict[str, str] = {
    "total_cost": "cost EUR", "roadside_failures": "roadside", "caught_early": "caught early",
    "downtime_hours": "downtime h", "false_alarm_visits": "false alarms", "workshop_utilisation": "util",
    "mean_workshop_wait_hours": "wait h",
}


def compact_cell(mean: float, low: float, high: float) -> str:
    """``mean ±half-width`` in few characters, for the console.

    >>> compact_cell(934_245.0, 900_000.0, 968_490.0)
    '934k ±34k'
    >>> compact_cell(0.37, 0.35, 0.39)
    '0.37 ±0.02'
    """
    def number(x: float) -> str:
        if math.isnan(x):
            return "n/a"
        if abs(x) >= 10_000:
            return f"{x / 1000:,.0f}k"
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"

    if math.isnan(low) or math.isnan(high):
        return number(mean)
    return f"{number(mean)} ±{number((high - low) / 2.0)}"


def comparison_rows(summary: Sequence[Mapping[str, Any]], kpis: Sequence[str] = TABLE_KPIS,
                    compact: bool = False) -> list[list[str]]:
    """One row per (scenario, policy): its cells for ``kpis`` (mean [95% CI], or mean ±half-width)."""
    cell = compact_cell if compact else format_cell
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in summary:
        key = (str(row["scenario"]), str(row["policy"]))
        cells.setdefault(key, {})[str(row["kpi"])] = cell(row["mean"], row["ci_low"], row["ci_high"])
    return [[scenario, policy] + [values.get(k, "") for k in kpis] for (scenario, policy), values in cells.items()]


def markdown_report(summary: Sequence[Mapping[str, Any]], questions: Mapping[str, str], replications: int,
                    detectors: Mapping[tuple[str, str], str]) -> str:
    lines = ["# What-if simulation", "", f"Replications per cell: {replications}; cells show mean [95% CI].", ""]
    for name, question in questions.items():
        lines.append(f"- **{name}**: {question}")
    header = ["scenario", "policy"] + list(TABLE_KPIS)
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison_rows(summary):
        detector = detectors.get((row[0], row[1]), "none")
        if detector != "none":
            row = [row[0], f"{row[1]} ({detector})"] + row[2:]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Figures: `downtime_cost_by_policy.png`, `lead_times.png`, `workshop_queue.png`.", ""]
    return "\n".join(lines)


def differences_markdown(differences: Sequence[Mapping[str, Any]], title: str, fixed: str, against: str,
                         kpi_names: Sequence[str] = DIFFERENCE_KPIS) -> str:
    """A table of paired differences (one row per (fixed, against) pair, one column per KPI)."""
    if not differences:
        return ""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in differences:
        key = (str(row[fixed]), str(row[against]))
        cells.setdefault(key, {})[str(row["kpi"])] = format_cell(row["mean"], row["ci_low"], row["ci_high"])
    reference = differences[0]["reference"]
    header = [fixed, f"{against} - {reference}"] + list(kpi_names)
    lines = [f"## {title}", "", "Paired by replication (same seed, same fleet and failures): mean [95% CI] of "
             "the difference; below zero is better for every column.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (fixed_value, value), row in cells.items():
        lines.append("| " + " | ".join([fixed_value, value] + [row.get(k, "") for k in kpi_names]) + " |")
    return "\n".join(lines + [""])


def plot_downtime_and_cost(summary: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, kpi, label in ((axes[0], "downtime_hours", "vehicle downtime (h)"), (axes[1], "total_cost", "total cost (EUR)")):
        rows = [r for r in summary if r["kpi"] == kpi]
        names = [f"{r['scenario']}\n{r['policy']}" for r in rows]
        means = [r["mean"] for r in rows]
        errors = [[0.0 if math.isnan(r["ci_low"]) else r["mean"] - r["ci_low"] for r in rows],
                  [0.0 if math.isnan(r["ci_high"]) else r["ci_high"] - r["mean"] for r in rows]]
        ax.bar(range(len(rows)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(f"{label}, mean and 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lead_times(results: Sequence[ReplicationResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[float]] = {}
    for r in results:
        groups.setdefault(f"{r.scenario} / {r.policy}", []).extend(h / 24.0 for h in r.lead_times_h)
    plotted = False
    for label, days in groups.items():
        if days:
            ax.hist(days, bins=30, alpha=0.5, label=f"{label} (n={len(days)})")
            plotted = True
    if not plotted:
        ax.text(0.5, 0.5, "no alerts raised (no predictive policy in this run)", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("alert lead time before failure (days)")
    ax.set_ylabel("failures")
    ax.set_title("Alert lead times")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_workshop_queue(results: Sequence[ReplicationResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    shown: set[str] = set()
    for r in results:
        if r.replication != min(x.replication for x in results):
            continue  # one replication per cell keeps the lines readable
        label = f"{r.scenario} / {r.policy}"
        if label in shown or not r.queue:
            continue
        shown.add(label)
        ax.step([t / 24.0 for t, _, _ in r.queue], [q for _, q, _ in r.queue], where="post", label=label, lw=1)
    ax.set_xlabel("day")
    ax.set_ylabel("vehicles waiting for a bay or technician")
    ax.set_title("Workshop queue over time (first replication)")
    if shown:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: Sequence[ReplicationResult], out_dir: str | Path,
                 questions: Mapping[str, str]) -> dict[str, Any]:
    """Write every table and figure; returns the summary rows (for the console table)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    summary = summarise(rows, kpi_names=KPI_NAMES)
    _write(rows, out / "replications.parquet")
    _write(summary, out / "summary.parquet")
    _write(_records(results, "events"), out / "events.parquet")
    _write(_records(results, "visits"), out / "visits.parquet")
    _write([{"scenario": r.scenario, "policy": r.policy, "replication": r.replication, "lead_time_hours": h}
            for r in results for h in r.lead_times_h], out / "lead_times.parquet")
    _write([{"scenario": r.scenario, "policy": r.policy, "replication": r.replication, "t_hours": t,
             "waiting": q, "bays_busy": b} for r in results for t, q, b in r.queue], out / "queue.parquet")
    replications = max((sum(1 for x in results if (x.scenario, x.policy) == (r.scenario, r.policy))
                        for r in results), default=0)
    detectors = {(r.scenario, r.policy): r.detector for r in results}
    by_policy = paired_differences(rows, "policy", "reactive", "scenario")
    by_scenario = paired_differences(rows, "scenario", "baseline", "policy", SCENARIO_DIFFERENCE_KPIS)
    _write(by_policy + by_scenario, out / "differences.parquet")
    (out / "report.md").write_text("\n".join([
        markdown_report(summary, questions, replications, detectors),
        differences_markdown(by_policy, "Each policy against reactive maintenance", "scenario", "policy"),
        differences_markdown(by_scenario, "Each scenario against the baseline", "policy", "scenario",
                             SCENARIO_DIFFERENCE_KPIS),
    ]))
    plot_downtime_and_cost(summary, out / "downtime_cost_by_policy.png")
    plot_lead_times(results, out / "lead_times.png")
    plot_workshop_queue(results, out / "workshop_queue.png")
    return {"summary": summary, "rows": rows}
