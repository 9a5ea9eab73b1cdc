"""The per-vehicle head: excess over the fleet's per-signal normal error, optionally shrunk and capped, never negative."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from training.alerting import per_signal_errors, signal_error_reference
from twins.personalise import PersonalHead, fit_personal_head

REFERENCE = np.array([1.0, 0.5, 0.2])


def test_a_vehicle_normal_the_fleet_way_gets_no_offset_so_a_failure_keeps_its_full_error() -> None:
    rng = np.random.default_rng(0)
    own = REFERENCE * rng.uniform(0.5, 1.0, size=(200, 3))  # at or below the fleet's normal error
    head = fit_personal_head(own, REFERENCE, version=1)
    assert head.offsets.tolist() == [0.0, 0.0, 0.0]
    failing = np.array([5.0, 0.5, 0.2])
    assert head.apply(failing) == pytest.approx(failing.sum())


def test_a_chronic_excess_is_subtracted_shrunk_toward_the_fleet_while_few_windows_back_it() -> None:
    own = np.tile(REFERENCE + np.array([0.6, 0.0, 0.1]), (48, 1))  # 48 windows, excess 0.6 and 0.1
    head = fit_personal_head(own, REFERENCE, version=3, prior_windows=48)
    assert head.version == 3
    np.testing.assert_allclose(head.offsets, [0.3, 0.0, 0.05])  # weight 48 / (48 + 48)
    more = fit_personal_head(np.tile(own, (10, 1)), REFERENCE, version=4, prior_windows=48)
    np.testing.assert_allclose(more.offsets, np.array([0.6, 0.0, 0.1]) * 480 / 528)
    unshrunk = fit_personal_head(own, REFERENCE, version=5, prior_windows=0)
    np.testing.assert_allclose(unshrunk.offsets, [0.6, 0.0, 0.1])


def test_the_offset_is_capped_at_max_offset_times_the_reference() -> None:
    own = np.tile(REFERENCE * 10.0, (1000, 1))  # far off the fleet: broken, not different
    head = fit_personal_head(own, REFERENCE, version=1, max_offset=2.0, prior_windows=0)
    np.testing.assert_allclose(head.offsets, 2.0 * REFERENCE)


def test_by_default_the_whole_excess_at_the_upper_quartile_is_subtracted_uncapped() -> None:
    own = np.column_stack([np.linspace(100.0, 200.0, 101), np.full(101, 0.5), np.full(101, 0.1)])  # off the fleet
    head = fit_personal_head(own, REFERENCE, version=1)
    np.testing.assert_allclose(head.offsets, [175.0 - 1.0, 0.0, 0.0])  # 75th percentile - reference, no cap
    assert head.apply(np.array([175.0, 0.5, 0.2])) == pytest.approx(1.0 + 0.5 + 0.2)
    with pytest.raises(ValueError, match="quantile"):
        fit_personal_head(own, REFERENCE, version=1, quantile=0.0)


def test_no_windows_give_the_identity_and_bad_input_is_refused() -> None:
    head = fit_personal_head(np.zeros((0, 3)), REFERENCE, version=2)
    assert head.offsets.tolist() == [0.0, 0.0, 0.0] and head.version == 2
    with pytest.raises(ValueError, match="errors must be"):
        fit_personal_head(np.zeros((4, 2)), REFERENCE, version=1)
    with pytest.raises(ValueError, match="prior_windows"):
        fit_personal_head(np.zeros((4, 3)), REFERENCE, version=1, prior_windows=-1)
    with pytest.raises(ValueError, match="signal_errors"):
        signal_error_reference(np.zeros((0, 3)))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (20, 3), elements=st.floats(0, 10)), arrays(np.float64, 3, elements=st.floats(0, 10)),
       st.floats(0, 1), st.floats(0, 5))
def test_the_personal_error_is_never_above_the_fleet_error(own, errors, quantile, cap) -> None:
    head = fit_personal_head(own, REFERENCE, version=1, quantile=max(quantile, 1e-3), max_offset=cap)
    assert (head.offsets >= 0).all() and (head.offsets <= cap * REFERENCE + 1e-12).all()
    assert head.apply(errors) <= errors.sum() + 1e-9


def test_per_signal_errors_split_the_total_and_the_reference_is_their_median() -> None:
    errors = np.array([2.0, 4.0, 6.0])
    shares = np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
    split = per_signal_errors(errors, shares)
    np.testing.assert_allclose(split.sum(axis=1), errors)
    np.testing.assert_allclose(signal_error_reference(split), [1.0, 1.0])
    assert PersonalHead.identity(2).apply(split[1]) == pytest.approx(4.0)
