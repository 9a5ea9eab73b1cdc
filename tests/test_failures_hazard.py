"""Failure hazards and ambient temperature: the Arrhenius factor per mode, piecewise-constant hazard
sampling, and the heatwave scenario through the generator's one failure sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.settings import AmbientWindow, SimulationConfig
from simulation.failures import (
    FAILURE_MODES,
    HAZARD_REFERENCE_AMBIENT_C,
    ambient_offset_schedule,
    failure_day_from_exposure,
    hazard_ambient_c,
    hazard_per_day,
    sample_vehicle_failures,
    temperature_hazard_factor,
)
from simulation.fleet import MS_PER_DAY, observation_window, sample_profile, sample_profiles
from simulation.whatif.scenarios import load_scenario

HEAT_DRIVEN = ("cell_imbalance", "internal_resistance", "coolant_pump", "inverter_overheat", "aux_battery")
INSENSITIVE = ("brake_wear", "tyre_slow_leak")
TEMPERATURES_ABOVE_REFERENCE = (8.0, 15.0, 20.0, 30.0, 42.0)


def _profile(climate: str, ambient_offset_c: float = 0.0, index: int = 0):
    """The first profile of the given climate (levers applied)."""
    cfg = SimulationConfig(fleet_mix={"climates": {"temperate": 0.0, "hot": 0.0, "cold": 0.0, climate: 1.0}},
                           levers={"ambient_offset_c": ambient_offset_c})
    return sample_profile(cfg, seed=1, index=index), cfg


@pytest.mark.parametrize("mode", HEAT_DRIVEN)
def test_heat_driven_modes_fail_more_often_the_hotter_it_is(mode: str) -> None:
    factors = [float(temperature_hazard_factor(mode, t)) for t in TEMPERATURES_ABOVE_REFERENCE]
    assert factors[0] == 1.0
    assert all(later > earlier for earlier, later in zip(factors, factors[1:], strict=False)), factors
    assert factors[-1] > 1.3  # +34 K is a marked acceleration, not a rounding error


@pytest.mark.parametrize("mode", INSENSITIVE)
def test_tyres_and_brakes_do_not_care_about_the_temperature(mode: str) -> None:
    assert temperature_hazard_factor(mode, np.array([-30.0, -10.0, 8.0, 30.0, 50.0])).tolist() == [1.0] * 5


def test_the_motor_bearing_barely_cares_and_the_12v_battery_also_suffers_in_the_cold() -> None:
    assert 1.0 < float(temperature_hazard_factor("motor_bearing", 42.0)) < 1.2
    aux = [float(temperature_hazard_factor("aux_battery", t)) for t in (-20.0, -10.0, 0.0, 8.0)]
    assert all(colder > warmer for colder, warmer in zip(aux, aux[1:], strict=False)), aux
    # Battery modes without a cold stress age more slowly in the cold (Arrhenius), never faster.
    assert float(temperature_hazard_factor("cell_imbalance", -10.0)) < 1.0


def test_the_climate_factors_the_fleet_was_calibrated_with_are_kept() -> None:
    # Before the hazard knew temperatures, hot vehicles had x1.5 for pump and inverter, cold ones x2 for
    # the 12 V battery, temperate ones x1: the continuous model passes through those points.
    assert float(temperature_hazard_factor("coolant_pump", 30.0)) == pytest.approx(1.5, abs=0.02)
    assert float(temperature_hazard_factor("inverter_overheat", 30.0)) == pytest.approx(1.5, abs=0.02)
    assert float(temperature_hazard_factor("aux_battery", -10.0)) == pytest.approx(2.0, abs=0.03)
    for mode in FAILURE_MODES:
        assert float(temperature_hazard_factor(mode, HAZARD_REFERENCE_AMBIENT_C)) == 1.0


def test_a_temperate_vehicles_hazard_is_the_configured_rate_times_its_usage() -> None:
    profile, cfg = _profile("temperate")
    assert hazard_ambient_c(profile) == HAZARD_REFERENCE_AMBIENT_C
    rate = cfg.failure_mode_rates["tyre_slow_leak"]
    assert hazard_per_day("tyre_slow_leak", profile, cfg) == pytest.approx(-math.log(1.0 - rate) / 30.0, rel=1e-12)


def test_the_hazard_reads_the_climate_baseline_and_the_ambient_lever_alike() -> None:
    hot, cfg = _profile("hot")
    cold, _ = _profile("cold")
    assert hazard_per_day("coolant_pump", hot, cfg) > hazard_per_day("coolant_pump", cold, cfg)
    lever, lever_cfg = _profile("temperate", ambient_offset_c=12.0)
    plain, plain_cfg = _profile("temperate")
    assert hazard_ambient_c(lever) == hazard_ambient_c(plain, 12.0) == 20.0
    for mode in FAILURE_MODES:
        assert hazard_per_day(mode, lever, lever_cfg) == pytest.approx(hazard_per_day(mode, plain, plain_cfg, 12.0))


def test_unknown_mode_and_bad_schedules_are_refused_by_name() -> None:
    with pytest.raises(KeyError, match="no_such_mode"):
        temperature_hazard_factor("no_such_mode", 20.0)
    with pytest.raises(ValueError, match="starts_day"):
        failure_day_from_exposure(1.0, [5.0], [1.0])
    with pytest.raises(ValueError, match=r"hazards_per_day\[1\]"):
        failure_day_from_exposure(1.0, [0.0, 5.0], [1.0, -2.0])


def test_the_ambient_schedule_splits_at_window_edges_and_adds_overlaps() -> None:
    windows = [AmbientWindow(start_day=10, duration_days=10, offset_c=12.0),
               AmbientWindow(start_day=15, duration_days=10, offset_c=-5.0)]
    assert ambient_offset_schedule(windows) == [(0.0, 0.0), (10.0, 12.0), (15.0, 7.0), (20.0, -5.0), (25.0, 0.0)]
    assert ambient_offset_schedule([]) == [(0.0, 0.0)]
    assert ambient_offset_schedule([AmbientWindow(start_day=0, duration_days=3, offset_c=4.0)]) == [(0.0, 4.0),
                                                                                                   (3.0, 0.0)]


def test_a_hazard_doubled_in_a_window_gives_the_expected_probability_of_failing_inside_it() -> None:
    base, begin, end = 0.02, 20.0, 34.0
    exposures = -np.log1p(-np.random.default_rng(1234).random(20_000))
    days = np.array([failure_day_from_exposure(x, [0.0, begin, end], [base, 2 * base, base]) for x in exposures])
    n = len(days)
    expected = {
        "before": 1.0 - math.exp(-base * begin),
        "inside": math.exp(-base * begin) * (1.0 - math.exp(-2 * base * (end - begin))),
        "survives_day_60": math.exp(-base * 60.0 - base * (end - begin)),  # the window's extra exposure
    }
    observed = {"before": np.mean(days < begin), "inside": np.mean((days >= begin) & (days < end)),
                "survives_day_60": np.mean(days > 60.0)}
    for key, p in expected.items():
        standard_error = math.sqrt(p * (1.0 - p) / n)
        assert abs(observed[key] - p) < 4.0 * standard_error, (key, observed[key], p, standard_error)
    # The doubled hazard shows: inside the window clearly more than at the constant hazard.
    constant = math.exp(-base * begin) * (1.0 - math.exp(-base * (end - begin)))
    assert observed["inside"] - constant > 8.0 * math.sqrt(constant * (1.0 - constant) / n)


@settings(max_examples=200, deadline=None)
@given(exposure=st.floats(0.0, 20.0),
       pieces=st.lists(st.tuples(st.floats(0.1, 50.0), st.floats(0.0, 2.0)), min_size=1, max_size=5),
       last_hazard=st.floats(0.01, 2.0))
def test_the_sampled_day_is_where_the_cumulative_hazard_reaches_the_exposure(exposure, pieces, last_hazard) -> None:
    starts = [0.0]
    for length, _ in pieces:
        starts.append(starts[-1] + length)
    hazards = [h for _, h in pieces] + [last_hazard]
    day = failure_day_from_exposure(exposure, starts, hazards)
    cumulative = sum(h * max(0.0, min(day, b) - a) for a, b, h in zip(starts, starts[1:] + [math.inf], hazards, strict=False))
    assert cumulative == pytest.approx(exposure, rel=1e-9, abs=1e-9)
    assert failure_day_from_exposure(exposure + 0.5, starts, hazards) > day  # more exposure: later failure


def test_zero_hazard_forever_never_fails() -> None:
    assert failure_day_from_exposure(1.0, [0.0, 10.0], [0.05, 0.0]) == math.inf


def test_a_window_moves_only_the_failures_due_after_it_began_and_by_exactly_the_extra_hazard() -> None:
    cfg = SimulationConfig(num_vehicles=400, duration_days_per_vehicle=90)
    window = AmbientWindow(start_day=30, duration_days=14, offset_c=12.0)
    start_ms, _ = observation_window(cfg)
    checked_after = 0
    for profile in sample_profiles(cfg, seed=2):
        base = {e.mode: e for e in sample_vehicle_failures(profile, cfg, 2)}
        hot = {e.mode: e for e in sample_vehicle_failures(profile, cfg, 2, [window])}
        for mode, event in base.items():
            base_day = (event.failure_ms - start_ms) / MS_PER_DAY
            if base_day < window.start_day:
                assert hot[mode] == event  # before the heatwave: untouched
                continue
            ratio = hazard_per_day(mode, profile, cfg, window.offset_c) / hazard_per_day(mode, profile, cfg)
            shift_days = (ratio - 1.0) * window.duration_days
            if mode in hot and base_day - shift_days > window.start_day + window.duration_days:
                assert (event.failure_ms - hot[mode].failure_ms) / MS_PER_DAY == pytest.approx(shift_days, abs=1e-6)
                assert hot[mode].failure_ms - hot[mode].onset_ms == event.failure_ms - event.onset_ms
                assert (hot[mode].severity, hot[mode].component) == (event.severity, event.component)
                checked_after += 1
    assert checked_after > 50


def test_the_heatwave_scenario_brings_more_failures_than_the_baseline_as_its_hazards_predict() -> None:
    config = load_scenario("heatwave", overrides=["simulation.num_vehicles=2000"]).config
    sim, windows = config.simulation, config.whatif.ambient_windows
    assert sim.duration_days_per_vehicle == 90 and windows[0].offset_c == 12.0
    horizon = sim.duration_days_per_vehicle
    schedule = ambient_offset_schedule(windows)
    starts = [s for s, _ in schedule]
    offsets = [o for _, o in schedule]

    def cumulative_hazard(hazard_at_offset: dict[float, float], offsets: list[float]) -> float:
        ends = starts[1:] + [math.inf]
        return sum(hazard_at_offset[off] * max(0.0, min(horizon, b) - a)
                   for a, b, off in zip(starts, ends, offsets, strict=False))

    counts = {"baseline": 0, "heatwave": 0}
    expected_extra = variance = 0.0
    unhealthy = 1.0 - sim.healthy_vehicle_share
    for profile in sample_profiles(sim, seed=11):
        counts["baseline"] += sum(e.observed for e in sample_vehicle_failures(profile, sim, 11))
        counts["heatwave"] += sum(e.observed for e in sample_vehicle_failures(profile, sim, 11, windows))
        for mode in FAILURE_MODES:
            hazard_at_offset = {off: hazard_per_day(mode, profile, sim, off) for off in {0.0, *offsets}}
            # Common random numbers: a failure joins (or leaves) the horizon when its exposure lies
            # between the two cumulative hazards.
            moved = unhealthy * (math.exp(-cumulative_hazard(hazard_at_offset, [0.0] * len(starts)))
                                 - math.exp(-cumulative_hazard(hazard_at_offset, offsets)))
            expected_extra += moved
            variance += abs(moved) * (1.0 - abs(moved))
    extra = counts["heatwave"] - counts["baseline"]
    assert expected_extra > 4.0 * math.sqrt(variance)  # the heatwave's effect is real at this fleet size
    assert extra > 0
    assert abs(extra - expected_extra) < 4.0 * math.sqrt(variance), (counts, expected_extra, math.sqrt(variance))

