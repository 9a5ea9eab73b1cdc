"""Probability calibration fitted on the validation split: isotonic regression (scipy's pool adjacent
violators) with a Platt (logistic) fallback when positives are too few for a step function. JSON-able.

The isotonic calibrator is scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` stored as its
thresholds: on a training score it returns the fitted block value, linear between the last score of
one block and the first of the next, flat beyond the ends. Below, 0.2 and 0.3 are pooled into one
block of value 0.5:

>>> cal = fit_calibrator(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]), min_positives_isotonic=1)
>>> cal.kind, cal.apply(np.array([0.1, 0.2, 0.3, 0.35])).round(2).tolist()
('isotonic', [0.0, 0.5, 0.5, 0.75])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import isotonic_regression

__all__ = ["ISOTONIC_FORMAT", "Calibrator", "fit_calibrator", "isotonic_fit", "platt_fit"]


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing fit of y on x; equal x share one value (their mean first, as scikit-learn pools ties).

    Returns (thresholds, values): the first and last x of every constant block and the fitted value
    there, so that ``np.interp(x, thresholds, values)`` is the fitted value at every training x.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"isotonic_fit needs equal-length non-empty 1-d x and y (got {x.shape} and {y.shape})")
    distinct, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=y) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
    # Keep only the ends of constant runs: interpolation between them gives the same function.
    changes = np.flatnonzero(np.diff(fitted) != 0)
    keep = np.unique(np.concatenate([[0, fitted.size - 1], changes, changes + 1]))
    return distinct[keep], fitted[keep]


def platt_fit(score: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Logistic fit p = sigmoid(a * logit(score) + b) by Newton steps (with Platt's target smoothing)."""
    z = _logit(score)
    n_pos, n_neg = float(y.sum()), float(y.size - y.sum())
    t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(a * z + b)))
        g = np.array([np.sum((p - t) * z), np.sum(p - t)])
        w = p * (1 - p) + 1e-9
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


# Version of the isotonic artefact: 2 stores scikit-learn-style thresholds (both ends of every block).
# Version 1 (no "format" key) stored only right edges and interpolated between them, which moved
# training scores inside a block off the block's value; such artefacts are refused, not reinterpreted.
ISOTONIC_FORMAT = 2


@dataclass
class Calibrator:
    """Maps raw model scores to calibrated probabilities; ``to_dict``/``from_dict`` for JSON artefacts."""

    kind: str  # "isotonic" | "platt" | "identity"
    thresholds: list[float] = field(default_factory=list)  # isotonic: scores at both ends of every block
    values: list[float] = field(default_factory=list)  # isotonic: fitted value at each threshold
    a: float = 1.0
    b: float = 0.0

    def apply(self, score: np.ndarray) -> np.ndarray:
        score = np.asarray(score, dtype=np.float64)
        if self.kind == "isotonic":
            # The fitted step function at training scores, linear between blocks, clipped beyond the ends.
            return np.interp(score, np.asarray(self.thresholds), np.asarray(self.values))
        if self.kind == "platt":
            return 1 / (1 + np.exp(-(self.a * _logit(score) + self.b)))
        return np.clip(score, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "format": ISOTONIC_FORMAT, "thresholds": list(map(float, self.thresholds)),
                "values": list(map(float, self.values)), "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        if d["kind"] == "isotonic" and d.get("format") != ISOTONIC_FORMAT:
            raise ValueError(
                f"isotonic calibrator of format {d.get('format', 1)} (this code reads {ISOTONIC_FORMAT}): it was "
                "written by an older evtwin that interpolated between block right edges and mis-calibrates "
                "scores inside a block; re-run `evtwin train` to refit it")
        if d["kind"] not in ("isotonic", "platt", "identity"):
            raise ValueError(f"calibrator kind {d['kind']!r} is not one of isotonic, platt, identity")
        return cls(kind=d["kind"], thresholds=list(d.get("thresholds", [])), values=list(d.get("values", [])),
                   a=d["a"], b=d["b"])


def fit_calibrator(score: np.ndarray, y: np.ndarray, min_positives_isotonic: int = 30) -> Calibrator:
    """Isotonic when there are enough positives for steps to mean something, else Platt, else identity."""
    y = np.asarray(y).astype(float)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return Calibrator(kind="identity")
    if n_pos >= min_positives_isotonic:
        thresholds, values = isotonic_fit(score, y)
        return Calibrator(kind="isotonic", thresholds=thresholds.tolist(), values=values.tolist())
    a, b = platt_fit(np.asarray(score, float), y)
    return Calibrator(kind="platt", a=a, b=b)
