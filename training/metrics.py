"""Evaluation metrics in numpy (no sklearn), each checked against a hand-computed case in the tests.
Event-level alert metrics (recall, false alarms, lead times) are the judge's: ``training.judge``.

>>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
>>> round(average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 4)
0.8333
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "roc_auc", "average_precision", "precision_recall_curve", "recall_at_precision", "brier_score",
    "reliability_bins", "confusion_matrix", "macro_f1", "pointwise_precision_recall",
]


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    return y, s


def _average_ranks(s: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Ties share the mean of their ranks (1-based).
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    mean_rank = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); NaN without both classes."""
    y, s = _check(y, s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_recall_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) at every distinct score, thresholds descending (predict s >= thr)."""
    y, s = _check(y, s)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.concatenate([np.flatnonzero(np.diff(s_sorted)), [s.size - 1]]) if s.size else np.zeros(0, int)
    tp = np.cumsum(y_sorted)[last_of_tie]
    predicted = last_of_tie + 1
    total_pos = max(int(y.sum()), 1)
    return tp / predicted, tp / total_pos, s_sorted[last_of_tie]


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """PR-AUC as average precision: sum over thresholds of (R_k - R_{k-1}) * P_k (no interpolation)."""
    y, s = _check(y, s)
    if not y.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, s)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def recall_at_precision(y: np.ndarray, s: np.ndarray, min_precision: float = 0.8) -> float:
    """Highest recall over thresholds whose precision is >= ``min_precision`` (0 if none)."""
    y, s = _check(y, s)
    if not y.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, s)
    ok = precision >= min_precision
    return float(recall[ok].max()) if ok.any() else 0.0


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Per equal-width probability bin: mean predicted, observed frequency, count (empty bins dropped)."""
    y, p = _check(y, p)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    keep = count > 0
    mean_p = np.bincount(idx, weights=p, minlength=bins)[keep] / count[keep]
    freq = np.bincount(idx, weights=y.astype(float), minlength=bins)[keep] / count[keep]
    return {"mean_predicted": mean_p.tolist(), "observed": freq.tolist(), "count": count[keep].tolist()}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Rows true, columns predicted, in ``labels`` order."""
    index = {label: i for i, label in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(np.asarray(y_true).tolist(), np.asarray(y_pred).tolist(), strict=False):
        m[index[t], index[p]] += 1
    return m


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (a class absent from truth and prediction: skipped)."""
    m = confusion_matrix(y_true, y_pred, labels)
    scores = []
    for k in range(len(labels)):
        tp, fp, fn = m[k, k], m[:, k].sum() - m[k, k], m[k, :].sum() - m[k, k]
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def pointwise_precision_recall(truth: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    """Per-window precision and recall, WITHOUT point-adjust (a hit does not credit its whole segment)."""
    truth, flagged = np.asarray(truth, bool), np.asarray(flagged, bool)
    tp = int((truth & flagged).sum())
    precision = tp / flagged.sum() if flagged.any() else float("nan")
    recall = tp / truth.sum() if truth.any() else float("nan")
    return float(precision), float(recall)
