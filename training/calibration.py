"""Probability calibration fitted on the validation split: isotonic regression (pool adjacent violators)
with a Platt (logistic) fallback when positives are too few for a step function. Pure numpy, JSON-able.

>>> cal = fit_calibrator(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]), min_positives_isotonic=1)
>>> cal.kind, cal.apply(np.array([0.1, 0.35])).round(2).tolist()
('isotonic', [0.0, 0.75])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Calibrator", "fit_calibrator", "isotonic_fit", "platt_fit"]


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing step fit of y on x (PAV). Returns (block right edges in x, block values)."""
    order = np.argsort(x, kind="mergesort")
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    # Equal x values must share a value: start from one block per distinct x.
    edges = np.concatenate([np.flatnonzero(np.diff(xs)), [xs.size - 1]])
    sums = list(np.add.reduceat(ys, np.concatenate([[0], edges[:-1] + 1])))
    counts = list(np.diff(np.concatenate([[-1], edges])).astype(float))
    right = list(xs[edges])
    values, weights, rights = [], [], []
    for s, c, r in zip(sums, counts, right):
        values.append(s / c)
        weights.append(c)
        rights.append(r)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:], weights[-2:], rights[-2:] = [v], [w], [rights[-1]]
    return np.array(rights), np.array(values)


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


@dataclass
class Calibrator:
    """Maps raw model scores to calibrated probabilities; ``to_dict``/``from_dict`` for JSON artefacts."""

    kind: str  # "isotonic" | "platt" | "identity"
    edges: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    def apply(self, score: np.ndarray) -> np.ndarray:
        score = np.asarray(score, dtype=np.float64)
        if self.kind == "isotonic":
            # Linear between block right edges (monotone, fewer ties than steps), flat beyond the ends.
            return np.interp(score, np.asarray(self.edges), np.asarray(self.values))
        if self.kind == "platt":
            return 1 / (1 + np.exp(-(self.a * _logit(score) + self.b)))
        return np.clip(score, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "edges": list(map(float, self.edges)), "values": list(map(float, self.values)),
                "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        return cls(kind=d["kind"], edges=list(d["edges"]), values=list(d["values"]), a=d["a"], b=d["b"])


def fit_calibrator(score: np.ndarray, y: np.ndarray, min_positives_isotonic: int = 30) -> Calibrator:
    """Isotonic when there are enough positives for steps to mean something, else Platt, else identity."""
    y = np.asarray(y).astype(float)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return Calibrator(kind="identity")
    if n_pos >= min_positives_isotonic:
        edges, values = isotonic_fit(score, y)
        return Calibrator(kind="isotonic", edges=edges.tolist(), values=values.tolist())
    a, b = platt_fit(np.asarray(score, float), y)
    return Calibrator(kind="platt", a=a, b=b)
