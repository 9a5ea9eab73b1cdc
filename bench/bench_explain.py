"""Explanations: is the first cause the true one (recall@1, recall@3, MRR), and how fast is one Explain.

    .venv/bin/python bench/bench_explain.py                        # 6 vehicles per mode x 2 eval fleets, 100,000 past alerts
    .venv/bin/python bench/bench_explain.py --per-mode 3 --history 10000 --queries 100

The labelled alerts come from generator fleets (``simulation.generator.simulate_vehicle``) with one injected
failure each (every mode, random severity and tyre position): the *index fleet* (seed 11) gives the past
alerts with their outcomes, the *evaluation fleets* (seeds 101, 202) are never indexed. An alert's evidence is
what a twin's anomaly scorer hands over: per telemetry field (plus the derived quantities the feature function
has: cell-voltage spread, coolant flow per pump speed, each tyre against the other three), how far the last 24
h before the failure sit from what the vehicle's own first two days predict for the same operating context (a
linear fit on ambient, HVAC, speed, charging, SOC; accumulating fields, pad wear and SOH, by their rate), the
top five as shares. No trained model is in the loop: the evidence is a stand-in for the autoencoder's per-
signal errors, built from the same frames. The *sensor-subset* variant drops fields a basic telematics unit
does not send (the vehicle's evidence then has only the fields it sends, and Explain is told which those are).

Methods (``ExplanationIndex(retrievers=...)``): ``hashed`` the signal+hashed-words vectors alone (the
embedding before this change), ``text`` LanceDB full-text alone, ``model`` the optional sentence model alone,
``hybrid`` signals + full-text fused by RRF, ``hybrid+model``, and ``hybrid+history`` (the nearest past alerts'
outcomes as a fourth ranking). Latency: one ``explain`` (all retrievers) with N past alerts indexed, p50/p99.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from configs.schema import SCHEMA  # noqa: E402
from configs.settings import SimulationConfig  # noqa: E402
from serving.embedding import StaticSentenceEmbedder, static_model_installed  # noqa: E402
from serving.explanations import AlertEvidence, ExplanationIndex  # noqa: E402
from simulation.failures import FAILURE_MODES, TYRE_POSITIONS, FailureEvent  # noqa: E402
from simulation.fleet import sample_profile  # noqa: E402
from simulation.generator import observation_window, simulate_vehicle  # noqa: E402

DAY_MS = 86_400_000
INDEX_SEED = 11
EVAL_SEEDS = (101, 202)
# Not evidence of a component: position, a counter, and the operating context (how the vehicle is driven,
# charged and heated), which an anomaly scorer conditions on rather than flags.
NOT_EVIDENCE = ("odometer", "latitude", "longitude", "charger_state", "speed", "motor_speed", "charge_power",
                "hvac_power", "soc", "ambient_temp")
# A basic telematics unit: no coolant loop, no BMS resistance estimate, no DC-DC or pad-wear signal.
BASIC_UNIT_MISSING = ("coolant_flow", "pump_speed", "internal_resistance", "dcdc_current", "brake_pad_wear",
                      "cell_temp_max", "cell_temp_min")
SUMMARY = "anomaly score above the alert level"
ACCUMULATING = ("brake_pad_wear", "soh")


CONTEXT = ("ambient_temp", "hvac_power", "speed", "motor_speed", "charge_power", "soc", "charger_state")


def _context_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    ctx = [np.nan_to_num(columns[name]) for name in CONTEXT]
    return np.column_stack([np.ones_like(ctx[0])] + ctx + [ctx[2] ** 2, ctx[4] > 0])


def _residual_z(context: np.ndarray, values: np.ndarray, base: np.ndarray, test: np.ndarray) -> float:
    """How far the last day's values sit from what the vehicle's own first days predict for the same operating
    context (linear in ambient, HVAC, speed, charging, SOC): the shift of the residual's 5/50/95th
    percentiles, in residual standard deviations. A stand-in for an autoencoder's per-signal error."""
    fit = base & np.isfinite(values)
    check = test & np.isfinite(values)
    if fit.sum() < 50 or check.sum() < 10:
        return 0.0
    coef, *_ = np.linalg.lstsq(context[fit], values[fit], rcond=None)
    base_res = values[fit] - context[fit] @ coef
    test_res = values[check] - context[check] @ coef
    scale = float(base_res.std()) + 1e-3 * (float(np.abs(values[fit]).mean()) + 1e-9)
    shifts = [abs(float(np.percentile(test_res, q)) - float(np.percentile(base_res, q))) for q in (5, 50, 95)]
    return max(shifts) / scale


def _rate_z(ts: np.ndarray, values: np.ndarray, base: np.ndarray, test: np.ndarray) -> float:
    """Accumulating fields (pad wear, state of health) move every day: compare their rate, not their level."""
    def slope(mask: np.ndarray) -> float:
        ok = mask & np.isfinite(values)
        return float(np.polyfit(ts[ok] / DAY_MS, values[ok], 1)[0]) if ok.sum() >= 10 else 0.0

    base_rate, test_rate = slope(base), slope(test)
    return min(abs(test_rate - base_rate) / (abs(base_rate) + 1e-6), 20.0)


def derived_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fields plus the derived quantities the window features have (names the embedder maps to fields)."""
    out = dict(columns)
    out["cell_spread"] = columns["cell_voltage_max"] - columns["cell_voltage_min"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["flow_per_pump"] = np.where(columns["pump_speed"] > 100, columns["coolant_flow"] / columns["pump_speed"], np.nan)
    tyres = np.stack([columns[f"tyre_pressure_{p}"] for p in TYRE_POSITIONS])
    for i, position in enumerate(TYRE_POSITIONS):
        others = np.delete(tyres, i, axis=0).mean(axis=0)
        out[f"tyre_pressure_{position}_rel"] = tyres[i] - others
    return out


def alert_for_failure(seed: int, index: int, mode: str, sim_cfg: SimulationConfig,
                      missing: tuple[str, ...] = ()) -> AlertEvidence:
    rng = np.random.default_rng([seed, index, 7])
    profile = sample_profile(sim_cfg, seed, index)
    start_ms, _ = observation_window(sim_cfg)
    failure_ms = start_ms + int((sim_cfg.duration_days_per_vehicle - 0.5) * DAY_MS)
    lead_days = float(rng.uniform(6.0, 9.0))
    event = FailureEvent(profile.vehicle_id, mode, failure_ms - int(lead_days * DAY_MS), failure_ms,
                         int(rng.integers(1, 4)), True,
                         str(rng.choice(TYRE_POSITIONS)) if mode == "tyre_slow_leak" else "")
    chunks = list(simulate_vehicle(profile, sim_cfg, seed, events=[event], faults=[]))
    ts = np.concatenate([c.ts_ms for c in chunks])
    columns = {name: np.concatenate([c.columns[name] for c in chunks]).astype(np.float64) for name in chunks[0].columns}
    for name in missing:
        columns[name] = np.full(ts.shape, np.nan)
    columns = derived_columns(columns)
    base = ts < start_ms + 2 * DAY_MS
    test = (ts >= failure_ms - DAY_MS) & (ts < failure_ms)
    context = _context_matrix(columns)
    scores = {name: _rate_z(ts, values, base, test) if name in ACCUMULATING else
              _residual_z(context, values, base, test)
              for name, values in columns.items() if name not in NOT_EVIDENCE}
    top = sorted(((n, z) for n, z in scores.items() if z > 0), key=lambda item: -item[1])[:5]
    total = sum(z for _, z in top) or 1.0
    return AlertEvidence(f"{seed}-{index}-{mode}", profile.vehicle_id, failure_ms - DAY_MS // 2, "anomaly",
                         {n: round(z / total, 4) for n, z in top}, SUMMARY)


def alert_set(seed: int, per_mode: int, sim_cfg: SimulationConfig, missing: tuple[str, ...] = ()
              ) -> list[tuple[AlertEvidence, str]]:
    return [(alert_for_failure(seed, m * 1000 + i, mode, sim_cfg, missing), mode)
            for m, mode in enumerate(FAILURE_MODES) for i in range(per_mode)]


def ranking_metrics(ranks: list[int | None]) -> dict[str, float]:
    """recall@1, recall@3 and MRR from the 1-based rank of the true cause (None: not ranked at all).

    >>> ranking_metrics([1, 2, None, 4])
    {'recall@1': 0.25, 'recall@3': 0.5, 'mrr': 0.4375, 'n': 4}
    """
    n = len(ranks)
    return {"recall@1": sum(r == 1 for r in ranks) / n, "recall@3": sum(r is not None and r <= 3 for r in ranks) / n,
            "mrr": sum(1.0 / r for r in ranks if r) / n, "n": n}


def evaluate(index: ExplanationIndex, alerts: list[tuple[AlertEvidence, str]],
             sent: set[str] | None = None) -> dict[str, float]:
    ranks: list[int | None] = []
    supported = correct_supported = 0
    first_by_mode: dict[str, list[bool]] = {}
    for alert, truth in alerts:
        explanation = index.explain(alert, k=len(index.documents), similar=0, sent_fields=sent)
        causes = [m.mode for m in explanation.matches]
        ranks.append(causes.index(truth) + 1 if truth in causes else None)
        first_by_mode.setdefault(truth, []).append(bool(causes) and causes[0] == truth)
        if explanation.supported:
            supported += 1
            correct_supported += causes[0] == truth
    metrics = ranking_metrics(ranks)
    metrics["supported"] = supported / len(alerts)
    metrics["precision_when_supported"] = correct_supported / supported if supported else float("nan")
    metrics["recall@1_by_mode"] = {mode: round(sum(hits) / len(hits), 2) for mode, hits in first_by_mode.items()}
    return metrics


def latency(folder: Path, history: int, queries: list[AlertEvidence], text_model: StaticSentenceEmbedder | None,
            index_alerts: list[tuple[AlertEvidence, str]]) -> dict[str, float]:
    index = ExplanationIndex(folder, text_model=text_model)
    rng = np.random.default_rng(5)
    rows, chunk = [], 20_000
    t0 = time.perf_counter()
    for i in range(history):  # past alerts: the index fleet's alerts with their evidence jittered
        alert, outcome = index_alerts[i % len(index_alerts)]
        evidence = {n: float(v * rng.uniform(0.7, 1.3)) for n, v in alert.evidence.items()}
        rows.append((AlertEvidence(f"h{i}", alert.vehicle_id, alert.ts_ms, alert.kind, evidence, alert.summary), outcome))
        if len(rows) == chunk:
            index.remember_many(rows)
            rows = []
    index.remember_many(rows)
    index.index_alerts()  # rebuilt over all rows (remember_many built it once at ALERTS_ANN_MIN_ROWS)
    build_s = time.perf_counter() - t0
    index.explain(queries[0])  # warm: tables opened, FTS index loaded
    times = []
    for alert in queries:
        t = time.perf_counter()
        index.explain(alert)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"past_alerts": index.count_alerts(), "build_s": round(build_s, 1), "queries": len(times),
            "p50_ms": round(statistics.median(times), 2), "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-mode", type=int, default=6, help="vehicles per failure mode per fleet")
    parser.add_argument("--days", type=float, default=12.0)
    parser.add_argument("--history", type=int, default=100_000, help="past alerts indexed for the latency run")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_explain"))
    args = parser.parse_args(argv)
    sim_cfg = SimulationConfig(num_vehicles=10_000, duration_days_per_vehicle=args.days, frame_interval_s=60.0)
    model = StaticSentenceEmbedder() if static_model_installed() else None
    t0 = time.perf_counter()
    index_alerts = alert_set(INDEX_SEED, args.per_mode, sim_cfg)
    full = [a for seed in EVAL_SEEDS for a in alert_set(seed, args.per_mode, sim_cfg)]
    subset = [a for seed in EVAL_SEEDS for a in alert_set(seed, args.per_mode, sim_cfg, BASIC_UNIT_MISSING)]
    print(f"alerts: {len(index_alerts)} index, {len(full)} eval, {len(subset)} eval (subset), "
          f"{time.perf_counter() - t0:.1f} s to simulate", flush=True)
    sent_subset = set(SCHEMA.sensor_names) - set(BASIC_UNIT_MISSING)
    methods = {"hashed": ("signals",), "text": ("text",), "model": ("model",), "hybrid": ("signals", "text"),
               "hybrid+model": ("signals", "text", "model"), "hybrid+history": ("signals", "text", "history"),
               "all": ("signals", "text", "model", "history")}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, retrievers in methods.items():
            if "model" in retrievers and model is None:
                continue
            index = ExplanationIndex(Path(tmp) / name, text_model=model if "model" in retrievers else None,
                                     retrievers=retrievers)
            if "history" in retrievers:
                index.remember_many(index_alerts)
            results[name] = {"full": evaluate(index, full), "subset": evaluate(index, subset, sent_subset)}
            print(name, json.dumps(results[name]), flush=True)
        queries = [a for a, _ in (full * (args.queries // len(full) + 1))[:args.queries]]
        results["latency"] = latency(Path(tmp) / "latency", args.history, queries, model, index_alerts)
        print("latency", json.dumps(results["latency"]), flush=True)
    results["load_average"] = os.getloadavg()
    results["static_model"] = model.version if model else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"written {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
