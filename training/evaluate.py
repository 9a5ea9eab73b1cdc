"""`evtwin evaluate`: judge the trained models on held-out data, beside baselines, against the targets.

Reads the test split of the training run (or every window of another run's dataset, e.g. a fleet
generated with another seed) and writes ``report.json``, ``report.md`` and PNG plots. Alert
thresholds come from the artefacts (chosen on validation under the alert budget), never from test.
When ``bench/bench_personalisation.py`` has written ``<model run>/evaluation/personalisation.json``, the
report also carries its "Personalisation" section (false alarms at equal event recall, with and without
the twins' per-vehicle head).

This module orchestrates: statistics live in ``training.statistics`` and ``training.metrics``, the
ground-truth judge of alerts in ``training.judge``, the Markdown and plots in ``training.report``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from configs.settings import Config
from training.alerting import alert_indices, flagged
from training.artifacts import MODELS_DIR, load_anomaly_model, load_failure_model, load_severity_model
from training.dataset import DATASET_DIR, SPLITS, prepare_dataset, read_card
from training.detectors import FixedLimits, VehicleBlock, vehicle_zscore
from training.judge import AlertCall, FailureEvent, Judgement, JudgeRules, SensorFaultEpisode, judge
from training.labels import MS_PER_DAY
from training.metrics import (
    average_precision,
    brier_score,
    confusion_matrix,
    macro_f1,
    pointwise_precision_recall,
    recall_at_precision,
    reliability_bins,
    roc_auc,
)
from training.report import (
    confusion_plot,
    finite_or_none,
    personalisation_markdown,
    reliability_plot,
    report_markdown,
)
from training.statistics import equal_recall_comparison, frontier_false_alarms, wilson_interval
from training.train import SplitData, alert_policy_factory, load_split, vehicle_blocks

# The statistics and rendering names stay importable from here (bench/bench_personalisation.py uses them).
__all__ = ["PERSONALISATION_FILE", "TARGETS", "check_targets", "equal_recall_comparison", "evaluate_run",
           "frontier_false_alarms", "headline", "personalisation_markdown", "read_personalisation",
           "report_markdown", "wilson_interval"]

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
        reliability_plot(entry["reliability"], h, out_dir / f"reliability_{h}d.png")
    return out


def _zscore_rows(data: SplitData, blocks: list[VehicleBlock]) -> np.ndarray:
    """vehicle_zscore per row of ``data`` (blocks are contiguous, time-ordered slices of it)."""
    out = np.zeros(data.size)
    lookup = {b.vehicle_id: vehicle_zscore(b.X) for b in blocks}
    change = np.flatnonzero(data.vehicle_id[1:] != data.vehicle_id[:-1]) + 1
    for a, b in zip(np.concatenate([[0], change]), np.concatenate([change, [data.size]]), strict=False):
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
    confusion_plot(cm, out_dir / "severity_confusion.png")
    return {"windows": int(rows.sum()), "events": int(len(set(zip(data.vehicle_id[rows].tolist(),
                                                                   data.labels["next_failure_ms"][rows].tolist(),
                                                                   strict=False)))),
            "macro_f1": macro_f1(y, pred, [1, 2, 3]), "confusion_matrix": cm.tolist(), "labels": [1, 2, 3],
            "baseline_train_majority_macro_f1": macro_f1(y, np.full(y.size, prior), [1, 2, 3]),
            "test_majority_class": majority}


def _alert_calls(blocks: list[VehicleBlock], scores: dict[str, np.ndarray], threshold: float,
                 policy_for) -> list[AlertCall]:
    """The anomaly alerts the twins' alerting policy raises on each vehicle's window scores."""
    policy = policy_for(threshold)
    return [AlertCall(b.vehicle_id, int(t), "anomaly")
            for b in blocks for t in b.ends[alert_indices(b.ends, scores[b.vehicle_id], policy)].tolist()]


def anomaly_section(model_run: Path, blocks: list[VehicleBlock], cfg: Config, limits: FixedLimits,
                    stride_ms: int, out_dir: Path, faults: list[SensorFaultEpisode] | None = None,
                    rules: JudgeRules | None = None, events: list[FailureEvent] | None = None) -> dict[str, Any]:
    """Each detector's alerts judged by ``training.judge`` (event recall, false alarms per 100 healthy
    vehicle-days, lead times, sensor-fault recall) beside point-wise precision and recall.

    ``events``: every failure of the blocks' vehicles (default: the blocks' observed ones); failures
    outside a vehicle's windows still make the time around them not healthy.
    """
    model = load_anomaly_model(model_run)
    baselines = json.loads((model_run / MODELS_DIR / "baselines.json").read_text())
    scorers = {
        "lstm_ae": (lambda X: model.score_vehicle(X)[0], model.alert_threshold),
        "fixed_limits": (limits.score, baselines["fixed_limits_alert_threshold"]),
        "vehicle_zscore": (vehicle_zscore, baselines["vehicle_zscore_alert_threshold"]),
    }
    rules = rules or JudgeRules.from_config(cfg)
    if events is None:
        events = [FailureEvent(b.vehicle_id, onset, failure, mode) for b in blocks for onset, failure, mode in b.events]
    # A vehicle's alerts can be raised at its window ends; a window ending at t stands for (t, t + stride].
    observations = {b.vehicle_id: (int(b.ends[0]), int(b.ends[-1]) + stride_ms) for b in blocks if b.ends.size}
    policy = alert_policy_factory(cfg)
    out: dict[str, Any] = {}
    for name, (fn, threshold) in scorers.items():
        scores = {b.vehicle_id: fn(b.X) for b in blocks}
        alerts = _alert_calls(blocks, scores, float(threshold), policy)
        result = judge(alerts, events, faults or [], rules, observations)
        judged = np.concatenate([b.healthy | b.anomaly for b in blocks])
        truth = np.concatenate([b.anomaly for b in blocks])[judged]
        flags = np.concatenate([flagged(scores[b.vehicle_id], threshold) for b in blocks])[judged]
        precision, recall = pointwise_precision_recall(truth, flags)
        out[name] = {
            "alert_threshold": float(threshold), "events": result.events, "detected": result.detected,
            "event_recall": result.event_recall, "false_alarms": result.false_alarms,
            "healthy_vehicle_days": result.healthy_vehicle_days,
            "false_alarms_per_100_vehicle_days": result.false_alarms_per_100_vehicle_days,
            "lead_median_days": result.lead_median_days, "lead_p10_days": result.lead_p10_days,
            "pointwise_precision": precision, "pointwise_recall": recall, "alerts": len(alerts),
        }
        # Alerts during sensor faults are right (they are anomalies) but not failures: reported apart.
        out[name]["sensor_faults"] = _sensor_fault_section(result)
        if name == "lstm_ae":
            out[name]["per_mode_recall"] = {
                mode: {"events": m.events, "event_recall": m.event_recall,
                       "lead_median_days": float(np.median(m.leads_ms)) / MS_PER_DAY if m.leads_ms else float("nan")}
                for mode, m in sorted(result.by_mode.items())}
    return out


def _sensor_fault_section(result: Judgement) -> dict[str, Any]:
    """Share of sensor faults caught, per fault kind and over all (report format of earlier versions)."""
    out: dict[str, Any] = {kind: {"faults": n, "recall": caught / n}
                           for kind, (n, caught) in result.faults_by_kind.items()}
    out["all"] = {"faults": result.faults, "recall": result.sensor_fault_recall}
    return out


def _faults(data_run: Path, split: str | None) -> list[SensorFaultEpisode]:
    path = data_run / DATASET_DIR / "sensor_faults.parquet"
    if not path.exists():
        return []
    table = pq.read_table(path).to_pydict()
    return [SensorFaultEpisode(str(v), int(table["start_ms"][i]), int(table["end_ms"][i]), str(table["kind"][i]))
            for i, v in enumerate(table["vehicle_id"]) if split is None or table["split"][i] == split]


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


def check_targets(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Targets met or not, and every headline metric where a baseline is as good as or better than us."""
    head = headline(report)
    targets = []
    for key, op, target in TARGETS:
        value = head.get(key)
        met = None if finite_or_none(value) is None else (
            value >= target if op == ">=" else value <= target)
        targets.append({"metric": key, "target": f"{op} {target}", "value": value, "met": met})
    losses = []
    for h, entry in report["failure"].items():
        for metric in ("roc_auc", "pr_auc", "recall_at_precision_0.8"):
            ours = entry["model"][metric]
            for base in ("fixed_limits", "vehicle_zscore"):
                theirs = entry[base][metric]
                if finite_or_none(ours) is not None and finite_or_none(theirs) is not None and theirs >= ours:
                    losses.append(f"failure {h} d {metric}: {base} {theirs:.3f} >= model {ours:.3f}")
    ours = report["anomaly"]["lstm_ae"]
    for base in ("fixed_limits", "vehicle_zscore"):
        theirs = report["anomaly"][base]
        for metric, better in (("event_recall", 1), ("lead_median_days", 1), ("pointwise_precision", 1),
                               ("pointwise_recall", 1), ("false_alarms_per_100_vehicle_days", -1)):
            o, t = finite_or_none(ours[metric]), finite_or_none(theirs[metric])
            if o is not None and t is not None and (t - o) * better > 0:
                losses.append(f"anomaly {metric}: {base} {t:.3f} beats LSTM-AE {o:.3f}")
    sev = report["severity"]
    if finite_or_none(sev.get("macro_f1")) is not None and sev["baseline_train_majority_macro_f1"] >= sev["macro_f1"]:
        losses.append(f"severity macro-F1: majority class {sev['baseline_train_majority_macro_f1']:.3f} "
                      f">= model {sev['macro_f1']:.3f}")
    return targets, losses


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
    # The labels' own lengths, so the judge's healthy time is the labels' healthy windows.
    rules = JudgeRules.from_config(cfg, window_ms=int(model_card["window_ms"]))
    evaluated = {b.vehicle_id for b in blocks}
    failures = [FailureEvent(str(v), int(o), int(f), str(m)) for v, o, f, m in zip(
        *(events.column(c).to_pylist() for c in ("vehicle_id", "onset_ms", "failure_ms", "mode")), strict=False)
        if v in evaluated]
    faults = [f for f in _faults(Path(data_run), None if test_run is not None else "test") if f.vehicle_id in evaluated]
    report["anomaly"] = anomaly_section(model_run, blocks, cfg, limits, stride_ms, out_dir, faults, rules, failures)
    report["headline"] = headline(report)
    report["targets"], report["baseline_wins"] = check_targets(report)
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
    return finite_or_none(x) if isinstance(x, float) else x


# ---------------------------------------------------------------------------------------------------
# Personalisation: false alarms of two twin variants at equal event recall (bench_personalisation).

PERSONALISATION_FILE = "personalisation.json"  # in <model run>/evaluation/, written by bench/bench_personalisation.py


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
