"""Label, censoring and split logic on hand-built event tables."""
from __future__ import annotations

import numpy as np
import pytest

from training.labels import (
    MS_PER_DAY,
    NO_MODE,
    VehicleEvents,
    assign_splits,
    horizon_labels,
    interval_overlap,
    temporal_cutoff_ms,
    vehicle_labels,
)

D = MS_PER_DAY
H = 3_600_000


def test_failure_exactly_at_t_plus_h_is_positive() -> None:
    assert horizon_labels(np.array([10 * D]), np.array([17 * D]), 7 * D, known_until_ms=100 * D).tolist() == [1]


def test_failure_one_ms_after_t_plus_h_is_negative() -> None:
    assert horizon_labels(np.array([10 * D]), np.array([17 * D + 1]), 7 * D, known_until_ms=100 * D).tolist() == [0]


def test_failure_exactly_at_t_is_not_in_the_window_ahead() -> None:
    # (t, t+h] excludes t itself; with no later failure the window is negative.
    assert horizon_labels(np.array([10 * D]), np.array([10 * D]), 7 * D, known_until_ms=100 * D).tolist() == [0]


def test_window_after_the_last_failure_looks_at_the_next_one_only() -> None:
    t = np.array([9 * D, 10 * D, 11 * D])
    labels = horizon_labels(t, np.array([10 * D, 30 * D]), 7 * D, known_until_ms=100 * D)
    assert labels.tolist() == [1, 0, 0]


def test_horizon_past_end_of_observation_without_failure_is_censored_never_negative() -> None:
    t = np.array([80 * D, 93 * D, 94 * D])
    labels = horizon_labels(t, np.zeros(0, dtype=np.int64), 7 * D, known_until_ms=100 * D)
    assert labels.tolist() == [0, 0, -1]


def test_failure_seen_before_end_of_observation_keeps_a_late_window_positive() -> None:
    labels = horizon_labels(np.array([95 * D]), np.array([99 * D]), 7 * D, known_until_ms=100 * D)
    assert labels.tolist() == [1]


def test_events_after_observation_end_do_not_count_when_not_known() -> None:
    # A failure recorded after the known horizon cannot make an unknown window positive... but if it is
    # in the table (synthetic ground truth), it is positive only within (t, t+h].
    t = np.array([95 * D])
    assert horizon_labels(t, np.array([101 * D]), 7 * D, known_until_ms=100 * D).tolist() == [1]
    assert horizon_labels(t, np.array([110 * D]), 7 * D, known_until_ms=100 * D).tolist() == [-1]
    assert horizon_labels(t, np.array([110 * D]), 7 * D, known_until_ms=130 * D).tolist() == [0]


def test_two_failures_close_together_give_the_first_as_the_coming_failure() -> None:
    events = VehicleEvents.build(failures=[(12 * D, 15 * D, "brake_wear", 2), (2 * D, 13 * D, "coolant_pump", 3)])
    t = np.array([10 * D, 13 * D, 14 * D, 16 * D])
    out = vehicle_labels(t, H, events, [7], known_until_ms=100 * D)
    assert out["y_7d"].tolist() == [1, 1, 1, 0]
    assert out["next_mode"].tolist() == ["coolant_pump", "brake_wear", "brake_wear", NO_MODE]
    assert out["next_severity"].tolist() == [3, 2, 2, 0]
    assert out["next_failure_ms"].tolist() == [13 * D, 15 * D, 15 * D, -1]


def test_degrading_windows_are_those_overlapping_onset_to_failure() -> None:
    events = VehicleEvents.build(failures=[(10 * H, 20 * H, "inverter_overheat", 1)])
    t = np.arange(0, 30) * H
    out = vehicle_labels(t, H, events, [7], known_until_ms=100 * D, post_failure_ms=3 * H)
    assert np.flatnonzero(out["degrading"]).tolist() == list(range(10, 21))
    assert np.flatnonzero(out["post_failure"]).tolist() == [21, 22, 23]
    assert out["event_onset_ms"][15] == 10 * H and out["event_failure_ms"][15] == 20 * H
    assert out["event_onset_ms"][5] == -1


def test_sensor_faults_are_anomalies_but_not_failures() -> None:
    events = VehicleEvents.build(faults=[(int(2.5 * H), int(3.2 * H))])
    t = np.arange(0, 6) * H
    out = vehicle_labels(t, H, events, [7, 30], known_until_ms=100 * D)
    assert out["sensor_fault"].tolist() == [False, False, False, True, True, False]
    assert out["anomaly"].tolist() == out["sensor_fault"].tolist()
    assert not out["degrading"].any() and (out["y_30d"] == 0).all()


def test_interval_touching_the_window_start_does_not_count() -> None:
    # Window (10, 20] does not include 10.
    assert interval_overlap(np.array([20]), 10, np.array([5]), np.array([10])).tolist() == [False]
    assert interval_overlap(np.array([20]), 10, np.array([20]), np.array([25])).tolist() == [True]


def test_splits_are_disjoint_complete_and_stratified() -> None:
    strata = {f"v{i:03d}": ("healthy" if i % 3 else f"mode{i % 4}") for i in range(120)}
    splits = assign_splits(strata, {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=1)
    assert set(splits) == set(strata)  # every vehicle in exactly one split (a dict maps each once)
    for stratum in set(strata.values()):
        members = [v for v in strata if strata[v] == stratum]
        shares = {k: sum(splits[v] == k for v in members) / len(members) for k in ("train", "validation", "test")}
        assert shares["train"] == pytest.approx(0.6, abs=0.12)
        assert shares["test"] == pytest.approx(0.2, abs=0.12)


def test_splits_depend_on_seed_but_are_reproducible() -> None:
    strata = {f"v{i}": "healthy" for i in range(30)}
    fr = {"train": 0.6, "validation": 0.2, "test": 0.2}
    assert assign_splits(strata, fr, 3) == assign_splits(strata, fr, 3)
    assert assign_splits(strata, fr, 3) != assign_splits(strata, fr, 4)


def test_small_fleet_still_gets_every_split() -> None:
    splits = assign_splits({f"v{i}": "healthy" for i in range(4)}, {"train": 0.6, "validation": 0.2, "test": 0.2}, 0)
    assert set(splits.values()) == {"train", "validation", "test"}


def test_temporal_cut_applies_only_when_both_sides_span_the_longest_horizon() -> None:
    assert temporal_cutoff_ms(0, 120 * D, [7, 14, 30], 0.5) == 60 * D
    assert temporal_cutoff_ms(0, 60 * D, [7, 14, 30], 0.5) is None
    assert temporal_cutoff_ms(0, 120 * D, [7], 0.0) is None
