"""Per-vehicle feature baselines, learned online: ``learn_one`` and ``score_one`` (river's naming).

``score_one(x)`` is higher for more anomalous ``x`` (a feature vector): the root-mean-square of the
``top_k`` largest z-scores against what the estimator has learned (top-k, so one wrong feature among
a hundred is not averaged away). Until ``warmup`` vectors are learned it scores 0 (no opinion).
State is explicit (``to_state``/``from_state``: plain floats and arrays) so twins serialise it without
pickle.

>>> b = EwmaBaseline(half_life=10, warmup=3)
>>> for v in ([1.0, 2.0], [1.1, 2.1], [0.9, 1.9], [1.0, 2.0]):
...     b.learn_one(np.array(v))
>>> b.score_one(np.array([1.0, 2.0])) < 1.0 < b.score_one(np.array([5.0, 9.0]))
True
"""
from __future__ import annotations

from typing import Any

import numpy as np

from training.features import FEATURE_NAMES, RELATION_TERM_INDEX

# Floor on the standard deviation (relative to |mean|, plus an absolute floor) so a constant
# feature does not turn every tiny change into an infinite z-score.
_REL_STD_FLOOR = 0.02
_ABS_STD_FLOOR = 1e-3


class _MomentBaseline:
    """Shared machinery: running mean/variance vectors and the RMS z-score."""

    def __init__(self, warmup: int = 24, top_k: int = 3) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (got {warmup})")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {top_k})")
        self.warmup = warmup
        self.top_k = top_k
        self.n = 0
        self.mean: np.ndarray | None = None
        self.var: np.ndarray | None = None
        # Windows learned per feature: a feature the vehicle sends only sometimes (or started sending
        # late) warms up on its own values, not on the vehicle's window count.
        self.counts: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        return self.n >= self.warmup

    def std(self) -> np.ndarray:
        assert self.mean is not None and self.var is not None
        floor = np.maximum(_REL_STD_FLOOR * np.abs(self.mean), _ABS_STD_FLOOR)
        return np.maximum(np.sqrt(self.var), floor)

    def zscores(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None or not self.ready:
            return np.zeros(len(x), dtype=np.float64)
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std()
        if self.counts is not None:
            z = np.where(self.counts >= self.warmup, z, 0.0)  # a feature still warming up has no opinion
        if z.size == len(FEATURE_NAMES):
            # A window feature vector: the plant relations' terms move with usage (their health signal is the
            # relation's residual, which the fleet models read), so a per-feature z of them is no evidence.
            z[RELATION_TERM_INDEX] = 0.0
        return np.nan_to_num(z, nan=0.0, posinf=1e6, neginf=-1e6)

    def score_one(self, x: np.ndarray) -> float:
        if not self.ready:
            return 0.0
        z2 = self.zscores(x) ** 2
        k = min(self.top_k, z2.size)
        top = np.partition(z2, z2.size - k)[z2.size - k:]
        return float(np.sqrt(np.mean(top)))

    def _first(self, x: np.ndarray) -> tuple[bool, np.ndarray]:
        """(whether this was the first window, the features present in ``x``); counts them. A missing
        feature (NaN) starts its moments at its first value."""
        present = np.isfinite(x)
        if self.mean is None:
            self.mean = x.copy()
            self.var = np.zeros_like(x)
            self.counts = present.astype(np.float64)
            self.n = 1
            return True, present
        if self.counts is None:  # a state saved before per-feature counts: every feature had every window
            self.counts = np.full(x.shape, float(self.n))
        starting = np.isnan(self.mean) & present
        self.mean[starting] = x[starting]
        self.var[starting] = 0.0
        self.counts += present
        return False, present

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"kind": type(self).__name__, "n": self.n, **self._params()}
        arrays = {} if self.mean is None else {"mean": self.mean, "var": self.var}
        if self.counts is not None:
            arrays["counts"] = self.counts
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n = int(meta["n"])
        self.mean = arrays["mean"].astype(np.float64) if "mean" in arrays else None
        self.var = arrays["var"].astype(np.float64) if "var" in arrays else None
        # (a state saved before per-feature counts gets them at its next learn_one)
        self.counts = arrays["counts"].astype(np.float64) if "counts" in arrays else None

    def _params(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "top_k": self.top_k}


def _missing_as_nan(x: np.ndarray) -> np.ndarray:
    """A window's features as float64 with +-inf as NaN: a feature the vehicle does not send is missing,
    learned as nothing (not as 0); its z-score is 0 until it has a value."""
    x = np.asarray(x, dtype=np.float64).copy()
    x[np.isinf(x)] = np.nan
    return x


class EwmaBaseline(_MomentBaseline):
    """Exponentially weighted mean and variance: follows slow, legitimate drift (ageing, seasons)."""

    def __init__(self, half_life: float = 168.0, warmup: int = 24, top_k: int = 3) -> None:
        super().__init__(warmup, top_k)
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0 (got {half_life})")
        self.half_life = half_life
        self._alpha = 1.0 - 0.5 ** (1.0 / half_life)

    def learn_one(self, x: np.ndarray) -> None:
        x = _missing_as_nan(x)
        first, present = self._first(x)
        if first:
            return
        self.n += 1
        # Plain average during warm-up (unbiased start), exponential forgetting afterwards.
        alpha = np.maximum(self._alpha, 1.0 / np.maximum(self.counts, 1.0))
        delta = np.where(present, x - self.mean, 0.0)  # a missing feature keeps its moments
        self.mean = self.mean + alpha * delta
        self.var = np.where(present, (1.0 - alpha) * (self.var + alpha * delta * delta), self.var)

    def _params(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "top_k": self.top_k, "half_life": self.half_life}


class WelfordBaseline(_MomentBaseline):
    """Cumulative mean and variance (Welford): never forgets; the reference for a stationary vehicle."""

    def learn_one(self, x: np.ndarray) -> None:
        x = _missing_as_nan(x)
        first, present = self._first(x)
        if first:
            return
        self.n += 1
        n = np.maximum(self.counts, 1.0)  # per feature: its windows learned, this one included
        delta = np.where(present, x - self.mean, 0.0)  # a missing feature keeps its moments
        self.mean = self.mean + delta / n
        # var holds the population variance; update from M2 = var * (n - 1).
        m2 = self.var * (n - 1) + np.where(present, delta * (x - self.mean), 0.0)
        self.var = np.where(present, m2 / n, self.var)


BASELINES: dict[str, type] = {"EwmaBaseline": EwmaBaseline, "WelfordBaseline": WelfordBaseline}


def baseline_from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> _MomentBaseline:
    kind = meta["kind"]
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline kind {kind!r}")
    params = {k: v for k, v in meta.items() if k not in ("kind", "n")}
    baseline = BASELINES[kind](**params)
    baseline.load_state(meta, arrays)
    return baseline
