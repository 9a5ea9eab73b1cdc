"""A vehicle's simulation resumed with other failures after a repair (``VehicleSimulation.replace_events``)."""
from __future__ import annotations

import numpy as np
import pytest

from configs.settings import load_config
from simulation.failures import FailureEvent
from simulation.fleet import MS_PER_DAY, observation_window, sample_profile
from simulation.generator import VehicleSimulation, simulate_vehicle

CFG = load_config(overrides=["simulation.duration_days_per_vehicle=5", "simulation.frame_interval_s=600"]).simulation
PROFILE = sample_profile(CFG, 11, 0)
START, _ = observation_window(CFG)
LEAK = FailureEvent(PROFILE.vehicle_id, "tyre_slow_leak", START, START + 10 * MS_PER_DAY, 2, False, "rl")


def _same(a, b) -> None:
    assert a.day_index == b.day_index
    np.testing.assert_array_equal(a.ts_ms, b.ts_ms)
    for name in a.columns:
        np.testing.assert_array_equal(a.columns[name], b.columns[name], err_msg=name)


def test_without_a_replacement_the_resumable_simulation_is_simulate_vehicle_bit_for_bit() -> None:
    plain = list(simulate_vehicle(PROFILE, CFG, 11, events=[LEAK]))
    resumable = list(VehicleSimulation(PROFILE, CFG, 11, events=[LEAK], keep_days=3))
    assert len(plain) == len(resumable) == 5
    for a, b in zip(plain, resumable, strict=False):
        _same(a, b)


def test_a_repair_removes_the_failure_from_that_day_on_and_keeps_the_history() -> None:
    leaking = list(simulate_vehicle(PROFILE, CFG, 11, events=[LEAK]))
    healthy = list(simulate_vehicle(PROFILE, CFG, 11, events=[]))
    sim = VehicleSimulation(PROFILE, CFG, 11, events=[LEAK], keep_days=3)
    seen = [next(sim) for _ in range(4)]  # days 0..3 simulated; the repair falls in day 2
    sim.replace_events([], from_day=2)
    resumed = seen[:2] + list(sim)
    assert [c.day_index for c in resumed] == [0, 1, 2, 3, 4]
    for a, b in zip(resumed[:2], leaking[:2], strict=False):
        _same(a, b)  # the days before the repair are what the leak made them
    rear_left = "tyre_pressure_rl"
    leak_before = np.nanmean(healthy[1].columns[rear_left] - leaking[1].columns[rear_left])
    assert leak_before > 0.5  # the leak was visible before the repair
    for a, b in zip(resumed[2:], healthy[2:], strict=False):
        # a leak only offsets the measured pressure, so after the repair the tyre is exactly the healthy one
        np.testing.assert_array_equal(a.columns[rear_left], b.columns[rear_left])
        _same(a, b)


def test_a_rewind_further_back_than_the_kept_days_is_refused() -> None:
    sim = VehicleSimulation(PROFILE, CFG, 11, events=[LEAK], keep_days=2)
    for _ in range(4):
        next(sim)
    with pytest.raises(ValueError, match="cannot rewind to day 1"):
        sim.replace_events([], from_day=1)
    sim.replace_events([], from_day=4)  # not simulated yet: no rewind needed
    assert next(sim).day_index == 4


@pytest.mark.parametrize("batch_hours", [6.0, 5.0, 30.0])
def test_the_twin_stream_goes_on_after_the_last_batch_taken_without_the_repaired_failure(
        batch_hours: float, monkeypatch: pytest.MonkeyPatch) -> None:
    import simulation.generator as generator
    from simulation.whatif.twin_detector import vehicle_frame_batches

    batch_s = batch_hours * 3600.0
    leaking = list(vehicle_frame_batches(PROFILE, CFG, 11, batch_s, events=[LEAK]))
    healthy = list(vehicle_frame_batches(PROFILE, CFG, 11, batch_s, events=[]))
    stream = vehicle_frame_batches(PROFILE, CFG, 11, batch_s, events=[LEAK])
    taken = [next(stream) for _ in range(len(leaking) // 2)]
    next(stream)  # read ahead (a batch the twin has not taken yet): dropped by the resume
    stream.resume([], taken[-1].last_ts)  # 60 h taken: the next batch starts in day 2
    simulated_days = []
    day_simulation = generator._simulate_day
    monkeypatch.setattr(generator, "_simulate_day", lambda *a, **k: simulated_days.append(a[2]) or day_simulation(*a, **k))
    rest = list(stream)
    assert simulated_days == [2, 3, 4]  # resumed at the repair's day, not re-run from day 0
    assert len(taken) + len(rest) == len(leaking) == len(healthy)  # nothing twice, nothing missing
    for mine, theirs in zip(taken, leaking, strict=False):
        np.testing.assert_array_equal(mine.values, theirs.values)
    for mine, theirs in zip(rest, healthy[len(taken):], strict=False):
        np.testing.assert_array_equal(mine.seq, theirs.seq)
        np.testing.assert_array_equal(mine.values, theirs.values)  # the tyre is healthy again
