"""Drift: does the fleet still look like the data the models were trained on?

At train time the distribution of every model input is summarised (``reference_summary``: decile bin edges,
the share of training windows in each bin, the share missing) and stored in the artefact
(``models/drift_reference.json``), with the failure model's score distribution on the same windows. Live
windows are compared bin by bin with the population stability index (PSI, the credit-scoring standard):

    PSI = sum over bins (live share - reference share) * ln(live share / reference share)

Rule of thumb: below 0.1 stable, 0.1-0.25 a shift worth watching, above 0.25 a shift the model may not
handle (``DEFAULT_ALERT_LEVEL``). Shares are floored at ``EPSILON`` so an empty bin stays finite.

Pure numpy: the offline command (``evtwin drift``) and the twins use the same functions.

>>> rng = np.random.default_rng(0)
>>> ref = reference_summary(rng.normal(size=(5000, 1)).astype(np.float32), ["x"])
>>> round(psi(ref["features"]["x"], rng.normal(size=5000)), 3) < 0.02
True
>>> psi(ref["features"]["x"], rng.normal(1.0, 1.0, size=5000)) > 0.25
True
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.artifacts import MODELS_DIR, load_failure_model
from training.features import FEATURE_NAMES

REFERENCE_FILE = "drift_reference.json"
BINS = 10
EPSILON = 1e-4
DEFAULT_ALERT_LEVEL = 0.25
MIN_WINDOWS = 50  # fewer live windows than this: PSI is noise, the group is reported as too small


def _edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner bin edges at the quantiles of the finite values (duplicates merged: a constant input has one)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    inner = np.quantile(finite.astype(np.float64), np.linspace(0, 1, bins + 1)[1:-1])
    return [float(e) for e in np.unique(inner)]


def _shares(values: np.ndarray, edges: Sequence[float]) -> tuple[list[float], float]:
    """(share of the finite values in each bin, share of values missing: NaN or infinite)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    counts = np.bincount(np.searchsorted(np.asarray(edges), values[finite], side="right"), minlength=len(edges) + 1)
    total = max(int(finite.sum()), 1)
    return [float(c) / total for c in counts], float(1.0 - finite.mean()) if values.size else 0.0


def summarise(values: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """One input's reference: ``edges`` (inner), ``shares`` (len(edges) + 1), ``missing``, ``count``."""
    edges = _edges(np.asarray(values, dtype=np.float64), bins)
    shares, missing = _shares(values, edges)
    return {"edges": edges, "shares": shares, "missing": missing, "count": int(np.asarray(values).size)}


def reference_summary(X: np.ndarray, feature_names: Sequence[str], scores: Mapping[str, np.ndarray] | None = None,
                      bins: int = BINS) -> dict[str, Any]:
    """The training reference of every input (``X``: windows x features) and of each model score."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(f"X: shape {X.shape}, expected (windows, {len(feature_names)}) in feature_names order")
    return {"version": 1, "bins": bins, "windows": int(X.shape[0]),
            "features": {name: summarise(X[:, j], bins) for j, name in enumerate(feature_names)},
            "scores": {name: summarise(values, bins) for name, values in (scores or {}).items()}}


def psi(reference: Mapping[str, Any], live: np.ndarray) -> float:
    """Population stability index of ``live`` values against one input's reference (missing values are
    one more bin, so a sensor that stops reporting is drift too)."""
    live_shares, live_missing = _shares(np.asarray(live), reference["edges"])
    ref = np.array([s * (1 - reference["missing"]) for s in reference["shares"]] + [reference["missing"]])
    now = np.array([s * (1 - live_missing) for s in live_shares] + [live_missing])
    ref, now = np.maximum(ref, EPSILON), np.maximum(now, EPSILON)
    return float(np.sum((now - ref) * np.log(now / ref)))


def compare(reference: Mapping[str, Any], X: np.ndarray, feature_names: Sequence[str],
            scores: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """PSI of every input (and score) of live windows ``X``; ``level``: the largest input PSI."""
    X = np.asarray(X)
    missing = [n for n in feature_names if n not in reference["features"]]
    if missing:
        raise ValueError(f"feature {missing[0]!r}: not in the drift reference (trained with other features)")
    features = []
    for j, name in enumerate(feature_names):
        ref = reference["features"][name]
        live_missing = float(1.0 - np.isfinite(X[:, j]).mean()) if len(X) else 0.0
        features.append({"feature": name, "psi": psi(ref, X[:, j]), "missing_reference": ref["missing"],
                         "missing_live": live_missing})
    score_psi = {name: psi(reference["scores"][name], values)
                 for name, values in (scores or {}).items() if name in reference.get("scores", {})}
    features.sort(key=lambda f: -f["psi"])
    return {"windows": int(len(X)), "level": max((f["psi"] for f in features), default=0.0),
            "features": features, "score_psi": score_psi, "enough_windows": len(X) >= MIN_WINDOWS}


def compare_groups(reference: Mapping[str, Any], X: np.ndarray, feature_names: Sequence[str],
                   groups: np.ndarray) -> dict[str, dict[str, Any]]:
    """``compare`` per group label (e.g. vehicle profile: duty cycle, climate; or vehicle), each with its worst input."""
    groups = np.asarray(groups)
    if groups.size == 0:
        return {}
    order = np.argsort(groups, kind="stable")  # one pass over the windows, not one mask per group
    labels, starts = np.unique(groups[order], return_index=True)
    result = {}
    for group, rows in zip(labels.tolist(), np.split(order, starts[1:]), strict=True):
        part = compare(reference, np.asarray(X)[rows], feature_names)
        worst = part["features"][0] if part["features"] else {"feature": "", "psi": 0.0}
        result[str(group)] = {"windows": part["windows"], "level": part["level"], "worst_feature": worst["feature"],
                              "enough_windows": part["enough_windows"]}
    return result


def top_groups(by_group: Mapping[str, Mapping[str, Any]], count: int) -> list[str]:
    """The ``count`` groups most unlike the reference (largest level), among those with enough windows to judge."""
    judged = [(name, float(g["level"])) for name, g in by_group.items() if g["enough_windows"]]
    return [name for name, _ in sorted(judged, key=lambda item: (-item[1], item[0]))[:count]]


def write_reference(models_dir: str | Path, X: np.ndarray, feature_names: Sequence[str],
                    scores: Mapping[str, np.ndarray] | None = None) -> Path:
    """Store the reference in the model artefact folder (JSON, next to the models' meta files)."""
    path = Path(models_dir) / REFERENCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reference_summary(X, feature_names, scores)) + "\n")
    return path


def read_reference(models_dir: str | Path) -> dict[str, Any]:
    path = Path(models_dir) / REFERENCE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no drift reference (models trained before drift monitoring: retrain)")
    return json.loads(path.read_text())


def failure_scores(run_dir: str | Path, X: np.ndarray) -> dict[str, np.ndarray]:
    """The failure model's probability per horizon (``risk_<h>d``) for windows ``X``; empty without a model."""
    try:
        model = load_failure_model(str(run_dir))
    except FileNotFoundError:
        return {}
    return {f"risk_{h}d": np.asarray(p) for h, p in model.predict(X).items()} if len(X) else {}


def record_training_reference(run_dir: str | Path, X: np.ndarray) -> Path:
    """The train-time hook: the reference of the training windows ``X`` (``FEATURE_NAMES`` order) and of the
    failure model's scores on them, written to ``<run>/models/drift_reference.json``."""
    return write_reference(Path(run_dir) / MODELS_DIR, X, FEATURE_NAMES, failure_scores(run_dir, X))
