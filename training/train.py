"""`evtwin train`: failure (per horizon, + per-mode), severity and anomaly models from a prepared dataset.

Everything is fitted on the train split; early stopping, probability calibration, the anomaly
threshold and every detector's alert threshold use the validation split; test is never read here.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs.settings import Config
from training.alerting import AlertPolicy, per_signal_errors, signal_error_reference
from training.anomaly import (
    ANOMALY_SIGNALS,
    fit_scaler,
    normalise,
    reconstruction_errors,
    signal_index,
    train_autoencoder,
)
from training.artifacts import MODELS_DIR, provenance, write_meta
from training.calibration import fit_calibrator
from training.dataset import DATASET_DIR, read_card, read_split
from training.detectors import FixedLimits, VehicleBlock, choose_threshold, vehicle_zscore
from training.drift import record_training_reference
from training.features import FEATURE_NAMES
from training.metrics import average_precision, macro_f1, roc_auc
from training.plant import MODEL_FEATURE_NAMES, PLANT_FILE, PlantModel, fit_plant, model_inputs

__all__ = ["SplitData", "load_split", "vehicle_blocks", "alert_policy_factory", "train_all"]


@dataclass
class SplitData:
    vehicle_id: np.ndarray
    ends: np.ndarray
    X: np.ndarray  # window features (FEATURE_NAMES)
    labels: dict[str, np.ndarray]
    inputs: np.ndarray | None = None  # failure / severity model input (MODEL_FEATURE_NAMES), set by train_all

    @property
    def model_X(self) -> np.ndarray:
        if self.inputs is None:
            raise ValueError("SplitData.inputs not set: call with_plant(data, plant) first")
        return self.inputs

    @property
    def size(self) -> int:
        return int(self.ends.size)


def load_split(run_dir: Path, split: str, horizons: tuple[int, ...]) -> SplitData:
    table = read_split(run_dir, split)
    X = np.empty((table.num_rows, len(FEATURE_NAMES)), dtype=np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        X[:, j] = table.column(name).to_numpy()
    label_names = [f"y_{h}d" for h in horizons] + [
        "next_mode", "next_severity", "degrading", "sensor_fault", "anomaly", "post_failure",
        "event_onset_ms", "event_failure_ms", "next_failure_ms"]
    labels = {n: np.asarray(table.column(n).to_numpy(zero_copy_only=False)) for n in label_names}
    return SplitData(np.asarray(table.column("vehicle_id").to_numpy(zero_copy_only=False)),
                     table.column("window_end_ms").to_numpy(), X, labels)


def healthy_rows(data: SplitData) -> np.ndarray:
    """bool per window: neither degrading toward a failure nor just after one (what normal looks like)."""
    return ~data.labels["anomaly"].astype(bool) & ~data.labels["post_failure"].astype(bool)


def with_plant(data: SplitData, plant: PlantModel) -> SplitData:
    """``data`` with its model inputs (window features and plant residuals, ``training.plant.model_inputs``)."""
    data.inputs = model_inputs(data.X, plant)
    return data


def vehicle_blocks(data: SplitData, events: pa.Table, stride_ms: int) -> list[VehicleBlock]:
    """Per-vehicle views in time order, with the failures observable within each vehicle's windows."""
    if data.size == 0:
        return []
    ev = events.to_pydict()
    by_vehicle: dict[str, list[tuple[int, int, str]]] = {}
    for v, onset, failure, mode in zip(ev["vehicle_id"], ev["onset_ms"], ev["failure_ms"], ev["mode"], strict=False):
        by_vehicle.setdefault(v, []).append((int(onset), int(failure), str(mode)))
    change = np.flatnonzero(data.vehicle_id[1:] != data.vehicle_id[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [data.size]])
    blocks = []
    for a, b in zip(starts, stops, strict=False):
        vid = str(data.vehicle_id[a])
        ends = data.ends[a:b]
        order = np.argsort(ends, kind="stable")
        sl = np.arange(a, b)[order]
        ends = data.ends[sl]
        anomaly = data.labels["anomaly"][sl].astype(bool)
        healthy = ~anomaly & ~data.labels["post_failure"][sl].astype(bool)
        observed = [(o, f, m) for o, f, m in by_vehicle.get(vid, []) if ends[0] < f <= ends[-1] + stride_ms]
        blocks.append(VehicleBlock(vid, ends, data.X[sl], healthy, anomaly, observed))
    return blocks


def alert_policy_factory(cfg: Config) -> Callable[[float], AlertPolicy]:
    """The twins' alerting parameters, so offline evaluation judges what the twins will do."""
    return lambda threshold: AlertPolicy.for_twins(cfg.twins, threshold)


def _threads(cfg: Config, rows: int) -> int:
    """Threads for one fit: one for small data (thread start-up and spinning cost more than they save on
    a shared 2-core machine), else the configured count or every core."""
    cores = cfg.training.torch_num_threads or (os.cpu_count() or 1)
    return 1 if rows < 20_000 else cores


def _min_leaf(rows: int) -> int:
    """Leaves of at least 200 windows (a few days of one vehicle) on fleet-sized data, fewer on tiny sets."""
    return int(min(200, max(20, rows // 100)))


def _lgb_params(cfg: Config, objective: str, rows: int = 0, **extra) -> dict:
    return {
        "objective": objective, "learning_rate": cfg.training.lightgbm_learning_rate,
        "num_leaves": cfg.training.lightgbm_num_leaves, "min_data_in_leaf": _min_leaf(rows), "feature_fraction": 0.3,
        "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 10.0, "max_bin": 63, "verbose": -1,
        "seed": cfg.seed, "deterministic": True, "force_row_wise": True,
        "num_threads": _threads(cfg, rows), **extra,
    }


def _downsample_negatives(y: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Row indices: every positive, at most ``ratio`` negatives per positive (all if ratio == 0)."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if ratio <= 0 or neg.size <= ratio * max(pos.size, 1):
        return np.sort(np.concatenate([pos, neg]))
    keep = np.random.default_rng(seed).choice(neg, size=int(ratio * max(pos.size, 1)), replace=False)
    return np.sort(np.concatenate([pos, keep]))


def _fit_booster(params: dict, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, rounds: int,
                 early: int, weight: np.ndarray | None = None):
    # OpenMP threads that sleep instead of spinning: the machine is shared (read once, at first import).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightgbm as lgb

    train = lgb.Dataset(X, y, weight=weight, feature_name=list(MODEL_FEATURE_NAMES), free_raw_data=True)
    valid = lgb.Dataset(Xv, yv, reference=train)
    callbacks = [lgb.early_stopping(early, verbose=False)] if yv.size and len(np.unique(yv)) > 1 else []
    booster = lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid] if callbacks else None,
                        callbacks=callbacks)
    return booster


def train_failure(cfg: Config, run_dir: Path, tr: SplitData, va: SplitData, horizons: tuple[int, ...],
                  base_meta: dict) -> dict:
    folder = run_dir / MODELS_DIR / "failure"
    folder.mkdir(parents=True, exist_ok=True)
    calibrators, metrics, best = {}, {}, {}
    for h in horizons:
        y, yv = tr.labels[f"y_{h}d"], va.labels[f"y_{h}d"]
        rows = _downsample_negatives(y, cfg.training.negatives_per_positive, cfg.seed + h)
        vrows = np.flatnonzero(yv >= 0)
        if not (y[rows] == 1).any() or not (y[rows] == 0).any():
            raise ValueError(f"horizon {h} d: the train split needs positive and negative windows "
                             f"(positives {(y == 1).sum()}, negatives {(y == 0).sum()}); generate a larger fleet")
        params = _lgb_params(cfg, "binary", rows.size, metric="average_precision")
        booster = _fit_booster(params, tr.model_X[rows], y[rows], va.model_X[vrows], yv[vrows],
                               cfg.training.lightgbm_num_rounds, cfg.training.early_stopping_rounds)
        raw_v = booster.predict(va.model_X[vrows])
        cal = fit_calibrator(raw_v, yv[vrows])
        (folder / f"h{h}.txt").write_text(booster.model_to_string())
        calibrators[str(h)] = cal.to_dict()
        best[str(h)] = booster.best_iteration or booster.current_iteration()
        metrics[str(h)] = {"validation_roc_auc": roc_auc(yv[vrows] == 1, raw_v),
                           "validation_pr_auc": average_precision(yv[vrows] == 1, raw_v),
                           "train_rows": int(rows.size), "validation_rows": int(vrows.size),
                           "calibration": cal.kind}
    modes = _train_mode_model(cfg, folder, tr, va, horizons[-1])
    write_meta(folder, {**base_meta, "kind": "failure", "horizons": list(horizons), "calibrators": calibrators,
                        "best_iteration": best, "metrics": metrics, "modes": modes},
               model_files=[f"h{h}.txt" for h in horizons] + (["mode.txt"] if modes else []) + [PLANT_FILE])
    return metrics


def _distinct_events(data: SplitData, rows: np.ndarray, mode: str) -> int:
    sel = rows[data.labels["next_mode"][rows] == mode]
    return len({(v, f) for v, f in zip(data.vehicle_id[sel].tolist(), data.labels["next_failure_ms"][sel].tolist(),
                                       strict=False)})


def _train_mode_model(cfg: Config, folder: Path, tr: SplitData, va: SplitData, horizon: int) -> list[str]:
    """P(mode | failure within the longest horizon) over modes with enough distinct train failures."""
    rows = np.flatnonzero(tr.labels[f"y_{horizon}d"] == 1)
    modes = sorted(m for m in set(tr.labels["next_mode"][rows].tolist())
                   if _distinct_events(tr, rows, m) >= cfg.training.min_positives_per_mode)
    mode_file = folder / "mode.txt"
    if len(modes) < 2:
        if mode_file.exists():
            mode_file.unlink()
        return []
    index = {m: k for k, m in enumerate(modes)}
    keep = rows[np.isin(tr.labels["next_mode"][rows], modes)]
    vrows = np.flatnonzero((va.labels[f"y_{horizon}d"] == 1) & np.isin(va.labels["next_mode"], modes))
    y = np.array([index[m] for m in tr.labels["next_mode"][keep]])
    yv = np.array([index[m] for m in va.labels["next_mode"][vrows]])
    params = _lgb_params(cfg, "multiclass", keep.size, num_class=len(modes), metric="multi_logloss")
    booster = _fit_booster(params, tr.model_X[keep], y, va.model_X[vrows], yv, cfg.training.lightgbm_num_rounds,
                           cfg.training.early_stopping_rounds)
    mode_file.write_text(booster.model_to_string())
    return modes


def _label_horizons(data: SplitData, longest: int) -> list[int]:
    return sorted(int(k[2:-1]) for k in data.labels if k.startswith("y_") and k.endswith("d") and int(k[2:-1]) <= longest)


def train_severity(cfg: Config, run_dir: Path, tr: SplitData, va: SplitData, horizon: int, base_meta: dict,
                   eval_horizon: int | None = None) -> dict:
    """Severity of the coming failure, classes balanced.

    Judged (configs/evaluation_metrics.md) on windows with a failure due within ``eval_horizon`` (default:
    the shortest horizon): severity is most knowable close to the failure, when the degradation is far
    along. The training population (windows positive at one of the horizons up to ``horizon``) is chosen
    by validation macro-F1 on that population.
    """
    folder = run_dir / MODELS_DIR / "severity"
    folder.mkdir(parents=True, exist_ok=True)
    candidates = _label_horizons(tr, horizon) or [horizon]
    eval_horizon = eval_horizon or candidates[0]
    vrows = np.flatnonzero((va.labels[f"y_{eval_horizon}d"] == 1) & (va.labels["next_severity"] > 0))
    yv = va.labels["next_severity"][vrows].astype(int) - 1
    best: tuple[float, int, object, np.ndarray] | None = None
    tried = {}
    for h in candidates:
        rows = np.flatnonzero((tr.labels[f"y_{h}d"] == 1) & (tr.labels["next_severity"] > 0))
        if rows.size == 0:
            continue
        y = tr.labels["next_severity"][rows].astype(int) - 1
        counts = np.bincount(y, minlength=3).astype(float)
        weight = (counts.sum() / (3 * np.maximum(counts, 1)))[y]
        params = _lgb_params(cfg, "multiclass", rows.size, num_class=3, metric="multi_logloss")
        booster = _fit_booster(params, tr.model_X[rows], y, va.model_X[vrows], yv, cfg.training.lightgbm_num_rounds,
                               cfg.training.early_stopping_rounds, weight=weight)
        pred = booster.predict(va.model_X[vrows]).reshape(-1, 3).argmax(axis=1) if vrows.size else np.zeros(0, int)
        f1 = macro_f1(yv + 1, pred + 1, [1, 2, 3]) if vrows.size else float("nan")
        tried[str(h)] = f1
        score = f1 if np.isfinite(f1) else -1.0
        if best is None or score > best[0]:
            best = (score, h, booster, counts)
    if best is None:
        raise ValueError("severity: no positive windows in the train split; generate a larger fleet")
    _, train_h, booster, counts = best
    (folder / "model.txt").write_text(booster.model_to_string())
    metrics = {"validation_macro_f1": tried[str(train_h)], "validation_macro_f1_by_train_horizon": tried,
               "train_horizon_days": train_h, "eval_horizon_days": eval_horizon,
               "train_rows": int(counts.sum()), "class_counts": counts.tolist()}
    write_meta(folder, {**base_meta, "kind": "severity", "horizon": train_h, "eval_horizon": eval_horizon,
                        "metrics": metrics, "best_iteration": booster.best_iteration or booster.current_iteration()},
               model_files=["model.txt", PLANT_FILE])
    return metrics


def _block_starts(vehicle_id: np.ndarray) -> np.ndarray:
    """Row index where each row's vehicle block starts (rows of one vehicle are contiguous)."""
    starts = np.zeros(vehicle_id.size, dtype=np.int64)
    change = np.flatnonzero(vehicle_id[1:] != vehicle_id[:-1]) + 1
    starts[change] = change
    return np.maximum.accumulate(starts)


def _sequence_rows(data: SplitData, rows: np.ndarray, length: int) -> np.ndarray:
    """(len(rows), length) row indices of the sequences ending at ``rows`` (front padded with the first)."""
    start = _block_starts(data.vehicle_id)[rows]
    idx = rows[:, None] - (length - 1) + np.arange(length)[None, :]
    return np.maximum(idx, start[:, None])


def _normal_sequence_ends(data: SplitData, length: int) -> np.ndarray:
    """bool per row: every window of the sequence ending there is healthy (no anomaly, not post-failure)."""
    healthy = ~data.labels["anomaly"].astype(bool) & ~data.labels["post_failure"].astype(bool)
    bad = np.concatenate([[0], np.cumsum(~healthy)])
    rows = np.arange(data.size)
    lo = _sequence_rows(data, rows, length)[:, 0]
    return (bad[rows + 1] - bad[lo]) == 0


def _sequences(signals: np.ndarray, seq_rows: np.ndarray) -> np.ndarray:
    return signals[seq_rows]


def train_anomaly(cfg: Config, run_dir: Path, tr: SplitData, va: SplitData, va_blocks: list[VehicleBlock],
                  base_meta: dict, stride_ms: int) -> dict:
    import torch

    # Small LSTM batches: one intra-op thread measured ~10x faster than two contending threads on the
    # shared 2-core machine; more only when configured.
    torch.set_num_threads(cfg.training.torch_num_threads or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    length = cfg.training.lstm_sequence_length
    idx = signal_index()
    healthy = ~tr.labels["anomaly"].astype(bool) & ~tr.labels["post_failure"].astype(bool)
    signals = tr.X[:, idx]
    center, scale = fit_scaler(signals[healthy] if healthy.any() else signals)
    pool = np.flatnonzero(_normal_sequence_ends(tr, length))
    rng = np.random.default_rng(cfg.seed)
    if pool.size > cfg.training.lstm_max_train_sequences:
        pool = np.sort(rng.choice(pool, cfg.training.lstm_max_train_sequences, replace=False))
    # Only the sampled sequences are materialised: memory stays flat whatever the fleet size.
    train_seq = normalise(_sequences(signals, _sequence_rows(tr, pool, length)), center, scale)
    model, losses = train_autoencoder(
        train_seq, hidden_size=cfg.training.lstm_hidden_size, epochs=cfg.training.lstm_epochs,
        batch_size=cfg.training.lstm_batch_size, learning_rate=cfg.training.lstm_learning_rate,
        seed=cfg.seed, device=device)
    verr, vshares = validation_errors(model, va, center, scale, length, device)
    vnormal = _normal_sequence_ends(va, length)
    reference = verr[vnormal] if vnormal.any() else verr
    threshold = float(np.percentile(reference, cfg.anomaly.anomaly_threshold_percentile))
    model = model.to("cpu")
    folder = run_dir / MODELS_DIR / "anomaly"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    # Per-vehicle scores on validation (error / threshold) for the budgeted alert threshold.
    scores = {}
    offset = 0
    for b in va_blocks:
        n = b.ends.size
        scores[b.vehicle_id] = verr[offset:offset + n] / threshold
        offset += n
    outcome = choose_threshold(va_blocks, scores, cfg.training.alert_budget_per_100_vehicle_days,
                               alert_policy_factory(cfg), stride_ms)
    metrics = {"train_sequences": int(pool.size), "epoch_losses": losses, "validation_normal_sequences": int(vnormal.sum()),
               "validation_event_recall": outcome.event_recall,
               "validation_false_alarms_per_100_vehicle_days": outcome.false_alarms_per_100, "device": device}
    write_meta(folder, {**base_meta, "kind": "anomaly", "input": "window_features", "signal_names": list(ANOMALY_SIGNALS),
                        "sequence_length": length, "hidden_size": cfg.training.lstm_hidden_size,
                        "center": center.tolist(), "scale": scale.tolist(), "threshold": threshold,
                        "threshold_percentile": cfg.anomaly.anomaly_threshold_percentile,
                        "alert_threshold": outcome.threshold, "metrics": metrics,
                        # The fleet's normal error per signal: personal heads measure a vehicle against it.
                        "signal_error_reference": anomaly_signal_reference(verr, vshares, vnormal).tolist()},
               model_files=["weights.pt"])
    return metrics


def validation_errors(model, va: SplitData, center: np.ndarray, scale: np.ndarray, length: int,
                      device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(error, per-signal shares) of the sequence ending at every validation window (chunked: flat memory)."""
    if not va.size:
        return np.zeros(0, np.float32), np.zeros((0, len(center)), np.float32)
    vsignals = va.X[:, signal_index()]
    parts = [reconstruction_errors(model, normalise(_sequences(vsignals, _sequence_rows(va, chunk, length)), center, scale),
                                   device=device)
             for chunk in np.array_split(np.arange(va.size), max(1, va.size // 8192))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def anomaly_signal_reference(errors: np.ndarray, shares: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Per-signal median error of normal validation sequences (all of them if none is normal), in the
    units twins compute (``training.alerting.per_signal_errors``)."""
    rows = normal if normal.any() else np.ones(errors.size, dtype=bool)
    return signal_error_reference(per_signal_errors(errors[rows], shares[rows]))


def train_baselines(cfg: Config, run_dir: Path, tr: SplitData, va_blocks: list[VehicleBlock], stride_ms: int) -> dict:
    healthy = ~tr.labels["anomaly"].astype(bool) & ~tr.labels["post_failure"].astype(bool)
    limits = FixedLimits.fit(tr.X[healthy] if healthy.any() else tr.X)
    policy = alert_policy_factory(cfg)
    budget = cfg.training.alert_budget_per_100_vehicle_days
    out = {"fixed_limits": limits.to_dict()}
    for name, fn in (("fixed_limits", limits.score), ("vehicle_zscore", vehicle_zscore)):
        scores = {b.vehicle_id: fn(b.X) for b in va_blocks}
        outcome = choose_threshold(va_blocks, scores, budget, policy, stride_ms)
        out[f"{name}_alert_threshold"] = outcome.threshold
        out[f"{name}_validation"] = {"event_recall": outcome.event_recall,
                                     "false_alarms_per_100_vehicle_days": outcome.false_alarms_per_100}
    (run_dir / MODELS_DIR / "baselines.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


NO_LABELS_NOTE = ("no failure labels (no events.parquet, no maintenance records): the failure and severity models "
                  "need labels and were not trained; the anomaly model, the plant relations and the baselines "
                  "learned the fleet's own normal. Give maintenance records with `evtwin prepare --maintenance FILE` "
                  "(vehicle, date, component or mode) to train the failure models too.")


def has_failure_labels(tr: SplitData, horizons: tuple[int, ...]) -> bool:
    """Whether the train split has any window positive at a horizon (a fleet with failure labels)."""
    return any((tr.labels[f"y_{h}d"] == 1).any() for h in horizons)


def write_plant(run_dir: Path, plant: PlantModel) -> None:
    """``plant.json`` beside each LightGBM model (its sha256 is recorded with theirs, checked at load)."""
    for kind in ("failure", "severity"):
        folder = run_dir / MODELS_DIR / kind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PLANT_FILE).write_text(plant.to_json())


def train_all(run_dir: Path, cfg: Config, on_step: Callable[[str], None] | None = None) -> dict:
    """Train every model of a prepared run; returns timings and validation metrics (models/training.json).

    The plant relations (``training.plant``) are fitted first, on the healthy train windows. A fleet
    without failure labels (an imported history, no maintenance records) trains the plant, the anomaly
    model and the baselines, and says that the failure models need labels (console and training.json).
    """
    run_dir = Path(run_dir)
    card = read_card(run_dir)
    horizons = tuple(int(h) for h in card["horizons"])
    stride_ms = int(card["stride_ms"])
    step = on_step or (lambda _name: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    step("loading dataset")
    tr, va = load_split(run_dir, "train", horizons), load_split(run_dir, "validation", horizons)
    events = pq.read_table(run_dir / DATASET_DIR / "events.parquet")
    va_blocks = vehicle_blocks(va, events, stride_ms)
    timings["load_s"] = time.perf_counter() - t0
    base_meta = {**provenance(), "model_feature_names": list(MODEL_FEATURE_NAMES), "data_hash": card["data_hash"],
                 "config": cfg.model_dump(mode="json"), "stride_ms": stride_ms, "window_ms": int(card["window_ms"])}
    (run_dir / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    step("fitting plant relations")
    t = time.perf_counter()
    plant = fit_plant(tr.X, healthy_rows(tr), seed=cfg.seed)
    write_plant(run_dir, plant)
    with_plant(tr, plant), with_plant(va, plant)
    timings["plant_s"] = time.perf_counter() - t
    labelled = has_failure_labels(tr, horizons)
    if not labelled:
        step(NO_LABELS_NOTE)
    results: dict[str, dict] = {}
    for name, fn in (
        ("failure", lambda: train_failure(cfg, run_dir, tr, va, horizons, base_meta)),
        ("severity", lambda: train_severity(cfg, run_dir, tr, va, horizons[-1], base_meta)),
        ("anomaly", lambda: train_anomaly(cfg, run_dir, tr, va, va_blocks, base_meta, stride_ms)),
        ("baselines", lambda: train_baselines(cfg, run_dir, tr, va_blocks, stride_ms)),
    ):
        if name in ("failure", "severity") and not labelled:
            continue
        step(f"training {name}")
        t = time.perf_counter()
        results[name] = fn()
        timings[f"{name}_s"] = time.perf_counter() - t
    record_training_reference(run_dir, tr.X)  # input and score distributions for drift monitoring
    timings["total_s"] = time.perf_counter() - t0
    summary = {"timings": timings, "metrics": {k: v for k, v in results.items() if k != "baselines"},
               "data_hash": card["data_hash"], "train_windows": tr.size, "validation_windows": va.size,
               "plant": json.loads(plant.to_json())["relations"],
               "failure_models": "trained" if labelled else NO_LABELS_NOTE}
    (run_dir / MODELS_DIR / "training.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return summary
