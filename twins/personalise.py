"""The per-vehicle part of the anomaly model: a per-signal error scale fitted on the twin's own normal windows.

The fleet LSTM autoencoder is shared; what differs between a hot-climate taxi and a temperate
commuter is *how large its normal reconstruction error is on each signal*. The head divides each
signal's error by a scale ``s_i >= 1`` fitted as the ratio of the vehicle's own high quantile of normal
error to the fleet's reference for that signal, so a vehicle whose healthy battery always looks a bit
unusual stops alarming on it, while signals where it looks like the fleet keep full sensitivity
(``s_i`` never drops below 1: personalisation never makes a twin *more* trigger-happy than the fleet).

Fitting is a pure function (run as a Ray task by the host); the result is versioned in the twin.

>>> errors = np.array([[2.0, 0.1], [3.0, 0.1], [2.5, 0.2]])
>>> head = fit_personal_head(errors, reference=np.array([1.0, 1.0]), version=1, quantile=1.0)
>>> head.scales.tolist(), head.version
([3.0, 1.0], 1)
>>> round(head.apply(np.array([3.0, 0.5])), 3)
1.5
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cap on how far a vehicle may stretch one signal's tolerance: a vehicle that is 10x off the fleet
# on a signal is not "different", it is broken, and must still alarm.
MAX_SCALE = 5.0


@dataclass(frozen=True)
class PersonalHead:
    """Per-signal error scales; version 0 is the identity (fleet behaviour)."""

    scales: np.ndarray
    version: int = 0

    @classmethod
    def identity(cls, n_signals: int) -> "PersonalHead":
        return cls(scales=np.ones(n_signals, dtype=np.float64), version=0)

    def apply(self, signal_errors: np.ndarray) -> float:
        """Personalised total error (same units as the fleet error it replaces)."""
        return float(np.sum(np.asarray(signal_errors, dtype=np.float64) / self.scales))


def fit_personal_head(errors: np.ndarray, reference: np.ndarray, version: int, quantile: float = 0.9,
                      max_scale: float = MAX_SCALE) -> PersonalHead:
    """Fit scales from a (windows x signals) matrix of the vehicle's own *normal* per-signal errors.

    ``reference`` is the fleet's per-signal error at the same quantile (what a typical vehicle shows).
    """
    errors = np.asarray(errors, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[1] != reference.shape[0]:
        raise ValueError(f"errors must be (windows, {reference.shape[0]}) (got {errors.shape})")
    if errors.shape[0] == 0:
        return PersonalHead(scales=np.ones(reference.shape[0]), version=version)
    own = np.quantile(errors, quantile, axis=0)
    scales = np.clip(own / np.maximum(reference, 1e-12), 1.0, max_scale)
    return PersonalHead(scales=scales, version=version)
