"""The per-vehicle part of the anomaly model: a per-signal error offset (a bias head) fitted on the twin's
own normal windows.

The fleet LSTM autoencoder is shared; what differs between a hot-climate taxi and the temperate commuters
the fleet model learned from is *how large its normal reconstruction error is on each signal*. The head
subtracts from each signal's error the vehicle's **excess** normal error on that signal: how far its own
typical normal error (its ``head_quantile``) lies above the fleet's typical normal error on that signal
(the trained model's ``signal_error_reference``). A vehicle that is normal the fleet's way gets offsets
near zero, so a failing part keeps its full error; a chronic, harmless excess stops alarming; and a bias,
unlike a scale, never shrinks the growth a failure produces. Offsets are >= 0, so a personalised score is
never above the fleet score: personalisation never makes a twin more trigger-happy than the fleet.

What keeps a failing part from becoming the new normal is *which* windows the twin learns from
(``twins.twin``: its first day, then only windows it neither flagged nor scored at the alert reference,
and that its own feature baseline finds usual), not a cap on the offset: a vehicle from a climate the fleet
model never saw has errors a hundred times the fleet's typical one, which any cap in those units would
leave alarming. Optional shrinkage toward the fleet (``prior_windows``) and a cap (``max_offset`` x the
reference) remain for fleets that want them.

Fitting is a pure function (run as a Ray task by the host, and inline for a twin's first head); the result
is versioned in the twin.

>>> errors = np.array([[2.0, 0.1], [3.0, 0.1], [2.5, 0.2]])
>>> head = fit_personal_head(errors, reference=np.array([1.0, 1.0]), version=1, quantile=0.5)
>>> head.offsets.tolist(), head.version
([1.5, 0.0], 1)
>>> round(head.apply(np.array([3.0, 0.5])), 3)
2.0
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
    def identity(cls, n_signals: int) -> PersonalHead:
        return cls(offsets=np.zeros(n_signals, dtype=np.float64), version=0)

    def apply(self, signal_errors: np.ndarray) -> float:
        """Personalised total error (same units as the fleet error it replaces, never above it)."""
        return float(np.sum(np.maximum(np.asarray(signal_errors, dtype=np.float64) - self.offsets, 0.0)))


def fit_personal_head(errors: np.ndarray, reference: np.ndarray, version: int, quantile: float = 0.75,
                      max_offset: float | None = None, prior_windows: float = 0.0) -> PersonalHead:
    """Fit offsets from a (windows x signals) matrix of the vehicle's own *normal* per-signal errors.

    offset = clip(n / (n + prior_windows) * (own quantile - reference), 0, max_offset * reference), the
    upper clip only with ``max_offset``. ``reference`` is the fleet's per-signal normal error.
    """
    errors = np.asarray(errors, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[1] != reference.shape[0]:
        raise ValueError(f"errors must be (windows, {reference.shape[0]}) (got {errors.shape})")
    if prior_windows < 0:
        raise ValueError(f"prior_windows must be >= 0 (got {prior_windows})")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1] (got {quantile})")
    n = errors.shape[0]
    if n == 0:
        return PersonalHead(offsets=np.zeros(reference.shape[0]), version=version)
    excess = np.quantile(errors, quantile, axis=0) - reference
    upper = None if max_offset is None else max_offset * reference
    return PersonalHead(offsets=np.clip(n / (n + prior_windows) * excess, 0.0, upper), version=version)
