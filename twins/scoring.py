"""The fleet anomaly model seen from one vehicle: its input history, the personal head, the normal errors.

The fleet LSTM-AE (``training.artifacts.load_anomaly_model``) reads sequences of window feature vectors
(its ``signal_names`` are ``training.features.FEATURE_NAMES`` entries). A ``FleetScorer`` keeps the last
``sequence_length`` rows of one vehicle (so each closed window gets the sequence ending at it, front padded
with the oldest row while the history is shorter, as the offline sequences are), the vehicle's personal
head (``twins.personalise``) and the per-signal errors of the windows it learned as normal.
``score_windows`` scores the closed windows of many vehicles in ONE model call per distinct model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from configs.settings import TwinsConfig
from training.alerting import per_signal_errors
from training.features import FEATURE_NAMES
from twins.personalise import PersonalHead

_NORMAL_ERRORS_KEPT = 512


class AnomalyModel(Protocol):
    """What the twin needs from the trained LSTM-AE (``training.artifacts.load_anomaly_model``)."""

    threshold: float
    signal_names: tuple[str, ...]
    sequence_length: int
    signal_error_reference: np.ndarray | None

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def model_feature_index(model: AnomalyModel) -> np.ndarray:
    """Positions of the model's signals among ``FEATURE_NAMES``; a clear error for a signal that is not one."""
    unknown = [name for name in model.signal_names if name not in FEATURE_NAMES]
    if unknown:
        raise ValueError(f"anomaly model signal_names {unknown} are not window features "
                         f"(training.features.FEATURE_NAMES): the twin feeds the model window feature sequences")
    return np.array([FEATURE_NAMES.index(name) for name in model.signal_names], dtype=np.int64)


class FleetScorer:
    """One vehicle's view of the fleet model: sequence history, personal head, normal errors to learn from."""

    def __init__(self, model: AnomalyModel, cfg: TwinsConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.feature_index = model_feature_index(model)
        n_signals = len(model.signal_names)
        reference = getattr(model, "signal_error_reference", None)
        if cfg.personalise and reference is None:
            raise ValueError("anomaly model signal_error_reference is None (a model trained before the fleet's "
                             "per-signal normal error was recorded): retrain it, or set twins.personalise=false")
        self.head = PersonalHead.identity(n_signals)
        self.normal_errors = np.zeros((0, n_signals), dtype=np.float64)
        self._new_normal_errors: list[np.ndarray] = []  # rows for normal_errors, added at the step's last window
        self.windows_since_tune = 0
        self.history = np.zeros((0, n_signals), dtype=np.float32)  # the last sequence_length model rows

    @property
    def alert_error(self) -> float:
        """Reconstruction error at which the fleet model alerts (threshold x validated alert level)."""
        return float(self.model.threshold) * float(getattr(self.model, "alert_threshold", 1.0))

    def sequences(self, features: np.ndarray) -> np.ndarray:
        """(windows, L, signals) model input ending at each of these windows (rows of ``features``, in time
        order); advances the history."""
        rows = features[:, self.feature_index]
        length = int(self.model.sequence_length)
        history = np.concatenate([self.history, rows])
        ends = self.history.shape[0] + np.arange(1, rows.shape[0] + 1)
        index = np.maximum(ends[:, None] - length + np.arange(length), 0)
        self.history = history[-length:].copy()
        return history[index]

    def personal_ratio(self, signal_errors: np.ndarray, fleet_ratio: float) -> float:
        """The window's score through the personal head (the fleet ratio while there is no head)."""
        if self.head.version == 0:
            return fleet_ratio
        return self.head.apply(signal_errors) / self.alert_error

    def learn_normal(self, signal_errors: np.ndarray) -> None:
        """A window's per-signal errors join the vehicle's normal (in ``normal_errors`` at ``flush_normal``)."""
        self._new_normal_errors.append(signal_errors[None, :])
        self.windows_since_tune += 1

    def flush_normal(self) -> None:
        if self._new_normal_errors:
            self.normal_errors = np.vstack([self.normal_errors, *self._new_normal_errors])[-_NORMAL_ERRORS_KEPT:]
            self._new_normal_errors = []

    def fine_tune_due(self) -> bool:
        """Every ``fine_tune_every_windows`` windows learned as normal, when personalising."""
        return self.cfg.personalise and self.windows_since_tune >= self.cfg.fine_tune_every_windows

    def fine_tune_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(own normal per-signal errors, fleet per-signal reference) for ``fit_personal_head``."""
        reference = self.model.signal_error_reference
        if reference is None:
            raise ValueError("anomaly model signal_error_reference is None: no personal head without it")
        return self.normal_errors.copy(), np.asarray(reference, dtype=np.float64)

    def install_head(self, head: PersonalHead) -> None:
        if head.version <= self.head.version or head.offsets.shape != self.head.offsets.shape:
            return  # stale or foreign result: keep the newer head
        self.head = head
        self.windows_since_tune = 0

    # ------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"head_version": self.head.version, "windows_since_tune": self.windows_since_tune}
        return meta, {"head_offsets": self.head.offsets, "normal_errors": self.normal_errors,
                      "history": self.history}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], model: AnomalyModel,
                   cfg: TwinsConfig) -> FleetScorer:
        scorer = cls(model, cfg)
        if arrays["head_offsets"].shape != scorer.head.offsets.shape:
            raise ValueError(f"checkpoint head has {arrays['head_offsets'].size} signals, the anomaly model "
                             f"{scorer.head.offsets.size}: a checkpoint of another model")
        scorer.head = PersonalHead(offsets=arrays["head_offsets"].copy(), version=int(meta["head_version"]))
        scorer.windows_since_tune = int(meta["windows_since_tune"])
        scorer.normal_errors = arrays["normal_errors"].copy()  # float64 once a window is learned
        scorer.history = arrays["history"].copy()
        return scorer


@dataclass
class ScoredWindows:
    """One vehicle's closed windows as the fleet model scored them (rows in time order)."""

    fleet_ratios: list[float]
    signal_errors: np.ndarray  # windows x signals
    top: TopSignals
    first_row: int  # the vehicle's first row in ``top``


def score_windows(scorers: Sequence[FleetScorer], features: Sequence[np.ndarray]) -> list[ScoredWindows]:
    """Each scorer's windows (rows of its ``features``) scored, ONE model call per distinct model object."""
    sequences = [scorer.sequences(rows) for scorer, rows in zip(scorers, features, strict=False)]
    results: list[ScoredWindows | None] = [None] * len(scorers)
    top_signals: TopSignals | None = None
    for model, members in _group_by_model([scorer.model for scorer in scorers]):
        batch = np.concatenate([sequences[j] for j in members]).astype(np.float32)
        errors, shares = model.score(batch)
        errors = np.asarray(errors, dtype=np.float64).reshape(-1)
        shares = np.asarray(shares, dtype=np.float64).reshape(errors.size, -1)
        signal_errors = per_signal_errors(errors, shares)
        top = TopSignals(signal_errors, tuple(model.signal_names))
        top_signals = top if top_signals is None else top_signals.extended(top)
        offset = 0
        for j in members:
            n = sequences[j].shape[0]
            results[j] = ScoredWindows((errors[offset:offset + n] / scorers[j].alert_error).tolist(),
                                       signal_errors[offset:offset + n], top_signals,
                                       top_signals.size - top.size + offset)
            offset += n
    return [r for r in results if r is not None]


def _group_by_model(models: list[Any]) -> list[tuple[Any, list[int]]]:
    """Positions per distinct model object (normally one: the fleet model), first appearance order."""
    groups: dict[int, tuple[Any, list[int]]] = {}
    for j, model in enumerate(models):
        groups.setdefault(id(model), (model, []))[1].append(j)
    return list(groups.values())


class TopSignals:
    """Per row of a batch of per-signal errors: the (up to) three signals with the largest share of the error.

    ``row(r)`` builds row ``r``'s ``[[name, share], ...]`` (None when there is no error: the twin then
    names the features furthest from its own baseline) only when asked: most windows never name theirs.
    """

    def __init__(self, signal_errors: np.ndarray, names: tuple[str, ...]) -> None:
        totals = signal_errors.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = signal_errors / totals[:, None]
        top = np.argsort(-shares, axis=1)[:, :3]
        self.parts = [(0, names, top, np.take_along_axis(shares, top, axis=1), totals)]
        self.size = int(totals.size)

    def extended(self, other: TopSignals) -> TopSignals:
        """This batch's rows followed by ``other``'s (another model's)."""
        self.parts += [(self.size + start, *rest) for start, *rest in other.parts]
        self.size += other.size
        return self

    def row(self, r: int) -> list[list[Any]] | None:
        for start, names, top, top_shares, totals in reversed(self.parts):
            if r >= start:
                r -= start
                if not totals[r] > 0:
                    return None
                # A signal the vehicle does not send has no error (masked): never named as a cause.
                return [[names[c], round(v, 4)] for c, v in zip(top[r].tolist(), top_shares[r].tolist(), strict=False)
                        if v > 0]
        raise IndexError(r)
