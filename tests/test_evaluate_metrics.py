"""Each metric, the calibrators and the alerting decision against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from training.alerting import AlertPolicy, AlertState, alert_indices, flagged
from training.calibration import Calibrator, fit_calibrator, isotonic_fit
from training.metrics import (
    average_precision,
    brier_score,
    confusion_matrix,
    macro_f1,
    pointwise_precision_recall,
    recall_at_precision,
    reliability_bins,
    roc_auc,
)

Y = np.array([1, 0, 1, 1, 0, 0])
S = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])


def test_roc_auc_counts_correctly_ordered_pairs() -> None:
    # positives 0.9, 0.7, 0.3; negatives 0.8, 0.2, 0.1: ordered pairs 3 + 2 + 2 = 7 of 9.
    assert roc_auc(Y, S) == pytest.approx(7 / 9)


def test_roc_auc_gives_ties_half_credit_and_is_nan_with_one_class() -> None:
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_average_precision_by_hand() -> None:
    # ranks: 1 TP (P=1, R=1/3), 2 FP, 3 TP (P=2/3, R=2/3), 4 TP (P=3/4, R=1)
    assert average_precision(Y, S) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_recall_at_precision_by_hand() -> None:
    # precision >= 0.8 only at the first threshold (P=1, R=1/3); at 0.6: R=1 (P=0.75)
    assert recall_at_precision(Y, S, 0.8) == pytest.approx(1 / 3)
    assert recall_at_precision(Y, S, 0.6) == pytest.approx(1.0)
    assert recall_at_precision(np.array([0, 1]), np.array([0.9, 0.1]), 0.8) == 0.0


def test_brier_and_reliability_by_hand() -> None:
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.6, 0.4])
    assert brier_score(y, p) == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    bins = reliability_bins(y, p, bins=2)
    assert bins["mean_predicted"] == pytest.approx([0.25, 0.75])
    assert bins["observed"] == pytest.approx([0.0, 1.0])
    assert bins["count"] == [2, 2]


def test_confusion_matrix_and_macro_f1_by_hand() -> None:
    t, p = np.array([1, 1, 2, 2, 3, 3]), np.array([1, 2, 2, 2, 3, 1])
    m = confusion_matrix(t, p, [1, 2, 3])
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1: class1 tp1 fp1 fn1 -> 0.5; class2 tp2 fp1 fn0 -> 0.8; class3 tp1 fp0 fn1 -> 2/3
    assert macro_f1(t, p, [1, 2, 3]) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_pointwise_scores_do_not_point_adjust() -> None:
    truth = np.array([0, 1, 1, 1, 1, 0], bool)
    hit_once = np.array([0, 0, 1, 0, 0, 0], bool)
    precision, recall = pointwise_precision_recall(truth, hit_once)
    assert (precision, recall) == (1.0, 0.25)  # point-adjust would claim recall 1.0


# --- calibration -------------------------------------------------------------------------------------

def test_isotonic_fit_pools_adjacent_violators() -> None:
    thresholds, values = isotonic_fit(np.array([1, 2, 3, 4, 5]), np.array([0, 1, 0, 1, 1]))
    assert values.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]  # only violators (2, 3) are pooled
    assert thresholds.tolist() == [1, 2, 3, 4, 5]  # both ends of the pooled block are kept
    thresholds, values = isotonic_fit(np.array([1, 2, 3, 4, 5, 6]), np.array([0, 1, 1, 0, 1, 1]))
    assert thresholds.tolist() == [1, 2, 4, 5, 6] and values.tolist() == [0.0, 2 / 3, 2 / 3, 1.0, 1.0]


def test_calibrators_are_monotone_and_round_trip_through_json() -> None:
    rng = np.random.default_rng(0)
    score = rng.random(2000)
    y = (rng.random(2000) < score ** 2).astype(int)
    for min_pos in (1, 10**6):  # isotonic, then Platt
        cal = fit_calibrator(score, y, min_positives_isotonic=min_pos)
        grid = np.linspace(0, 1, 50)
        out = cal.apply(grid)
        assert np.all(np.diff(out) >= -1e-12)
        assert Calibrator.from_dict(cal.to_dict()).apply(grid).tolist() == out.tolist()
        # calibrated probabilities track the true frequency score**2 better than the raw score
        assert brier_score(y, cal.apply(score)) < brier_score(y, score)


# --- alerting -----------------------------------------------------------------------------------------

def test_alert_needs_consecutive_windows_and_clears_with_hysteresis() -> None:
    policy = AlertPolicy(threshold=1.0, consecutive=2, clear_ratio=0.5, cooldown_ms=0)
    scores = np.array([1.5, 0.2, 1.5, 1.5, 0.9, 0.6, 1.5, 0.4, 1.1, 1.2])
    # fires at 3; 0.9/0.6 do not clear (>= 0.5), 1.5 keeps it active; 0.4 clears; 1.1,1.2 fire at 9
    assert alert_indices(np.arange(10), scores, policy).tolist() == [3, 9]


def test_cooldown_suppresses_a_second_alert_too_soon() -> None:
    policy = AlertPolicy(threshold=1.0, consecutive=1, clear_ratio=1.0, cooldown_ms=5)
    t = np.arange(10)
    scores = np.array([2, 0, 2, 0, 0, 0, 2, 0, 0, 0])
    assert alert_indices(t, scores, policy).tolist() == [0, 6]


def test_nan_scores_never_alert_and_state_continues_across_calls() -> None:
    policy = AlertPolicy(threshold=1.0, consecutive=2, clear_ratio=0.5, cooldown_ms=0)
    state = AlertState()
    assert alert_indices(np.arange(2), np.array([np.nan, 2.0]), policy, state).tolist() == []
    assert alert_indices(np.arange(2, 4), np.array([2.0, 2.0]), policy, state).tolist() == [0]
    assert flagged(np.array([np.nan, 0.5, 1.0]), 1.0).tolist() == [False, False, True]


def test_policy_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        AlertPolicy(threshold=1.0, consecutive=0)
