"""Missing inputs in the twins' own baselines and explanations (issue 12 item 3): learned as nothing, named never."""
from __future__ import annotations

import numpy as np

from training.features import FEATURE_NAMES, RELATION_TERM_INDEX
from twins.baseline import EwmaBaseline, WelfordBaseline, baseline_from_state
from twins.scoring import TopSignals


def test_a_feature_sent_late_warms_up_on_its_own_values() -> None:
    for baseline in (EwmaBaseline(half_life=50, warmup=5), WelfordBaseline(warmup=5)):
        rng = np.random.default_rng(0)
        for k in range(40):
            late = np.nan if k < 30 else 100.0 + rng.normal()
            baseline.learn_one(np.array([1.0 + 0.1 * rng.normal(), late]))
        # 10 windows of the late feature: its mean is its own level (not pulled to 0 by the missing windows)
        assert abs(baseline.mean[1] - 100.0) < 1.5 and baseline.counts.tolist() == [40.0, 10.0]
        assert baseline.score_one(np.array([1.0, 100.0])) < 3.0
        assert baseline.score_one(np.array([1.0, 130.0])) > 10.0
        assert baseline.score_one(np.array([1.0, np.nan])) < 3.0  # missing now: no evidence either way
        meta, arrays = baseline.to_state()
        again = baseline_from_state(meta, arrays)
        assert np.array_equal(again.counts, baseline.counts) and np.array_equal(again.mean, baseline.mean)


def test_a_feature_still_warming_up_has_no_opinion() -> None:
    baseline = EwmaBaseline(half_life=50, warmup=5)
    for k in range(10):
        baseline.learn_one(np.array([1.0, np.nan if k < 8 else 5.0]))
    assert baseline.ready and baseline.zscores(np.array([1.0, 500.0]))[1] == 0.0


def test_relation_terms_are_left_out_of_the_own_baseline() -> None:
    baseline = EwmaBaseline(half_life=50, warmup=3)
    x = np.ones(len(FEATURE_NAMES))
    for _ in range(5):
        baseline.learn_one(x)
    moved = x.copy()
    moved[RELATION_TERM_INDEX] = 50.0  # the vehicle was driven harder: its operating terms moved
    assert baseline.score_one(moved) == 0.0
    other = x.copy()
    other[FEATURE_NAMES.index("cell_v_spread_mean")] = 50.0
    assert baseline.score_one(other) > 10.0


def test_a_signal_with_no_error_is_never_named() -> None:
    errors = np.array([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    top = TopSignals(errors, ("absent_a", "present_b", "absent_c", "present_d"))
    assert [name for name, _ in top.row(0)] == ["present_b", "present_d"]
    assert top.row(1) is None
