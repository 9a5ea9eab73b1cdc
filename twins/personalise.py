"""The per-vehicle part of the anomaly model: a per-signal error offset (a bias head) fitted on the twin's
own normal windows.

The fleet LSTM autoencoder is shared; what differs between a hot-climate taxi and a temperate
commuter is *how large its normal reconstruction error is on each signal*. The head subtracts from each
signal's error the vehicle's own typical normal error on that signal (its ``head_quantile``, capped at
``max_offset`` x the fleet's reference), so a chronic, harmless offset stops alarming, while a
*growing* error (a failing part) keeps its full size above that offset: unlike a scale, a bias never
shrinks the growth a failure produces. Offsets are >= 0, so a personalised score is never above the
fleet score: personalisation never makes a twin more trigger-happy than the fleet.

Fitting is a pure function (run as a Ray task by the host); the result is versioned in the twin.

>>> errors = np.array([[2.0, 0.1], [3.0, 0.1], [2.5, 0.2]])
>>> head = fit_personal_head(errors, reference=np.array([1.0, 1.0]), version=1, quantile=0.5, max_offset=2.0)
>>> head.offsets.tolist(), head.version
([2.0, 0.1], 1)
>>> round(head.apply(np.array([3.0, 0.5])), 3)
1.4
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PersonalHead:
    """Per-signal error offsets; version 0 is the identity (fleet behaviour)."""

    offsets: np.ndarray
    version: int = 0

    @classmethod
    def identity(cls, n_signals: int) -> "PersonalHead":
        return cls(offsets=np.zeros(n_signals, dtype=np.float64), version=0)

    def apply(self, signal_errors: np.ndarray) -> float:
        """Personalised total error (same units as the fleet error it replaces, never above it)."""
        return float(np.sum(np.maximum(np.asarray(signal_errors, dtype=np.float64) - self.offsets, 0.0)))


def fit_personal_head(errors: np.ndarray, reference: np.ndarray, version: int, quantile: float = 0.5,
                      max_offset: float = 2.0) -> PersonalHead:
    """Fit offsets from a (windows x signals) matrix of the vehicle's own *normal* per-signal errors.

    ``reference`` is the fleet's per-signal error scale; an offset is capped at ``max_offset`` times it
    (a vehicle far off the fleet on a signal is not "different", it is broken, and must still alarm).
    """
    errors = np.asarray(errors, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[1] != reference.shape[0]:
        raise ValueError(f"errors must be (windows, {reference.shape[0]}) (got {errors.shape})")
    if errors.shape[0] == 0:
        return PersonalHead(offsets=np.zeros(reference.shape[0]), version=version)
    own = np.quantile(errors, quantile, axis=0)
    return PersonalHead(offsets=np.clip(own, 0.0, max_offset * reference), version=version)
