"""Rendering of the evaluation: the Markdown report, its personalisation section and the PNG plots.

Reads the report dictionary ``training.evaluate`` builds; computes no metric of its own.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["finite_or_none", "report_markdown", "personalisation_markdown", "reliability_plot", "confusion_plot"]


def finite_or_none(x: Any) -> float | None:
    """A float, or None for None and NaN (how JSON and the tables show a metric that does not exist)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def reliability_plot(bins: dict[str, list[float]], horizon: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot(bins["mean_predicted"], bins["observed"], "o-", label="model")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"Reliability, {horizon}-day failure")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion_plot(cm: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(cm, cmap="Blues")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center")
    ax.set_xticks(range(3), ["1 minor", "2 major", "3 critical"])
    ax.set_yticks(range(3), ["1", "2", "3"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

def _fmt(x: Any, digits: int = 3) -> str:
    v = finite_or_none(x) if not isinstance(x, (int, np.integer)) or isinstance(x, bool) else float(x)
    return "n/a" if v is None else f"{v:.{digits}f}"


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {report['model_run']} on {report['evaluated_on']}", "",
             f"{report['vehicles']} vehicles, {report['windows']} windows; dataset hash `{report['data_hash']}` "
             f"(models trained on `{report['model_data_hash']}`). Alert thresholds were chosen on the validation "
             f"split under a budget of {report['alert_budget_per_100_vehicle_days']:g} false alarms per 100 "
             "healthy vehicle-days, never on test.", "", "## Targets", "", "| metric | target | value | met |",
             "|---|---|---|---|"]
    for t in report["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**NO**")
        lines.append(f"| {t['metric']} | {t['target']} | {_fmt(t['value'])} | {met} |")
    lines += ["", "## Where a baseline is as good or better", ""]
    lines += [f"- {x}" for x in report["baseline_wins"]] or ["- nowhere: the models beat both baselines on every headline metric"]
    lines += ["", "## Failure prediction (test windows, censored windows excluded)", "",
              "| horizon | positives / windows | detector | ROC-AUC | PR-AUC | recall@P0.8 | Brier |",
              "|---|---|---|---|---|---|---|"]
    for h, e in report["failure"].items():
        for det in ("model", "fixed_limits", "vehicle_zscore"):
            m = e[det]
            lines.append(f"| {h} d | {e['positives']} / {e['windows']} | {det} | {_fmt(m['roc_auc'])} | {_fmt(m['pr_auc'])} | "
                         f"{_fmt(m['recall_at_precision_0.8'])} | {_fmt(m['brier'])} |")
    lines += ["", "PR-AUC of a random score equals the prevalence: " + ", ".join(
        f"{h} d {_fmt(e['prevalence_pr_auc'])}" for h, e in report["failure"].items()) + ".", "",
        "Per mode (positives of that mode against all negatives):", "",
        "| horizon | mode | positive windows (vehicles) | ROC-AUC | PR-AUC | score |", "|---|---|---|---|---|---|"]
    for h, e in report["failure"].items():
        for mode, m in e["per_mode"].items():
            lines.append(f"| {h} d | {mode} | {m['positives']} ({m['vehicles']}) | {_fmt(m['roc_auc'])} | "
                         f"{_fmt(m['pr_auc'])} | {m['score']} |")
    sev = report["severity"]
    lines += ["", f"## Severity (windows with a failure due within {sev.get('horizon_days', '?')} days)", ""]
    if sev.get("macro_f1") is None:
        lines.append(f"- {sev.get('note', 'not evaluated')}")
    else:
        lines += [f"- macro-F1 **{_fmt(sev['macro_f1'])}** over {sev['windows']} windows ({sev['events']} failures); "
                  f"always predicting the training majority class: {_fmt(sev['baseline_train_majority_macro_f1'])}",
                  "", "| true \\ predicted | 1 | 2 | 3 |", "|---|---|---|---|"]
        lines += [f"| {k + 1} | " + " | ".join(str(v) for v in row) + " |" for k, row in enumerate(sev["confusion_matrix"])]
        lh = sev.get("other_horizon", {})
        lines += ["", f"Over windows with a failure due within {lh.get('horizon_days')} days: macro-F1 "
                  f"{_fmt(lh.get('macro_f1'))} ({lh.get('windows')} windows); within 1 day: "
                  f"{_fmt(sev.get('last_day', {}).get('macro_f1'))} ({sev.get('last_day', {}).get('windows')} windows)."]
    lines += ["", "## Anomaly detection", "",
              "Event-level: an event (a failure's onset-to-failure interval) is detected when an alert falls inside it; "
              "false alarms are alerts in healthy windows (no degradation, no sensor fault, not just after a "
              "failure). Point-wise precision/recall are per window with no point-adjust.", "",
              "| detector | threshold | events | recall | false alarms / 100 veh-days | lead median d | lead p10 d | "
              "point precision | point recall |", "|---|---|---|---|---|---|---|---|---|"]
    for det, m in report["anomaly"].items():
        lines.append(f"| {det} | {_fmt(m['alert_threshold'])} | {m['detected']}/{m['events']} | {_fmt(m['event_recall'])} | "
                     f"{_fmt(m['false_alarms_per_100_vehicle_days'])} | {_fmt(m['lead_median_days'], 1)} | "
                     f"{_fmt(m['lead_p10_days'], 1)} | {_fmt(m['pointwise_precision'])} | {_fmt(m['pointwise_recall'])} |")
    lines += ["", "Sensor faults (anomalies, not failures; share of fault intervals with an alert): " + "; ".join(
        f"{det} {_fmt(m['sensor_faults']['all']['recall'], 2)} of {m['sensor_faults']['all']['faults']}"
        + " (" + ", ".join(f"{k} {_fmt(v['recall'], 2)}" for k, v in m["sensor_faults"].items() if k != "all") + ")"
        for det, m in report["anomaly"].items()) + "."]
    per_mode = report["anomaly"]["lstm_ae"].get("per_mode_recall", {})
    if per_mode:
        lines += ["", "LSTM-AE recall by failure mode: " + ", ".join(
            f"{m} {_fmt(v['event_recall'], 2)} ({v['events']})" for m, v in per_mode.items()) + "."]
    if report.get("personalisation"):
        lines += [""] + personalisation_markdown(report["personalisation"], heading="##")
    lines += ["", "Plots: " + ", ".join(f"`reliability_{h}d.png`" for h in report["failure"]) + ", `severity_confusion.png`.", ""]
    return "\n".join(lines)


def _fa_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "not reached"
    ci = cell["fa_ci"]
    return (f"{cell['false_alarms_per_100_vd']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            + f" (level {cell['level']:.2f}, recall {cell['recall']:.2f})")

def _head_sentence(result: dict[str, Any]) -> str:
    head = result["head"]
    text = f"Head fine-tuned every {result['fine_tune_every_windows']} windows"
    if "kind" in head:  # results since the excess head (older ones describe the own-median head)
        cap = "uncapped" if head["max_offset"] is None else f"capped at {head['max_offset']:g}x the reference"
        shrink = f"shrunk with {head['prior_windows']:g} prior windows" if head["prior_windows"] else "not shrunk"
        text += f" ({head['kind']}, quantile {head['quantile']:g}, {shrink}, {cap}; reference: {head['reference']})"
    text += f"; mean final head version {head['mean_final_version']:.1f}."
    hold = result.get("anomaly_warmup_windows")
    if hold:
        text += (f" Both variants hold anomaly alerts for a twin's first {hold} windows (the twins' cold-start "
                 "hold, `twins.anomaly_warmup_windows`); the personalised twin fits its first head when it ends.")
    return text


def personalisation_markdown(result: dict[str, Any], heading: str = "#") -> list[str]:
    """The comparison as Markdown lines (the bench's .md and the evaluation report's section)."""
    reference, challenger = result["variants"]
    lines = [
        f"{heading} Personalisation: false alarms at equal event recall",
        "",
        f"Verdict: **{result['verdict']}**: personalised twins "
        + ("raise fewer false alarms than fleet-only twins at equal event recall."
           if result["verdict"] == "met" else "are not shown to raise fewer false alarms at equal event recall."),
        "",
        f"Fleet: {result['vehicles']} vehicles x {result['days']:g} days, seed {result['seed']} (not the training "
        f"seed), models `{result['models']}`"
        + (f" (trained on another fleet; this fleet generated with the simulation section of "
           f"`{result['fleet_config']}`)" if result.get("fleet_config") else "")
        + f", failure-rate multiplier {result['failure_rate_multiplier']:g}. "
        f"False alarms: {result['healthy_vehicles']} healthy vehicles whose normal differs from the fleet "
        f"(hot climate, aggressive driver or pack >= 4 years; {result['healthy_vehicle_days']:g} vehicle-days), "
        f"anomaly alerts outside injected sensor faults. Recall: {result['failures']} failures (onset inside the "
        f"observation) on {result['failing_vehicles']} vehicles, detected when an anomaly alert lies between onset "
        f"and failure. {_head_sentence(result)}",
        "",
        f"Each variant's lowest false-alarm rate among alert levels reaching the recall (levels swept "
        f"{result['levels'][0]:g}-{result['levels'][-1]:g}); 95% CIs: bootstrap over vehicles "
        f"({result['bootstrap']} resamples) for rates and the paired difference, Wilson for recall. "
        f"Headline recall ({result['headline_recall']:.2f}) = fleet-only recall at the validated alert level "
        f"{result['reference_level']:g}.",
        "",
        f"| recall at least | {reference}: FA / 100 vehicle-days [95% CI] | {challenger}: FA / 100 vehicle-days "
        f"[95% CI] | difference [95% CI] |",
        "|---|---|---|---|",
    ]
    for row in result["equal_recall"]:
        diff = "-" if "difference" not in row else (
            f"{row['difference']:+.2f}" + (f" [{row['difference_ci'][0]:+.2f}, {row['difference_ci'][1]:+.2f}]"
                                           if row.get("difference_ci") else ""))
        mark = " (headline)" if row["headline"] else ""
        lines.append(f"| {row['recall_at_least']:.2f}{mark} | {_fa_cell(row[reference])} | "
                     f"{_fa_cell(row[challenger])} | {diff} |")
    early = result.get("early_false_alarms")
    headline_row = next((r for r in result["equal_recall"] if r["headline"]), None)
    if early and headline_row and headline_row[reference] and headline_row[challenger]:
        parts = []
        for name in (reference, challenger):
            cell = headline_row[name]
            index = result["levels"].index(cell["level"])
            total = round(cell["false_alarms_per_100_vd"] * result["healthy_vehicle_days"] / 100)
            parts.append(f"{name} {early[name][index]} of {total}")
        hold = result.get("anomaly_warmup_windows")
        why = (f"the first {hold} of them held by the cold-start hold" if hold
               else "before any personal head exists")
        lines += ["", f"Of the headline row's false alarms, in the twins' first {result['early_windows']} windows "
                  f"({why}): {'; '.join(parts)}."]
    better, worse = result["significantly_better_at"], result["significantly_worse_at"]
    lines += ["", "Recall targets where the personalised rate is significantly lower (difference CI below 0): "
              f"{', '.join(f'{r:.2f}' for r in better) or 'none'}; significantly higher (CI above 0): "
              f"{', '.join(f'{r:.2f}' for r in worse) or 'none'}."]
    if "command" in result:
        lines += ["", f"Command: `{result['command']}`"]
    return lines
