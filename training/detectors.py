"""Anomaly detectors scored per vehicle, alert outcomes and budgeted threshold choice.

Three detectors share one protocol (score every window of one vehicle, higher = more anomalous):

* ``lstm_ae``: the LSTM autoencoder (error / its percentile threshold);
* ``fixed_limits``: what a fleet runs without ML, limits on raw signal extremes, set at the 0.5 / 99.5 %
  quantiles of healthy training windows; score = worst exceedance in robust units;
* ``vehicle_zscore``: per vehicle, |z| of raw signal window means against the vehicle's own earlier
  windows (expanding mean/std, causal); score = the largest |z|.

Every detector's alert threshold is chosen on the validation split under the alert budget
(false alarms per 100 healthy vehicle-days) with the same alerting policy the twins use.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from training.alerting import AlertPolicy, AlertState
from training.features import FEATURE_NAMES
from training.labels import MS_PER_DAY

__all__ = ["FIXED_LIMIT_SIGNALS", "ZSCORE_SIGNALS", "VehicleBlock", "FixedLimits", "vehicle_zscore",
           "AlertOutcome", "alert_outcome", "choose_threshold"]

# (feature, direction): +1 an upper limit, -1 a lower limit.
FIXED_LIMIT_SIGNALS: tuple[tuple[str, int], ...] = (
    ("cell_temp_max_max", 1), ("cell_voltage_max_max", 1), ("cell_voltage_min_min", -1),
    ("cell_v_spread_max", 1), ("internal_resistance_max", 1), ("insulation_resistance_min", -1),
    ("coolant_temp_out_max", 1), ("motor_temp_max", 1), ("inverter_temp_max", 1),
    ("tyre_pressure_fl_min", -1), ("tyre_pressure_fr_min", -1), ("tyre_pressure_rl_min", -1),
    ("tyre_pressure_rr_min", -1), ("brake_temp_max", 1), ("brake_pad_wear_max", 1),
    ("aux_battery_voltage_min", -1),
)
ZSCORE_SIGNALS: tuple[str, ...] = (
    "cell_voltage_min_mean", "cell_voltage_max_mean", "cell_temp_max_mean", "internal_resistance_mean",
    "insulation_resistance_mean", "coolant_temp_out_mean", "coolant_flow_mean", "motor_temp_mean",
    "inverter_temp_mean", "tyre_pressure_fl_mean", "tyre_pressure_fr_mean", "tyre_pressure_rl_mean",
    "tyre_pressure_rr_mean", "brake_temp_mean", "brake_pad_wear_mean", "aux_battery_voltage_mean", "soh_mean",
)
ZSCORE_WARMUP_WINDOWS = 24


@dataclass
class VehicleBlock:
    """One vehicle's windows (time order) with what evaluation needs."""

    vehicle_id: str
    ends: np.ndarray
    X: np.ndarray
    healthy: np.ndarray  # neither anomalous nor just after a failure
    anomaly: np.ndarray
    events: list[tuple[int, int, str]] = field(default_factory=list)  # (onset_ms, failure_ms, mode) observed


@dataclass
class FixedLimits:
    """Fixed limits on raw signal extremes, fitted on healthy training windows."""

    limits: np.ndarray
    scales: np.ndarray
    directions: np.ndarray
    index: np.ndarray

    @classmethod
    def fit(cls, X_healthy: np.ndarray) -> FixedLimits:
        index = np.array([FEATURE_NAMES.index(f) for f, _ in FIXED_LIMIT_SIGNALS])
        directions = np.array([d for _, d in FIXED_LIMIT_SIGNALS], dtype=np.float64)
        values = X_healthy[:, index].astype(np.float64)
        hi, lo = np.percentile(values, 99.5, axis=0), np.percentile(values, 0.5, axis=0)
        q75, q25 = np.percentile(values, [75, 25], axis=0)
        scales = np.maximum((q75 - q25) / 1.349, 1e-3 * np.maximum(np.abs(np.median(values, axis=0)), 1.0))
        return cls(limits=np.where(directions > 0, hi, lo), scales=scales, directions=directions, index=index)

    def score(self, X: np.ndarray) -> np.ndarray:
        excess = self.directions * (X[:, self.index] - self.limits) / self.scales
        return excess.max(axis=1)

    def to_dict(self) -> dict:
        return {"signals": [f for f, _ in FIXED_LIMIT_SIGNALS], "limits": self.limits.tolist(),
                "scales": self.scales.tolist(), "directions": self.directions.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> FixedLimits:
        return cls(limits=np.asarray(d["limits"]), scales=np.asarray(d["scales"]),
                   directions=np.asarray(d["directions"]),
                   index=np.array([FEATURE_NAMES.index(f) for f in d["signals"]]))


def vehicle_zscore(X: np.ndarray) -> np.ndarray:
    """Max |z| per window of ``ZSCORE_SIGNALS`` against the vehicle's own earlier windows (causal)."""
    idx = [FEATURE_NAMES.index(s) for s in ZSCORE_SIGNALS]
    v = X[:, idx].astype(np.float64)
    n = np.arange(v.shape[0], dtype=np.float64)[:, None]
    csum = np.cumsum(v, axis=0) - v  # sums of earlier windows
    csq = np.cumsum(v * v, axis=0) - v * v
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = csum / n
        var = np.maximum(csq / n - mean * mean, 0.0)
        z = np.abs(v - mean) / np.maximum(np.sqrt(var), 1e-3 * np.maximum(np.abs(mean), 1.0))
    z[: ZSCORE_WARMUP_WINDOWS] = 0.0
    return np.nan_to_num(z, nan=0.0).max(axis=1)


@dataclass
class AlertOutcome:
    threshold: float
    false_alarms: int
    healthy_days: float
    detected: int
    events: int
    leads_days: list[float]
    alerts: int

    @property
    def false_alarms_per_100(self) -> float:
        return 100.0 * self.false_alarms / self.healthy_days if self.healthy_days > 0 else float("nan")

    @property
    def event_recall(self) -> float:
        return self.detected / self.events if self.events else float("nan")


def alert_outcome(blocks: Iterable[VehicleBlock], scores: dict[str, np.ndarray], threshold: float,
                  policy_for: Callable[[float], AlertPolicy], stride_ms: int) -> AlertOutcome:
    """Run the alerting policy over each vehicle's scores; count event hits, lead times, false alarms."""
    policy = policy_for(threshold)
    false_alarms = detected = events = alerts = 0
    healthy_windows = 0
    leads: list[float] = []
    for b in blocks:
        s = scores[b.vehicle_id]
        state = AlertState()
        fired = np.array([state.step(t, x, policy) for t, x in zip(b.ends.tolist(), s.tolist(), strict=False)], dtype=bool)
        alerts += int(fired.sum())
        false_alarms += int((fired & b.healthy).sum())
        healthy_windows += int(b.healthy.sum())
        alert_ms = b.ends[fired]
        for onset, failure, _ in b.events:
            events += 1
            inside = alert_ms[(alert_ms >= onset) & (alert_ms <= failure)]
            if inside.size:
                detected += 1
                leads.append((failure - int(inside.min())) / MS_PER_DAY)
    return AlertOutcome(threshold, false_alarms, healthy_windows * stride_ms / MS_PER_DAY, detected, events,
                        leads, alerts)


def choose_threshold(blocks: list[VehicleBlock], scores: dict[str, np.ndarray], budget_per_100: float,
                     policy_for: Callable[[float], AlertPolicy], stride_ms: int,
                     candidates: int = 48) -> AlertOutcome:
    """Lowest threshold whose false alarms per 100 healthy vehicle-days stay within the budget.

    Candidates are quantiles of the validation scores of healthy windows (upper tail); the outcome at
    the chosen threshold is returned (on the validation blocks it was chosen on).
    """
    pool = np.concatenate([scores[b.vehicle_id][b.healthy] for b in blocks if b.healthy.any()] or [np.zeros(1)])
    levels = 1.0 - np.geomspace(0.5, 1e-5, candidates)
    grid = np.unique(np.concatenate([np.quantile(pool, levels), [pool.max() * 1.0001 + 1e-9]]))
    best: AlertOutcome | None = None
    for thr in grid[::-1]:  # from strict to lenient; stop once the budget is exceeded
        outcome = alert_outcome(blocks, scores, float(thr), policy_for, stride_ms)
        if outcome.false_alarms_per_100 > budget_per_100:
            break
        best = outcome
    return best if best is not None else alert_outcome(blocks, scores, float(grid[-1]), policy_for, stride_ms)
