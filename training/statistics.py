"""Statistics of the evaluation: binomial and bootstrap intervals, the false-alarm frontier, and the
comparison of two twin variants at equal event recall. Pure (numpy, scipy); no I/O, no plots.

>>> [round(x, 3) for x in wilson_interval(7, 10)]
[0.397, 0.892]
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap

__all__ = ["wilson_interval", "bootstrap_distribution", "percentile_interval", "frontier_false_alarms",
           "equal_recall_comparison"]


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's; well behaved at 0 and 1 and for small n).

    No trials: the whole of [0, 1].

    >>> [round(x, 4) for x in wilson_interval(0, 20)]
    [0.0, 0.1611]
    """
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"wilson_interval: successes={successes} must lie in [0, trials={trials}]")
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def bootstrap_distribution(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], resamples: int,
                           seed: int = 0) -> np.ndarray:
    """(statistics x resamples) bootstrap distribution of a vector ``statistic(*samples)``.

    Each sample is resampled with replacement independently of the others (``scipy.stats.bootstrap``
    with ``paired=False``); NaN statistics (e.g. a recall no level reaches) are kept for the caller.
    """
    with warnings.catch_warnings():
        # scipy also computes its own interval, which warns on NaN or degenerate statistics; we use the
        # distribution only (percentile_interval decides how many finite values are enough).
        warnings.simplefilter("ignore")
        result = bootstrap(tuple(np.asarray(s) for s in samples), statistic, n_resamples=resamples,
                           paired=False, vectorized=False, method="percentile", rng=np.random.default_rng(seed))
    return np.atleast_2d(result.bootstrap_distribution)


def percentile_interval(values: np.ndarray, confidence: float = 0.95,
                        min_finite: int = 1) -> tuple[float, float] | None:
    """Percentile interval of the finite ``values``; None when fewer than ``min_finite`` are finite.

    >>> percentile_interval(np.array([1.0, 2.0, 3.0, np.nan]), confidence=0.5)
    (1.5, 2.5)
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < max(1, min_finite):
        return None
    tail = 100 * (1 - confidence) / 2
    return (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))


def frontier_false_alarms(recall: np.ndarray, false_alarms: np.ndarray, target: float) -> tuple[float, int]:
    """Lowest false-alarm rate over the levels whose recall is at least ``target``, and that level's index.

    The operating frontier of a detector: recall is not monotonic in the alert level (one alert per
    episode), so "the level giving recall r" is not unique; the best one an operator could pick is.
    Returns (nan, -1) when no level reaches the target.

    >>> frontier_false_alarms(np.array([0.9, 0.5, 0.6]), np.array([5.0, 1.0, 2.0]), 0.55)
    (2.0, 2)
    """
    ok = np.flatnonzero(np.asarray(recall) >= target - 1e-12)
    if not ok.size:
        return (float("nan"), -1)
    best = ok[np.argmin(np.asarray(false_alarms)[ok])]
    return (float(false_alarms[best]), int(best))


def equal_recall_comparison(counts: dict[str, np.ndarray], healthy: np.ndarray, events: np.ndarray,
                            days_per_vehicle: float, levels: np.ndarray, recall_targets: tuple[float, ...],
                            reference_level: float, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare variants' false alarms per 100 vehicle-days at matched event recall.

    ``counts[variant]``: (vehicles x levels); for a healthy vehicle its false alarms, for a failing
    one its detected events. ``events``: failures per vehicle (0 for healthy ones). The first variant
    is the reference ("fleet only"), the second the challenger. The headline recall is the reference
    variant's recall at ``reference_level``. CIs: Wilson for recall; for false-alarm rates and their
    paired difference, percentiles of a bootstrap (``scipy.stats.bootstrap``) that resamples healthy and
    failing vehicles (independently, with replacement) and recomputes both frontiers on the same resample.
    Verdict ``met``: at the headline recall the challenger's rate is lower with the difference's CI
    below 0, and at no target is it significantly higher.
    """
    variants = list(counts)
    if len(variants) != 2:
        raise ValueError(f"exactly two variants are compared (got {variants})")
    healthy = np.asarray(healthy, dtype=bool)
    events = np.asarray(events, dtype=np.int64)
    levels = np.asarray(levels, dtype=np.float64)
    n_healthy, total_events = int(healthy.sum()), int(events[~healthy].sum())
    if n_healthy == 0 or total_events == 0:
        raise ValueError(f"need healthy vehicles and failures (got {n_healthy} healthy, {total_events} failures)")
    vehicle_days = n_healthy * float(days_per_vehicle)
    ref_index = int(np.argmin(np.abs(levels - reference_level)))

    def curves(h_sum: np.ndarray, f_sum: np.ndarray, ev: np.ndarray, vd: float) -> tuple[np.ndarray, np.ndarray]:
        return f_sum / np.maximum(ev, 1), 100.0 * h_sum / vd

    counts = {name: np.asarray(counts[name], dtype=np.int64) for name in variants}
    per_variant = {}
    for name in variants:
        c = counts[name]
        recall, fa = curves(c[healthy].sum(0), c[~healthy].sum(0), np.asarray(total_events), vehicle_days)
        per_variant[name] = {"recall": recall, "fa": fa, "false_alarms": c[healthy].sum(0),
                             "detected": c[~healthy].sum(0)}
    reference, challenger = variants
    headline = float(per_variant[reference]["recall"][ref_index])
    targets = sorted({float(t) for t in recall_targets} | ({headline} if headline > 0 else set()))

    h_idx, f_idx = np.flatnonzero(healthy), np.flatnonzero(~healthy)

    def frontiers(hs: np.ndarray, fs: np.ndarray) -> np.ndarray:
        """Every variant's frontier rate at every target on one resample of healthy and failing vehicles."""
        ev = events[fs].sum()
        out = []
        for name in variants:
            recall, fa = curves(counts[name][hs].sum(0), counts[name][fs].sum(0), ev, vehicle_days)
            out += [frontier_false_alarms(recall, fa, t)[0] for t in targets]
        return np.asarray(out)

    distribution = bootstrap_distribution((h_idx, f_idx), frontiers, bootstrap, seed)
    boot = {name: distribution[k * len(targets):(k + 1) * len(targets)].T for k, name in enumerate(variants)}

    def interval(values: np.ndarray) -> list[float] | None:
        low_high = percentile_interval(values, min_finite=max(10, bootstrap // 2))
        return None if low_high is None else [round(low_high[0], 4), round(low_high[1], 4)]

    rows = []
    for k, target in enumerate(targets):
        row: dict[str, Any] = {"recall_at_least": round(target, 4), "headline": target == headline}
        for name in variants:
            v = per_variant[name]
            fa, index = frontier_false_alarms(v["recall"], v["fa"], target)
            row[name] = None if index < 0 else {
                "false_alarms_per_100_vd": round(fa, 4), "fa_ci": interval(boot[name][:, k]),
                "level": float(levels[index]), "recall": round(float(v["recall"][index]), 4),
                "recall_ci": [round(x, 4) for x in wilson_interval(int(v["detected"][index]), total_events)]}
        if row[reference] is not None and row[challenger] is not None:
            row["difference"] = round(row[challenger]["false_alarms_per_100_vd"]
                                      - row[reference]["false_alarms_per_100_vd"], 4)
            row["difference_ci"] = interval(boot[challenger][:, k] - boot[reference][:, k])
        rows.append(row)

    compared = [r for r in rows if r.get("difference_ci")]
    head_row = next((r for r in compared if r["headline"]), None)
    worse = [r["recall_at_least"] for r in compared if r["difference_ci"][0] > 0]
    better = [r["recall_at_least"] for r in compared if r["difference_ci"][1] < 0]
    met = head_row is not None and head_row["difference_ci"][1] < 0 and not worse
    return {
        "variants": variants, "healthy_vehicles": n_healthy, "healthy_vehicle_days": vehicle_days,
        "failing_vehicles": int((~healthy).sum()), "failures": total_events, "reference_level": reference_level,
        "headline_recall": round(headline, 4), "bootstrap": bootstrap,
        "levels": [float(x) for x in levels],
        "curves": {name: {"recall": [round(float(x), 4) for x in v["recall"]],
                          "false_alarms_per_100_vd": [round(float(x), 4) for x in v["fa"]]}
                   for name, v in per_variant.items()},
        "equal_recall": rows, "significantly_better_at": better, "significantly_worse_at": worse,
        "verdict": "met" if met else "not met",
    }
