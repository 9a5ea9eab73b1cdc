"""`evtwin evaluate`: judge the trained models on held-out data, beside baselines, against the targets.

Reads the test split of the training run (or every window of another run's dataset, e.g. a fleet
generated with another seed) and writes ``report.json``, ``report.md`` and PNG plots. Alert
thresholds come from the artefacts (chosen on validation under the alert budget), never from test.
When ``bench/bench_personalisation.py`` has written ``<model run>/evaluation/personalisation.json``, the
report also carries its "Personalisation" section (false alarms at equal event recall, with and without
the twins' per-vehicle head).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from configs.settings import Config
from training.artifacts import MODELS_DIR, load_anomaly_model, load_failure_model, load_severity_model
from training.dataset import DATASET_DIR, SPLITS, prepare_dataset, read_card
from training.detectors import FixedLimits, VehicleBlock, alert_outcome, vehicle_zscore
from training.metrics import (
    average_precision, brier_score, confusion_matrix, macro_f1, pointwise_precision_recall, recall_at_precision,
    reliability_bins, roc_auc,
)
from training.alerting import alert_indices, flagged
from training.train import SplitData, alert_policy_factory, load_split, vehicle_blocks

__all__ = ["PERSONALISATION_FILE", "TARGETS", "equal_recall_comparison", "evaluate_run", "frontier_false_alarms",
           "personalisation_markdown", "read_personalisation", "report_markdown", "wilson_interval"]

# (key in report["headline"], comparison, target) from configs/evaluation_metrics.md / issue 3.
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("failure_7d_pr_auc", ">=", 0.85), ("failure_7d_roc_auc", ">=", 0.95), ("failure_30d_roc_auc", ">=", 0.90),
    ("severity_macro_f1", ">=", 0.80), ("anomaly_event_recall", ">=", 0.90),
    ("anomaly_false_alarms_per_100_vehicle_days", "<=", 1.0), ("anomaly_lead_median_days", ">=", 3.0),
)
DETECTORS = ("lstm_ae", "fixed_limits", "vehicle_zscore")
MIN_VEHICLES_PER_MODE = 5  # configs/evaluation_metrics.md: per mode where >= 5 positive vehicles


def _concat(parts: list[SplitData]) -> SplitData:
    parts = [p for p in parts if p.size]
    if not parts:
        raise ValueError("no windows to evaluate")
    return SplitData(np.concatenate([p.vehicle_id for p in parts]), np.concatenate([p.ends for p in parts]),
                     np.concatenate([p.X for p in parts]),
                     {k: np.concatenate([p.labels[k] for p in parts]) for k in parts[0].labels})


def load_evaluation_data(model_run: Path, test_run: Path | None, cfg: Config) -> tuple[SplitData, Path, dict]:
    """The windows to judge: the model run's test split, or all of another run's windows."""
    horizons = tuple(int(h) for h in read_card(model_run)["horizons"])
    if test_run is None:
        return load_split(model_run, "test", horizons), model_run, read_card(model_run)
    if not (Path(test_run) / DATASET_DIR / "card.json").exists():
        prepare_dataset(Path(test_run), cfg, all_test=True)
    card = read_card(test_run)
    if tuple(card["horizons"]) != horizons or card["window_ms"] != read_card(model_run)["window_ms"]:
        raise ValueError(f"{test_run}: dataset windows/horizons differ from the model run's; re-run prepare")
    return _concat([load_split(test_run, s, horizons) for s in SPLITS]), Path(test_run), card


def _safe(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def failure_section(model_run: Path, data: SplitData, horizons: tuple[int, ...], limits: FixedLimits,
                    blocks: list[VehicleBlock], out_dir: Path) -> dict[str, Any]:
    model = load_failure_model(model_run)
    probs = model.predict(data.X)
    mode_risk = model.predict_modes(data.X)
    baseline_scores = {"fixed_limits": limits.score(data.X), "vehicle_zscore": _zscore_rows(data, blocks)}
    out: dict[str, Any] = {}
    for h in horizons:
        y = data.labels[f"y_{h}d"]
        rows = y >= 0
        yy, p = y[rows] == 1, probs[h][rows]
        entry: dict[str, Any] = {
            "windows": int(rows.sum()), "positives": int(yy.sum()),
            "model": {"roc_auc": roc_auc(yy, p), "pr_auc": average_precision(yy, p),
                      "recall_at_precision_0.8": recall_at_precision(yy, p, 0.8), "brier": brier_score(yy, p)},
            "reliability": reliability_bins(yy, p),
        }
        for name, s in baseline_scores.items():
            entry[name] = {"roc_auc": roc_auc(yy, s[rows]), "pr_auc": average_precision(yy, s[rows]),
                           "recall_at_precision_0.8": recall_at_precision(yy, s[rows], 0.8), "brier": None}
        entry["prevalence_pr_auc"] = float(yy.mean()) if yy.size else None
        per_mode = {}
        for mode in sorted(set(data.labels["next_mode"][rows & (y == 1)].tolist())):
            sel = rows & ((y == 0) | (data.labels["next_mode"] == mode))
            ym = (y[sel] == 1)
            if ym.sum() == 0 or (~ym).sum() == 0:
                continue
            score = mode_risk[h][mode][sel] if mode_risk and mode in mode_risk[h] else probs[h][sel]
            vehicles = len(set(data.vehicle_id[rows & (y == 1) & (data.labels["next_mode"] == mode)].tolist()))
            if vehicles < MIN_VEHICLES_PER_MODE:
                per_mode[mode] = {"positives": int(ym.sum()), "vehicles": vehicles, "roc_auc": None, "pr_auc": None,
                                  "score": f"not scored (< {MIN_VEHICLES_PER_MODE} vehicles)"}
                continue
            per_mode[mode] = {"positives": int(ym.sum()), "vehicles": vehicles, "roc_auc": roc_auc(ym, score),
                              "pr_auc": average_precision(ym, score),
                              "score": "per-mode risk" if mode_risk and mode in mode_risk[h] else "overall risk"}
        entry["per_mode"] = per_mode
        out[str(h)] = entry
        _reliability_plot(entry["reliability"], h, out_dir / f"reliability_{h}d.png")
    return out


def _zscore_rows(data: SplitData, blocks: list[VehicleBlock]) -> np.ndarray:
    """vehicle_zscore per row of ``data`` (blocks are contiguous, time-ordered slices of it)."""
    out = np.zeros(data.size)
    lookup = {b.vehicle_id: vehicle_zscore(b.X) for b in blocks}
    change = np.flatnonzero(data.vehicle_id[1:] != data.vehicle_id[:-1]) + 1
    for a, b in zip(np.concatenate([[0], change]), np.concatenate([change, [data.size]])):
        order = np.argsort(data.ends[a:b], kind="stable")
        out[np.arange(a, b)[order]] = lookup[str(data.vehicle_id[a])]
    return out


def severity_section(model_run: Path, data: SplitData, horizon: int, out_dir: Path,
                     within_ms: int | None = None) -> dict[str, Any]:
    """Severity on windows with a failure due within ``horizon`` days (or within ``within_ms``, if given)."""
    model = load_severity_model(model_run)
    rows = (data.labels[f"y_{horizon}d"] == 1) & (data.labels["next_severity"] > 0)
    if within_ms is not None:
        rows &= (data.labels["next_failure_ms"] - data.ends) <= within_ms
    y = data.labels["next_severity"][rows].astype(int)
    if y.size == 0:
        return {"windows": 0, "macro_f1": None, "note": "no positive windows with a severity in this data"}
    pred = model.predict(data.X[rows])
    cm = confusion_matrix(y, pred, [1, 2, 3])
    majority = int(np.bincount(y, minlength=4)[1:].argmax() + 1)
    train_counts = model.meta["metrics"].get("class_counts", [1, 1, 1])
    prior = int(np.argmax(train_counts) + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    _confusion_plot(cm, out_dir / "severity_confusion.png")
    return {"windows": int(rows.sum()), "events": int(len(set(zip(data.vehicle_id[rows].tolist(),
                                                                   data.labels["next_failure_ms"][rows].tolist())))),
            "macro_f1": macro_f1(y, pred, [1, 2, 3]), "confusion_matrix": cm.tolist(), "labels": [1, 2, 3],
            "baseline_train_majority_macro_f1": macro_f1(y, np.full(y.size, prior), [1, 2, 3]),
            "test_majority_class": majority}


def _sensor_fault_recall(blocks: list[VehicleBlock], scores: dict[str, np.ndarray], threshold: float,
                         policy_for, faults: dict[str, list[tuple[int, int, str]]], window_ms: int) -> dict[str, Any]:
    """Share of sensor-fault intervals with an alert in a window overlapping them, per fault kind."""
    policy = policy_for(threshold)
    hit: dict[str, list[bool]] = {}
    for b in blocks:
        alert_ms = b.ends[alert_indices(b.ends, scores[b.vehicle_id], policy)]
        for start, end, kind in faults.get(b.vehicle_id, []):
            if end <= b.ends[0] - window_ms or start > b.ends[-1]:
                continue  # not within this vehicle's evaluated windows
            hit.setdefault(kind, []).append(bool(((alert_ms >= start) & (alert_ms - window_ms < end)).any()))
    out = {k: {"faults": len(v), "recall": float(np.mean(v))} for k, v in sorted(hit.items())}
    every = [x for v in hit.values() for x in v]
    out["all"] = {"faults": len(every), "recall": float(np.mean(every)) if every else float("nan")}
    return out


def anomaly_section(model_run: Path, blocks: list[VehicleBlock], cfg: Config, limits: FixedLimits,
                    stride_ms: int, out_dir: Path, faults: dict[str, list[tuple[int, int, str]]] | None = None,
                    window_ms: int = 3_600_000) -> dict[str, Any]:
    model = load_anomaly_model(model_run)
    baselines = json.loads((model_run / MODELS_DIR / "baselines.json").read_text())
    scorers = {
        "lstm_ae": (lambda X: model.score_vehicle(X)[0], model.alert_threshold),
        "fixed_limits": (limits.score, baselines["fixed_limits_alert_threshold"]),
        "vehicle_zscore": (vehicle_zscore, baselines["vehicle_zscore_alert_threshold"]),
    }
    policy = alert_policy_factory(cfg)
    out: dict[str, Any] = {}
    for name, (fn, threshold) in scorers.items():
        scores = {b.vehicle_id: fn(b.X) for b in blocks}
        outcome = alert_outcome(blocks, scores, float(threshold), policy, stride_ms)
        judged = np.concatenate([b.healthy | b.anomaly for b in blocks])
        truth = np.concatenate([b.anomaly for b in blocks])[judged]
        flags = np.concatenate([flagged(scores[b.vehicle_id], threshold) for b in blocks])[judged]
        precision, recall = pointwise_precision_recall(truth, flags)
        leads = np.asarray(outcome.leads_days)
        out[name] = {
            "alert_threshold": float(threshold), "events": outcome.events, "detected": outcome.detected,
            "event_recall": outcome.event_recall, "false_alarms": outcome.false_alarms,
            "healthy_vehicle_days": outcome.healthy_days,
            "false_alarms_per_100_vehicle_days": outcome.false_alarms_per_100,
            "lead_median_days": float(np.median(leads)) if leads.size else float("nan"),
            "lead_p10_days": float(np.percentile(leads, 10)) if leads.size else float("nan"),
            "pointwise_precision": precision, "pointwise_recall": recall, "alerts": outcome.alerts,
        }
        # Alerts during sensor faults are right (they are anomalies) but not failures: reported apart.
        out[name]["sensor_faults"] = _sensor_fault_recall(blocks, scores, float(threshold), policy, faults or {}, window_ms)
        if name == "lstm_ae":
            out[name]["per_mode_recall"] = _per_mode_recall(blocks, scores, float(threshold), policy, stride_ms)
    return out


def _faults_by_vehicle(data_run: Path, split: str | None) -> dict[str, list[tuple[int, int, str]]]:
    path = data_run / DATASET_DIR / "sensor_faults.parquet"
    if not path.exists():
        return {}
    table = pq.read_table(path).to_pydict()
    out: dict[str, list[tuple[int, int, str]]] = {}
    for i, v in enumerate(table["vehicle_id"]):
        if split is None or table["split"][i] == split:
            out.setdefault(v, []).append((int(table["start_ms"][i]), int(table["end_ms"][i]), str(table["kind"][i])))
    return out


def _per_mode_recall(blocks, scores, threshold, policy, stride_ms) -> dict[str, dict[str, float]]:
    modes = sorted({m for b in blocks for _, _, m in b.events})
    out = {}
    for mode in modes:
        sub = [VehicleBlock(b.vehicle_id, b.ends, b.X, b.healthy, b.anomaly, [e for e in b.events if e[2] == mode])
               for b in blocks]
        o = alert_outcome(sub, scores, threshold, policy, stride_ms)
        out[mode] = {"events": o.events, "event_recall": o.event_recall,
                     "lead_median_days": float(np.median(o.leads_days)) if o.leads_days else float("nan")}
    return out


def _reliability_plot(bins: dict[str, list[float]], horizon: int, path: Path) -> None:
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


def _confusion_plot(cm: np.ndarray, path: Path) -> None:
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


def headline(report: dict[str, Any]) -> dict[str, float | None]:
    horizons = report["horizons"]
    f, a = report["failure"], report["anomaly"]["lstm_ae"]
    get = lambda h, k: f.get(str(h), {}).get("model", {}).get(k)  # noqa: E731
    return {
        "failure_7d_pr_auc": get(7, "pr_auc"), "failure_7d_roc_auc": get(7, "roc_auc"),
        "failure_30d_roc_auc": get(30, "roc_auc") if 30 in horizons else None,
        "severity_macro_f1": report["severity"].get("macro_f1"),
        "anomaly_event_recall": a["event_recall"],
        "anomaly_false_alarms_per_100_vehicle_days": a["false_alarms_per_100_vehicle_days"],
        "anomaly_lead_median_days": a["lead_median_days"],
    }


def judge(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Targets met or not, and every headline metric where a baseline is as good as or better than us."""
    head = headline(report)
    targets = []
    for key, op, target in TARGETS:
        value = head.get(key)
        met = None if value is None or (isinstance(value, float) and math.isnan(value)) else (
            value >= target if op == ">=" else value <= target)
        targets.append({"metric": key, "target": f"{op} {target}", "value": value, "met": met})
    losses = []
    for h, entry in report["failure"].items():
        for metric in ("roc_auc", "pr_auc", "recall_at_precision_0.8"):
            ours = entry["model"][metric]
            for base in ("fixed_limits", "vehicle_zscore"):
                theirs = entry[base][metric]
                if _num(ours) is not None and _num(theirs) is not None and theirs >= ours:
                    losses.append(f"failure {h} d {metric}: {base} {theirs:.3f} >= model {ours:.3f}")
    ours = report["anomaly"]["lstm_ae"]
    for base in ("fixed_limits", "vehicle_zscore"):
        theirs = report["anomaly"][base]
        for metric, better in (("event_recall", 1), ("lead_median_days", 1), ("pointwise_precision", 1),
                               ("pointwise_recall", 1), ("false_alarms_per_100_vehicle_days", -1)):
            o, t = _num(ours[metric]), _num(theirs[metric])
            if o is not None and t is not None and (t - o) * better > 0:
                losses.append(f"anomaly {metric}: {base} {t:.3f} beats LSTM-AE {o:.3f}")
    sev = report["severity"]
    if _num(sev.get("macro_f1")) is not None and sev["baseline_train_majority_macro_f1"] >= sev["macro_f1"]:
        losses.append(f"severity macro-F1: majority class {sev['baseline_train_majority_macro_f1']:.3f} "
                      f">= model {sev['macro_f1']:.3f}")
    return targets, losses


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def evaluate_run(model_run: Path, cfg: Config, test_run: Path | None = None, out_dir: Path | None = None) -> dict:
    model_run = Path(model_run)
    data, data_run, card = load_evaluation_data(model_run, test_run, cfg)
    model_card = read_card(model_run)
    horizons = tuple(int(h) for h in model_card["horizons"])
    stride_ms = int(model_card["stride_ms"])
    name = "test-split" if test_run is None else f"run-{Path(test_run).name}"
    out_dir = Path(out_dir) if out_dir else model_run / "evaluation" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    events = pq.read_table(Path(data_run) / DATASET_DIR / "events.parquet")
    blocks = vehicle_blocks(data, events, stride_ms)
    baselines = json.loads((model_run / MODELS_DIR / "baselines.json").read_text())
    limits = FixedLimits.from_dict(baselines["fixed_limits"])
    report: dict[str, Any] = {
        "model_run": str(model_run), "evaluated_on": str(data_run) + (" (test split)" if test_run is None else " (all vehicles)"),
        "data_hash": card["data_hash"], "model_data_hash": model_card["data_hash"], "horizons": list(horizons),
        "vehicles": len(blocks), "windows": data.size,
        "alert_budget_per_100_vehicle_days": cfg.training.alert_budget_per_100_vehicle_days,
    }
    report["failure"] = failure_section(model_run, data, horizons, limits, blocks, out_dir)
    # Headline as configs/evaluation_metrics.md defines it: failures due within the shortest horizon
    # (severity is knowable once the degradation is far along); the longest horizon is reported beside it.
    report["severity"] = severity_section(model_run, data, horizons[0], out_dir)
    report["severity"]["horizon_days"] = horizons[0]
    longest = severity_section(model_run, data, horizons[-1], out_dir / "longest")
    report["severity"]["other_horizon"] = {"horizon_days": horizons[-1], "macro_f1": longest.get("macro_f1"),
                                           "windows": longest.get("windows")}
    last_day = severity_section(model_run, data, horizons[0], out_dir / "last_day", within_ms=86_400_000)
    report["severity"]["last_day"] = {"macro_f1": last_day.get("macro_f1"), "windows": last_day.get("windows")}
    faults = _faults_by_vehicle(Path(data_run), None if test_run is not None else "test")
    report["anomaly"] = anomaly_section(model_run, blocks, cfg, limits, stride_ms, out_dir, faults,
                                        int(model_card["window_ms"]))
    report["headline"] = headline(report)
    report["targets"], report["baseline_wins"] = judge(report)
    personalisation = read_personalisation(model_run)
    if personalisation is not None:
        report["personalisation"] = personalisation
    clean = json.loads(json.dumps(report, default=float), parse_constant=lambda c: None)
    (out_dir / "report.json").write_text(json.dumps(_nan_to_none(clean), indent=1) + "\n")
    (out_dir / "report.md").write_text(report_markdown(report))
    report["out_dir"] = str(out_dir)
    return report


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return _safe(x) if isinstance(x, float) else x


def _fmt(x: Any, digits: int = 3) -> str:
    v = _num(x) if not isinstance(x, (int, np.integer)) or isinstance(x, bool) else float(x)
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
              "| horizon | positives / windows | detector | ROC-AUC | PR-AUC | recall@P0.8 | Brier |", "|---|---|---|---|---|---|---|"]
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


# ---------------------------------------------------------------------------------------------------
# Personalisation: false alarms of two twin variants at equal event recall (bench_personalisation).

PERSONALISATION_FILE = "personalisation.json"  # in <model run>/evaluation/, written by bench/bench_personalisation.py
_Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = _Z95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well behaved at 0 and 1 and for small n).

    >>> [round(x, 3) for x in wilson_interval(7, 10)]
    [0.397, 0.892]
    """
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def frontier_false_alarms(recall: np.ndarray, false_alarms: np.ndarray, target: float) -> tuple[float, int]:
    """Lowest false-alarm rate over the levels whose recall is at least ``target``, and that level's index.

    The operating frontier of a detector: recall is not monotonic in the alert level (one alert per
    episode), so "the level giving recall r" is not unique; the best one an operator could pick is.
    Returns (nan, -1) when no level reaches the target.

    >>> frontier_false_alarms(np.array([0.9, 0.5, 0.6]), np.array([5.0, 1.0, 2.0]), 0.55)
    (2.0, 2)
    """
    ok = np.flatnonzero(np.asarray(recall) >= target - 1e-12)
    if not ok.size:
        return (float("nan"), -1)
    best = ok[np.argmin(np.asarray(false_alarms)[ok])]
    return (float(false_alarms[best]), int(best))


def equal_recall_comparison(counts: dict[str, np.ndarray], healthy: np.ndarray, events: np.ndarray,
                            days_per_vehicle: float, levels: np.ndarray, recall_targets: tuple[float, ...],
                            reference_level: float, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare variants' false alarms per 100 vehicle-days at matched event recall.

    ``counts[variant]``: (vehicles x levels); for a healthy vehicle its false alarms, for a failing
    one its detected events. ``events``: failures per vehicle (0 for healthy ones). The first variant
    is the reference ("fleet only"), the second the challenger. The headline recall is the reference
    variant's recall at ``reference_level``. CIs: Wilson for recall; for false-alarm rates and their
    paired difference, percentiles of a bootstrap that resamples healthy and failing vehicles
    (independently, with replacement) and recomputes both frontiers on the same resample.
    Verdict ``met``: at the headline recall the challenger's rate is lower with the difference's CI
    below 0, and at no target is it significantly higher.
    """
    variants = list(counts)
    if len(variants) != 2:
        raise ValueError(f"exactly two variants are compared (got {variants})")
    healthy = np.asarray(healthy, dtype=bool)
    events = np.asarray(events, dtype=np.int64)
    levels = np.asarray(levels, dtype=np.float64)
    n_healthy, total_events = int(healthy.sum()), int(events[~healthy].sum())
    if n_healthy == 0 or total_events == 0:
        raise ValueError(f"need healthy vehicles and failures (got {n_healthy} healthy, {total_events} failures)")
    vehicle_days = n_healthy * float(days_per_vehicle)
    ref_index = int(np.argmin(np.abs(levels - reference_level)))

    def curves(h_sum: np.ndarray, f_sum: np.ndarray, ev: np.ndarray, vd: float) -> tuple[np.ndarray, np.ndarray]:
        return f_sum / np.maximum(ev, 1), 100.0 * h_sum / vd

    counts = {name: np.asarray(counts[name], dtype=np.int64) for name in variants}
    per_variant = {}
    for name in variants:
        c = counts[name]
        recall, fa = curves(c[healthy].sum(0), c[~healthy].sum(0), np.asarray(total_events), vehicle_days)
        per_variant[name] = {"recall": recall, "fa": fa, "false_alarms": c[healthy].sum(0),
                             "detected": c[~healthy].sum(0)}
    reference, challenger = variants
    headline = float(per_variant[reference]["recall"][ref_index])
    targets = sorted({float(t) for t in recall_targets} | ({headline} if headline > 0 else set()))

    rng = np.random.default_rng(seed)
    h_idx, f_idx = np.flatnonzero(healthy), np.flatnonzero(~healthy)
    boot = {name: np.full((bootstrap, len(targets)), np.nan) for name in variants}
    for b in range(bootstrap):
        hs, fs = rng.choice(h_idx, h_idx.size), rng.choice(f_idx, f_idx.size)
        ev = events[fs].sum()
        for name in variants:
            recall, fa = curves(counts[name][hs].sum(0), counts[name][fs].sum(0), ev, vehicle_days)
            boot[name][b] = [frontier_false_alarms(recall, fa, t)[0] for t in targets]

    def interval(values: np.ndarray) -> list[float] | None:
        values = values[np.isfinite(values)]
        if values.size < max(10, bootstrap // 2):
            return None
        return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]

    rows = []
    for k, target in enumerate(targets):
        row: dict[str, Any] = {"recall_at_least": round(target, 4), "headline": target == headline}
        for name in variants:
            v = per_variant[name]
            fa, index = frontier_false_alarms(v["recall"], v["fa"], target)
            row[name] = None if index < 0 else {
                "false_alarms_per_100_vd": round(fa, 4), "fa_ci": interval(boot[name][:, k]),
                "level": float(levels[index]), "recall": round(float(v["recall"][index]), 4),
                "recall_ci": [round(x, 4) for x in wilson_interval(int(v["detected"][index]), total_events)]}
        if row[reference] is not None and row[challenger] is not None:
            row["difference"] = round(row[challenger]["false_alarms_per_100_vd"]
                                      - row[reference]["false_alarms_per_100_vd"], 4)
            row["difference_ci"] = interval(boot[challenger][:, k] - boot[reference][:, k])
        rows.append(row)

    compared = [r for r in rows if r.get("difference_ci")]
    head_row = next((r for r in compared if r["headline"]), None)
    worse = [r["recall_at_least"] for r in compared if r["difference_ci"][0] > 0]
    better = [r["recall_at_least"] for r in compared if r["difference_ci"][1] < 0]
    met = head_row is not None and head_row["difference_ci"][1] < 0 and not worse
    return {
        "variants": variants, "healthy_vehicles": n_healthy, "healthy_vehicle_days": vehicle_days,
        "failing_vehicles": int((~healthy).sum()), "failures": total_events, "reference_level": reference_level,
        "headline_recall": round(headline, 4), "bootstrap": bootstrap,
        "levels": [float(x) for x in levels],
        "curves": {name: {"recall": [round(float(x), 4) for x in v["recall"]],
                          "false_alarms_per_100_vd": [round(float(x), 4) for x in v["fa"]]}
                   for name, v in per_variant.items()},
        "equal_recall": rows, "significantly_better_at": better, "significantly_worse_at": worse,
        "verdict": "met" if met else "not met",
    }


def _fa_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "not reached"
    ci = cell["fa_ci"]
    return (f"{cell['false_alarms_per_100_vd']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            + f" (level {cell['level']:.2f}, recall {cell['recall']:.2f})")


def read_personalisation(model_run: Path) -> dict[str, Any] | None:
    """The personalisation comparison measured for this model run, if the bench has written one."""
    path = Path(model_run) / "evaluation" / PERSONALISATION_FILE
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    missing = [k for k in ("variants", "equal_recall", "verdict", "seed", "vehicles") if k not in result]
    if missing:
        raise ValueError(f"{path}: not a personalisation result (missing {', '.join(missing)})")
    return result


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
