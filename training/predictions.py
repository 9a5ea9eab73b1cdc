"""Per-row model answers for the twins: one prediction path for the Serve deployments and the what-if.

From a failure model and a severity model (``training.artifacts`` loaders, or anything with the same
methods) and a feature matrix ``X``, each row gets what ``twins.twin.VehicleTwin.apply_prediction``
takes: risk per horizon, the most likely failure mode, the top-k feature contributions and the
severity level. ``most_likely_modes`` is the only place a mode is chosen. Pure: no Ray, gRPC or protos.

>>> import numpy as np
>>> most_likely_modes(["brake_wear", "coolant_pump"], np.array([[0.05, 0.15], [0.3, 0.1]]))
['coolant_pump', 'brake_wear']
>>> most_likely_modes([], np.zeros((2, 0)))
[None, None]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

SEVERITY_LEVELS = (1, 2, 3)


class FailureModel(Protocol):
    """What ``training.artifacts.FailureModel`` offers; ``predict_modes`` (per-mode risk) is optional."""

    def predict(self, X: np.ndarray) -> dict[int, np.ndarray]: ...
    def contributions(self, X: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]: ...


class SeverityModel(Protocol):
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass
class RowAnswers:
    """Model answers per row of ``X``, in row order."""

    risk: list[dict[int, float]]
    mode: list[str | None]
    contributions: list[list[tuple[str, float]]]
    severity: list[int | None]


def mode_risk(model: Any, X: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(mode names sorted, rows x modes risk) at the shortest horizon; no modes where the model has no mode heads.

    ``predict_modes`` may answer ``{horizon: {mode: risk}}`` (``training.artifacts``) or ``{mode: risk}``.
    """
    rows = int(X.shape[0])
    predict_modes = getattr(model, "predict_modes", None)
    if predict_modes is None or rows == 0:
        return [], np.zeros((rows, 0), dtype=np.float32)
    by_mode = predict_modes(X)
    if by_mode and isinstance(next(iter(by_mode.values())), dict):
        by_mode = by_mode[min(by_mode)]
    names = sorted(by_mode)
    if not names:
        return [], np.zeros((rows, 0), dtype=np.float32)
    return names, np.stack([np.asarray(by_mode[name]) for name in names], axis=1)


def most_likely_modes(names: Sequence[str], risk_by_mode: np.ndarray) -> list[str | None]:
    """The mode with the highest risk per row (ties: the first name); None for every row when there are no modes."""
    risk_by_mode = np.asarray(risk_by_mode)
    if not names:
        return [None] * int(risk_by_mode.shape[0])
    if risk_by_mode.ndim != 2 or risk_by_mode.shape[1] != len(names):
        raise ValueError(f"risk_by_mode has shape {risk_by_mode.shape}, expected (rows, {len(names)}) "
                         f"for modes {list(names)}")
    return [names[int(j)] for j in np.argmax(risk_by_mode, axis=1)]


def severity_levels(probabilities: np.ndarray) -> np.ndarray:
    """The most probable level of ``SEVERITY_LEVELS`` per row of (rows x levels) probabilities."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(SEVERITY_LEVELS)[np.argmax(probabilities.reshape(probabilities.shape[0], len(SEVERITY_LEVELS)),
                                                 axis=1)]


def answers_from_arrays(horizons: Sequence[int], risk: np.ndarray, modes: Sequence[str], risk_by_mode: np.ndarray,
                        contributions: Sequence[Sequence[tuple[str, float]]],
                        severity: Sequence[int] | np.ndarray | None) -> RowAnswers:
    """Per-row answers from batched arrays: ``risk`` (rows x horizons), ``risk_by_mode`` (rows x modes)."""
    rows = int(np.asarray(risk).shape[0])
    risks = [{int(h): float(risk[i, j]) for j, h in enumerate(horizons)} for i in range(rows)]
    levels: list[int | None] = [None] * rows if severity is None else [int(s) for s in severity]
    return RowAnswers(risks, most_likely_modes(list(modes), risk_by_mode), [list(c) for c in contributions], levels)


def predict_rows(failure_model: FailureModel, X: np.ndarray, severity_model: SeverityModel | None = None,
                 top_k: int = 3, mode_threshold: float | None = None) -> RowAnswers:
    """Answers for every row of ``X`` (rows x features).

    ``top_k = 0`` skips the contributions; without a severity model the severity is None.
    ``mode_threshold``: name the mode only for rows whose risk at the shortest horizon reaches it (the
    rows that may raise an alert; saves the per-mode model call for the others, which get None).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be rows x features, got shape {X.shape}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (got {top_k})")
    rows = int(X.shape[0])
    by_horizon = {int(h): p for h, p in failure_model.predict(X).items()}
    horizons = sorted(by_horizon)
    risk = [{h: float(by_horizon[h][i]) for h in horizons} for i in range(rows)]
    modes: list[str | None] = [None] * rows
    if horizons and rows:
        selected = np.arange(rows)
        if mode_threshold is not None:
            selected = np.flatnonzero(np.asarray(by_horizon[horizons[0]]) >= mode_threshold)
        if selected.size:
            names, matrix = mode_risk(failure_model, X[selected])
            for row, mode in zip(selected.tolist(), most_likely_modes(names, matrix), strict=False):
                modes[row] = mode
    contributions = failure_model.contributions(X, top_k) if top_k > 0 and rows else [[] for _ in range(rows)]
    severity: list[int | None] = [None] * rows
    if severity_model is not None and rows:
        severity = [int(s) for s in severity_levels(severity_model.predict_proba(X))]
    return RowAnswers(risk, modes, [list(c) for c in contributions], severity)
