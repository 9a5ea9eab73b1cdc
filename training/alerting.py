"""score -> threshold with hysteresis and cooldown -> alerts: one pure decision, offline and in the twins.

An alert fires when the score has been >= ``threshold`` for ``consecutive`` windows in a row, no
alert is active, and the last alert is at least ``cooldown_ms`` old. The alert stays active (no new
alert) until the score falls below ``clear_ratio * threshold``. One fault gives one alert, not a storm.

>>> policy = AlertPolicy(threshold=1.0, consecutive=2, clear_ratio=0.5, cooldown_ms=0)
>>> alert_indices(np.arange(7), np.array([1.2, 1.3, 1.5, 0.8, 1.2, 0.2, 2.0]), policy).tolist()
[1]
>>> alert_indices(np.arange(8), np.array([1.2, 1.3, 0.1, 1.1, 1.2, 0.2, 2.0, 2.0]), policy).tolist()
[1, 4, 7]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AlertPolicy", "AlertState", "alert_indices", "flagged", "per_signal_errors", "signal_error_reference"]


@dataclass(frozen=True)
class AlertPolicy:
    threshold: float
    consecutive: int = 2
    clear_ratio: float = 0.7
    cooldown_ms: int = 6 * 3_600_000

    def __post_init__(self) -> None:
        if self.consecutive < 1:
            raise ValueError(f"consecutive must be >= 1 (got {self.consecutive})")
        if not 0 < self.clear_ratio <= 1:
            raise ValueError(f"clear_ratio must be in (0, 1] (got {self.clear_ratio})")
        if self.cooldown_ms < 0:
            raise ValueError(f"cooldown_ms must be >= 0 (got {self.cooldown_ms})")

    @classmethod
    def for_twins(cls, twins: Any, threshold: float) -> AlertPolicy:
        """The anomaly gate of twins configured by ``twins`` (a ``configs.settings.TwinsConfig``) at ``threshold``:
        the one place the twin, the offline evaluation and the benches build it."""
        return cls(threshold=float(threshold), consecutive=twins.anomaly_consecutive_windows,
                   clear_ratio=twins.anomaly_clear_ratio, cooldown_ms=int(twins.alert_cooldown_minutes * 60_000))


@dataclass
class AlertState:
    """Per-vehicle alerting state (three numbers; serialise them as you like)."""

    run: int = 0  # consecutive windows at or above the threshold
    active: bool = False
    last_alert_ms: int | None = None

    def step(self, t_ms: int, score: float, policy: AlertPolicy) -> bool:
        """Advance by one window; True when this window raises an alert."""
        if not np.isfinite(score):
            score = 0.0  # a window that could not be scored never raises nor sustains an alert
        self.run = self.run + 1 if score >= policy.threshold else 0
        if self.active and score < policy.clear_ratio * policy.threshold:
            self.active = False
        if self.active or self.run < policy.consecutive:
            return False
        if self.last_alert_ms is not None and t_ms - self.last_alert_ms < policy.cooldown_ms:
            return False
        self.active = True
        self.last_alert_ms = int(t_ms)
        return True


def alert_indices(window_end_ms: np.ndarray, scores: np.ndarray, policy: AlertPolicy,
                  state: AlertState | None = None) -> np.ndarray:
    """Indices of the windows (one vehicle, time order) that raise an alert."""
    state = state if state is not None else AlertState()
    hits = [i for i, (t, s) in enumerate(zip(np.asarray(window_end_ms).tolist(), np.asarray(scores, float).tolist(),
                                             strict=False))
            if state.step(t, s, policy)]
    return np.asarray(hits, dtype=np.int64)


def flagged(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Point-wise decision (no hysteresis) for point-wise precision/recall."""
    return np.nan_to_num(np.asarray(scores, float), nan=0.0) >= threshold


def per_signal_errors(errors: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """(windows x signals) errors from the fleet model's (error, per-signal shares): what the head reads.

    What the fleet model outputs per signal: the ONE definition shared by the twins' personal heads and
    ``signal_error_reference``, so offsets and the reference are in the same units.

    >>> per_signal_errors(np.array([2.0]), np.array([[0.25, 0.75]])).tolist()
    [[0.5, 1.5]]
    """
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    return errors[:, None] * np.asarray(shares, dtype=np.float64).reshape(errors.size, -1)


def signal_error_reference(signal_errors: np.ndarray) -> np.ndarray:
    """The fleet's typical normal error per signal: the median over normal windows' ``per_signal_errors``."""
    signal_errors = np.asarray(signal_errors, dtype=np.float64)
    if signal_errors.ndim != 2 or signal_errors.shape[0] == 0:
        raise ValueError(f"signal_errors must be a non-empty (windows, signals) matrix (got {signal_errors.shape})")
    return np.median(signal_errors, axis=0)
