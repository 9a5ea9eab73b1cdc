"""The fleet report: one self-contained HTML file a reliability engineer reads in a browser (``evtwin report``).

    evtwin report --run runs/default [--out runs/default/report.html]

Sections (each an element with a stable id, so tests and people can find them): ``summary``, ``risk``
(vehicles ranked by failure risk, with every horizon and the signals why), ``alerts`` (open alerts by
lifecycle state), ``outcomes`` (what the workshop found), ``precision`` (of each rule on resolved alerts),
``quality`` (data quality per vehicle: fitted sensors, hours without a value, sensor faults), ``drift``
and ``whatif`` (when the run has them). Plots are inline SVG drawn here: no network, no script libraries.

Inputs come from the run folder and the twins' checkpoint URI (``collect_report_inputs``); rendering is a
pure function of them (``render_report``), so it is tested and benchmarked without a server.
"""
from __future__ import annotations

import html
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from configs.alert_states import AlertState, read_states
from configs.runs import SENSOR_FAULTS_FILE, read_aggregates, read_sensor_faults
from configs.schema import SCHEMA
from configs.settings import Config
from twins.host import checkpoint_summary
from twins.store import AlertStore, CheckpointStore
from twins.types import Alert

# Which outcome makes an alert of each rule right: a sensor-fault alert is right when the sensor was wrong.
CORRECT_OUTCOME: dict[str, str] = {"anomaly": "confirmed_failure", "failure_risk": "confirmed_failure",
                                   "sensor_fault": "sensor_problem", "model_drift": "confirmed_failure"}
MAX_TABLE_ROWS = 500  # per alert table; the counts above each table are always complete
DRIFT_FILE = Path("drift") / "drift.json"
WHATIF_SUMMARY = Path("whatif") / "summary.parquet"
SECTIONS: tuple[str, ...] = ("summary", "risk", "alerts", "outcomes", "precision", "quality", "drift", "whatif")


@dataclass
class ReportInputs:
    """Everything the report shows. ``vehicles``: twin summaries (``VehicleTwin.summary()`` dicts)."""

    run_name: str
    generated_ms: int
    vehicles: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    states: dict[str, AlertState] = field(default_factory=dict)
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)  # vehicle -> fitted, dropout_share, faults
    drift: dict[str, Any] | None = None
    whatif: list[dict[str, Any]] | None = None


# ----------------------------------------------------------------------------------------- collecting
def data_quality(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per vehicle from the run's hourly aggregates and injected faults: sensors fitted (any value at all),
    the share of hours with frames in which a fitted sensor had no value, and sensor faults by kind."""
    quality: dict[str, dict[str, Any]] = {}
    if (run_dir / "aggregates" / "hourly").is_dir():
        table = read_aggregates(run_dir, "hourly")
        vehicles = table.column("vehicle_id").to_numpy(zero_copy_only=False).astype(str)
        frames = table.column("frames").to_numpy(zero_copy_only=False)
        names = [s for s in SCHEMA.sensor_names if f"{s}_mean" in table.column_names]
        present = np.stack([np.isfinite(table.column(f"{s}_mean").to_numpy(zero_copy_only=False).astype(float))
                            for s in names], axis=1) if names else np.zeros((len(vehicles), 0), bool)
        order = np.argsort(vehicles, kind="stable")
        ids, starts = np.unique(vehicles[order], return_index=True)
        for vehicle_id, rows in zip(ids, np.split(order, starts[1:]), strict=True):
            rows = rows[frames[rows] > 0]
            seen = present[rows]
            fitted = seen.any(axis=0)
            missing = (~seen[:, fitted]).mean() if len(rows) and fitted.any() else 0.0
            quality[str(vehicle_id)] = {"fitted": int(fitted.sum()), "sensors": len(names),
                                        "dropout_share": float(missing), "faults": {}}
    if (run_dir / SENSOR_FAULTS_FILE).exists():
        faults = read_sensor_faults(run_dir).to_pydict()
        for vehicle_id, kind in zip(faults["vehicle_id"], faults["kind"], strict=True):
            entry = quality.setdefault(vehicle_id, {"fitted": None, "sensors": None, "dropout_share": None, "faults": {}})
            entry["faults"][kind] = entry["faults"].get(kind, 0) + 1
    return quality


def twin_summaries(checkpoint_uri: str, config: Config) -> list[dict[str, Any]]:
    """Every checkpointed twin's summary (what `evtwin twin` shows), without starting a host."""
    store = CheckpointStore(checkpoint_uri)
    summaries = []
    for vehicle_id in store.list():
        data = store.get(vehicle_id)
        if data is not None:
            summaries.append(checkpoint_summary(data, config.twins))
    return summaries


def collect_report_inputs(run_dir: str | Path, config: Config, checkpoint_uri: str) -> ReportInputs:
    run_dir = Path(run_dir)
    drift_path, whatif_path = run_dir / DRIFT_FILE, run_dir / WHATIF_SUMMARY
    return ReportInputs(
        run_name=run_dir.name, generated_ms=int(time.time() * 1000),
        vehicles=twin_summaries(checkpoint_uri, config),
        alerts=AlertStore(checkpoint_uri).read_all(), states=read_states(checkpoint_uri),
        quality=data_quality(run_dir),
        drift=json.loads(drift_path.read_text()) if drift_path.exists() else None,
        whatif=pq.read_table(whatif_path).to_pylist() if whatif_path.exists() else None,
    )


# ----------------------------------------------------------------------------------------- numbers
def _top_risk(summary: dict[str, Any]) -> tuple[float, float]:
    """(probability at the shortest horizon, at the longest): the ranking key, most urgent first."""
    risk = {int(h): float(p) for h, p in (summary.get("risk") or {}).items()}
    if not risk:
        return 0.0, 0.0
    return risk[min(risk)], risk[max(risk)]


def ranked_vehicles(vehicles: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most at risk first: shortest-horizon probability, then longest, then the anomaly score."""
    return sorted(vehicles, key=lambda v: (*_top_risk(v), float(v.get("anomaly_score") or 0.0)), reverse=True)


def rule_precision(alerts: Sequence[Alert], states: dict[str, AlertState]) -> dict[str, dict[str, Any]]:
    """Per rule: resolved alerts, how many were right (``CORRECT_OUTCOME``), precision (None: none resolved)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for alert in alerts:
        state = states.get(alert.alert_id)
        if state is not None and state.state == "resolved":
            counts[str(alert.rule)]["resolved"] += 1
            counts[str(alert.rule)]["right"] += state.outcome == CORRECT_OUTCOME.get(str(alert.rule), "confirmed_failure")
            counts[str(alert.rule)][state.outcome] += 1
    rules = sorted({str(a.rule) for a in alerts})
    return {rule: {"resolved": counts[rule]["resolved"], "right": counts[rule]["right"],
                   "precision": counts[rule]["right"] / counts[rule]["resolved"] if counts[rule]["resolved"] else None,
                   "outcomes": {k: v for k, v in counts[rule].items() if k not in ("resolved", "right")}}
            for rule in rules}


# ----------------------------------------------------------------------------------------- drawing
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else "-"


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


def svg_bars(labels: Sequence[str], values: Sequence[float], title: str, width: int = 520, height: int = 180,
             fmt: str = "{:.0f}") -> str:
    """A bar chart as inline SVG (labelled bars, value on top)."""
    n = max(len(values), 1)
    top = max([float(v) for v in values] + [1e-9])
    slot = (width - 40) / n
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = (height - 62) * float(value) / top  # room above the tallest bar for its value
        x = 30 + i * slot
        bars.append(f'<rect x="{x + slot * 0.1:.1f}" y="{height - 30 - h:.1f}" width="{slot * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="#3b6ea8"><title>{_e(label)}: {_e(fmt.format(value))}</title></rect>'
                    f'<text x="{x + slot / 2:.1f}" y="{height - 34 - h:.1f}" text-anchor="middle" font-size="10">'
                    f'{_e(fmt.format(value))}</text>'
                    f'<text x="{x + slot / 2:.1f}" y="{height - 16}" text-anchor="middle" font-size="10">{_e(label)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(title)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><text x="8" y="14" font-size="12" font-weight="bold">'
            f'{_e(title)}</text><line x1="25" y1="{height - 30}" x2="{width - 5}" y2="{height - 30}" stroke="#888"/>'
            + "".join(bars) + "</svg>")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _signals(signals: Any, limit: int = 3) -> str:
    parts = []
    for item in list(signals or [])[:limit]:
        name, value = item[0], float(item[1])
        parts.append(f"{_e(name)} {value:+.2f}")
    return ", ".join(parts) or "-"


# ----------------------------------------------------------------------------------------- sections
def _risk_section(inputs: ReportInputs) -> str:
    ranked = ranked_vehicles(inputs.vehicles)
    horizons = sorted({int(h) for v in ranked for h in (v.get("risk") or {})})
    why: dict[str, Alert] = {}
    for alert in inputs.alerts:  # the latest failure-risk alert of each vehicle explains its risk
        if alert.rule == "failure_risk":
            why[alert.vehicle_id] = alert
    rows = []
    for rank, summary in enumerate(ranked, 1):
        vehicle_id = summary["vehicle_id"]
        risk = {int(h): float(p) for h, p in (summary.get("risk") or {}).items()}
        reason = why.get(vehicle_id)
        signals = reason.signals if reason is not None else summary.get("signals")
        mode = reason.mode if reason is not None and reason.mode else ""
        rows.append([rank, _e(vehicle_id), *(_pct(risk.get(h)) for h in horizons),
                     f"{float(summary.get('anomaly_score') or 0):.2f}", _e(mode), _signals(signals),
                     _when(summary.get("last_ts_ms"))])
    buckets = [0] * 10
    for summary in ranked:
        buckets[min(int(_top_risk(summary)[1] * 10), 9)] += 1
    chart = svg_bars([f"{10 * i}%" for i in range(10)], buckets,
                     f"vehicles by risk at {max(horizons)} days" if horizons else "vehicles by risk (no model yet)")
    table = _table(["rank", "vehicle", *(f"risk {h} d" for h in horizons), "anomaly", "mode", "signals why", "last frame"],
                   rows, "risk-table")
    return (f'<section id="risk"><h2>Vehicles ranked by risk</h2>{chart}'
            '<p><label>filter vehicles <input id="vehicle-filter" type="search"></label></p>'
            f"{table}</section>")


def _alerts_section(inputs: ReportInputs) -> str:
    by_state = Counter(inputs.states.get(a.alert_id, AlertState.open(a)).state for a in inputs.alerts)
    by_rule = Counter(str(a.rule) for a in inputs.alerts)
    open_alerts = [a for a in inputs.alerts if inputs.states.get(a.alert_id, AlertState.open(a)).state != "resolved"]
    open_alerts.sort(key=lambda a: (a.severity or 0, a.ts_ms), reverse=True)
    rows = []
    for alert in open_alerts[:MAX_TABLE_ROWS]:
        state = inputs.states.get(alert.alert_id, AlertState.open(alert))
        rows.append([_e(alert.alert_id), _e(alert.vehicle_id), _e(alert.rule), _e(alert.mode or ""),
                     alert.severity or "-", f"{alert.score:.2f}", _when(alert.ts_ms), _e(state.state),
                     _e(state.assignee), _signals(alert.signals)])
    chart = svg_bars(list(by_rule), list(by_rule.values()), "alerts by rule")
    shown = f" (the {MAX_TABLE_ROWS} most severe, latest first)" if len(open_alerts) > MAX_TABLE_ROWS else ""
    states = ", ".join(f"{_e(k)} {v}" for k, v in sorted(by_state.items())) or "none"
    return (f'<section id="alerts"><h2>Open alerts</h2><p>{len(inputs.alerts)} alerts: {states}.</p>{chart}'
            f"<h3>{len(open_alerts)} not resolved{shown}</h3>"
            + _table(["alert", "vehicle", "rule", "mode", "severity", "score", "raised", "state", "assignee", "signals"],
                     rows, "open-alerts") + "</section>")


def _outcomes_section(inputs: ReportInputs) -> str:
    alerts = {a.alert_id: a for a in inputs.alerts}
    resolved = sorted((s for s in inputs.states.values() if s.state == "resolved"), key=lambda s: -s.updated_ms)
    rows = [[_e(s.alert_id), _e(s.vehicle_id), _e(s.rule), _e(s.outcome), _e(s.mode), _when(s.updated_ms),
             _e(s.updated_by), _e(s.note), "" if s.alert_id in alerts else "alert not in the store"]
            for s in resolved[:MAX_TABLE_ROWS]]
    outcomes = Counter(s.outcome for s in resolved)
    chart = svg_bars(list(outcomes), list(outcomes.values()), "resolved alerts by outcome") if outcomes else ""
    return (f'<section id="outcomes"><h2>Outcomes</h2><p>{len(resolved)} alerts resolved.</p>{chart}'
            + _table(["alert", "vehicle", "rule", "outcome", "mode", "resolved", "by", "note", ""], rows, "outcome-table")
            + "</section>")


def _precision_section(inputs: ReportInputs) -> str:
    precision = rule_precision(inputs.alerts, inputs.states)
    rows = [[_e(rule), p["resolved"], p["right"], _pct(p["precision"]),
             _e(", ".join(f"{k} {v}" for k, v in sorted(p["outcomes"].items())))] for rule, p in precision.items()]
    measured = {rule: p["precision"] for rule, p in precision.items() if p["precision"] is not None}
    chart = svg_bars(list(measured), [100 * v for v in measured.values()], "precision on resolved alerts (%)") \
        if measured else "<p>No alert resolved yet: precision unknown.</p>"
    return ('<section id="precision"><h2>Precision of each rule</h2>'
            "<p>Right means: a confirmed failure for anomaly and failure-risk alerts, a sensor problem for "
            f"sensor-fault alerts.</p>{chart}"
            + _table(["rule", "resolved", "right", "precision", "outcomes"], rows, "precision-table") + "</section>")


def _quality_section(inputs: ReportInputs) -> str:
    detected = {v["vehicle_id"]: v.get("sensor_faults") or {} for v in inputs.vehicles}
    vehicles = sorted(set(inputs.quality) | set(detected))
    rows = []
    for vehicle_id in vehicles:
        q = inputs.quality.get(vehicle_id, {})
        fitted = f"{q['fitted']}/{q['sensors']}" if q.get("fitted") is not None else "-"
        injected = ", ".join(f"{k} {v}" for k, v in sorted((q.get("faults") or {}).items())) or "-"
        seen = detected.get(vehicle_id) or {}
        rows.append([_e(vehicle_id), fitted, _pct(q.get("dropout_share")), _e(injected),
                     sum(seen.values()), _e(", ".join(f"{k} {v}" for k, v in sorted(seen.items())[:4]) or "-")])
    return ('<section id="quality"><h2>Data quality per vehicle</h2>'
            "<p>Fitted: sensors with any value; without value: share of the hours with frames in which a fitted "
            "sensor had none (dropouts); injected faults: the run's ground truth (synthetic fleets); detected: "
            "values the twins judged faulty, by sensor.</p>"
            + _table(["vehicle", "fitted", "without value", "injected faults", "detected", "by sensor"], rows,
                     "quality-table") + "</section>")


def _drift_section(inputs: ReportInputs) -> str:
    if not inputs.drift:
        return ('<section id="drift"><h2>Drift</h2><p>Not computed for this run: '
                "<code>evtwin drift --run RUN</code> writes it.</p></section>")
    drift = inputs.drift
    features = sorted(drift.get("features", []), key=lambda f: -float(f.get("psi", 0)))[:15]
    chart = svg_bars([f["feature"][:14] for f in features], [float(f["psi"]) for f in features],
                     "PSI of the most drifted inputs", width=760, fmt="{:.2f}") if features else ""
    rows = [[_e(f["feature"]), f"{float(f['psi']):.3f}", _pct(f.get("missing_reference")), _pct(f.get("missing_live"))]
            for f in features]
    scores = drift.get("score_psi") or {}
    score_text = ", ".join(f"{_e(k)} {float(v):.3f}" for k, v in scores.items()) or "-"
    profiles = drift.get("by_profile") or {}
    profile_rows = [[_e(g), p.get("windows", "-"), f"{float(p['level']):.3f}", _e(p.get("worst_feature", ""))]
                    for g, p in sorted(profiles.items(), key=lambda item: -float(item[1]["level"]))]
    by_vehicle = drift.get("by_vehicle") or {}
    vehicle_rows = [[_e(v), by_vehicle[v].get("windows", "-"), f"{float(by_vehicle[v]['level']):.3f}",
                     _e(by_vehicle[v].get("worst_feature", ""))] for v in drift.get("top_vehicles") or [] if v in by_vehicle]
    level = float(drift.get("level", 0.0))
    return (f'<section id="drift"><h2>Drift</h2><p>Overall level (largest input PSI): <b>{level:.3f}</b> '
            f'(alert above {_e(drift.get("alert_level", "-"))}; {_e(drift.get("windows", "-"))} windows of '
            f'{_e(drift.get("live_run", "-"))}). Prediction score PSI: {score_text}.</p>{chart}'
            + _table(["input", "PSI", "missing (training)", "missing (live)"], rows, "drift-table")
            + (_table(["vehicle profile", "windows", "PSI", "worst input"], profile_rows, "drift-profiles")
               if profile_rows else "")
            + (_table(["vehicle (most drifted)", "windows", "PSI", "worst input"], vehicle_rows, "drift-vehicles")
               if vehicle_rows else "") + "</section>")


def _whatif_section(inputs: ReportInputs) -> str:
    if not inputs.whatif:
        return ('<section id="whatif"><h2>What-if</h2><p>No what-if results in this run '
                "(<code>evtwin whatif</code> writes them).</p></section>")
    columns = list(inputs.whatif[0])
    rows = [[_e(f"{v:.3g}" if isinstance(v, float) else v) for v in row.values()] for row in inputs.whatif[:200]]
    return '<section id="whatif"><h2>What-if</h2>' + _table(columns, rows, "whatif-table") + "</section>"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{margin:0 0 4px}h2{border-bottom:2px solid #3b6ea8;padding-bottom:2px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#eef3f9;position:sticky;top:0}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ccc;border-radius:6px;padding:8px 14px;min-width:120px}.card b{font-size:22px;display:block}
"""

_SCRIPT = """
document.getElementById('vehicle-filter').addEventListener('input', function (event) {
  var wanted = event.target.value.toLowerCase();
  document.querySelectorAll('#risk-table tbody tr').forEach(function (row) {
    row.style.display = row.cells[1].textContent.toLowerCase().indexOf(wanted) >= 0 ? '' : 'none';
  });
});
"""


def render_report(inputs: ReportInputs) -> str:
    """The whole report as one HTML document (no external resources)."""
    resolved = sum(1 for s in inputs.states.values() if s.state == "resolved")
    at_risk = sum(1 for v in inputs.vehicles if _top_risk(v)[0] >= 0.5)
    drift_level = f"{float(inputs.drift.get('level', 0.0)):.2f}" if inputs.drift else "-"
    cards = [("vehicles", len(inputs.vehicles)), ("at risk (p >= 50%, shortest horizon)", at_risk),
             ("alerts", len(inputs.alerts)), ("not resolved", len(inputs.alerts) - resolved),
             ("drift level", drift_level)]
    summary = ('<section id="summary"><div class="cards">'
               + "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards) + "</div></section>")
    body = "".join((summary, _risk_section(inputs), _alerts_section(inputs), _outcomes_section(inputs),
                    _precision_section(inputs), _quality_section(inputs), _drift_section(inputs),
                    _whatif_section(inputs)))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>evtwin fleet report: {_e(inputs.run_name)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>Fleet report: {_e(inputs.run_name)}</h1><p>generated {_when(inputs.generated_ms)} UTC</p>"
            f"{body}<script>{_SCRIPT}</script></body></html>")


def write_report(run_dir: str | Path, config: Config, checkpoint_uri: str, out: str | Path) -> Path:
    """Collect, render and write the report; returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(collect_report_inputs(run_dir, config, checkpoint_uri)), encoding="utf-8")
    return out
