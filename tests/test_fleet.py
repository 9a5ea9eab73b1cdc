"""Fleet profiles, failure sampling and the pure degradation/physics functions (no frames generated)."""
from __future__ import annotations

import numpy as np
import pytest

from configs.settings import SimulationConfig, load_config
from simulation import physics
from simulation.failures import (
    EFFECT_NEUTRAL,
    FAILURE_MODES,
    MODE_SPECS,
    SENSOR_FAULT_KINDS,
    SEVERITY_SCALE,
    degradation,
    mode_effects,
    progress,
)
from simulation.fleet import observation_window, sample_profile, sample_profiles
from simulation.generator import FIELD_RANGES, vehicle_events, vehicle_sensor_faults


def sim(*overrides: str) -> tuple[SimulationConfig, int]:
    config = load_config(overrides=list(overrides))
    return config.simulation, config.seed


def test_a_vehicles_profile_does_not_depend_on_fleet_size() -> None:
    small, seed = sim("simulation.num_vehicles=3")
    large, _ = sim("simulation.num_vehicles=50")
    assert sample_profiles(small, seed) == sample_profiles(large, seed)[:3]


def test_fleet_mix_yields_every_duty_cycle_climate_and_aggressive_drivers() -> None:
    cfg, seed = sim("simulation.num_vehicles=200")
    profiles = sample_profiles(cfg, seed)
    assert {p.duty_cycle for p in profiles} == {"commuter", "taxi", "delivery"}
    assert {p.climate for p in profiles} == {"temperate", "hot", "cold"}
    share = np.mean([p.aggressive for p in profiles])
    assert 0.1 < share < 0.3  # configured 0.2
    assert len({p.vehicle_id for p in profiles}) == 200


def test_pack_age_lever_ages_every_pack_by_the_offset_and_changes_nothing_drawn() -> None:
    base, seed = sim()
    aged, _ = sim("simulation.levers.pack_age_offset_years=5")
    for i in range(20):
        a, b = sample_profile(base, seed, i), sample_profile(aged, seed, i)
        assert b.pack_age_years == pytest.approx(a.pack_age_years + 5)
        assert (a.duty_cycle, a.climate, a.capacity_kwh) == (b.duty_cycle, b.climate, b.capacity_kwh)


def test_dc_share_lever_sets_each_vehicles_fast_charge_share() -> None:
    none, seed = sim("simulation.levers.dc_fast_charge_share=0")
    half, _ = sim("simulation.levers.dc_fast_charge_share=0.4")
    assert all(p.dc_fast_charge_share == 0 for p in sample_profiles(none, seed))
    assert np.mean([p.dc_fast_charge_share for p in sample_profiles(half, seed)]) > 0.3


def test_failure_events_are_consistent_with_the_window() -> None:
    cfg, seed = sim("simulation.num_vehicles=300", "simulation.duration_days_per_vehicle=20")
    start_ms, end_ms = observation_window(cfg)
    events = [e for p in sample_profiles(cfg, seed) for e in vehicle_events(p, cfg, seed)]
    assert len(events) > 30
    assert {e.mode for e in events} == set(FAILURE_MODES)
    for e in events:
        assert e.onset_ms < e.failure_ms
        assert e.failure_ms > start_ms
        assert e.failure_ms <= end_ms + cfg.latent_failure_days * 86_400_000
        assert e.observed == (e.failure_ms <= end_ms)
        assert e.severity in (1, 2, 3)
        low, high = MODE_SPECS[e.mode].lead_days
        assert low - 1e-6 <= e.lead_s / 86400 <= high + 1e-6
        assert (e.component != "") == (e.mode == "tyre_slow_leak")
    assert any(not e.observed for e in events) and any(e.observed for e in events)


def test_failure_rate_multiplier_moves_the_number_of_failures() -> None:
    def count(multiplier: float) -> int:
        cfg, seed = sim("simulation.num_vehicles=300", f"simulation.levers.failure_rate_multiplier={multiplier}")
        return sum(len(vehicle_events(p, cfg, seed)) for p in sample_profiles(cfg, seed))

    none, normal, triple = count(0), count(1), count(3)
    assert none == 0
    assert triple > 1.8 * normal > 0


def test_healthy_share_one_means_no_failures_and_healthy_vehicles_exist_by_default() -> None:
    cfg, seed = sim("simulation.num_vehicles=100", "simulation.healthy_vehicle_share=1")
    assert not any(vehicle_events(p, cfg, seed) for p in sample_profiles(cfg, seed))
    cfg, seed = sim("simulation.num_vehicles=100")
    healthy = sum(1 for p in sample_profiles(cfg, seed) if not vehicle_events(p, cfg, seed))
    assert healthy >= 40  # healthy_vehicle_share 0.4 plus those that draw no failure


def test_sensor_faults_are_valid_and_lie_in_the_window() -> None:
    cfg, seed = sim("simulation.num_vehicles=50", "simulation.sensor_fault_rate_per_day=0.3")
    start_ms, end_ms = observation_window(cfg)
    faults = [f for p in sample_profiles(cfg, seed) for f in vehicle_sensor_faults(p, cfg, seed)]
    assert {f.kind for f in faults} == set(SENSOR_FAULT_KINDS)
    for f in faults:
        assert start_ms <= f.start_ms < f.end_ms <= end_ms
        assert f.field in FIELD_RANGES


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_degradation_grows_from_zero_at_onset_to_the_severity_scale_at_failure(mode: str) -> None:
    lead = 10 * 86400.0
    elapsed = np.linspace(-lead, lead, 201)
    for severity in (1, 2, 3):
        level = degradation(mode, elapsed, severity, lead)
        assert np.all(level[elapsed <= 0] == 0)
        assert np.all(np.diff(level) >= 0)
        assert level[-1] == pytest.approx(SEVERITY_SCALE[severity])
    assert progress(lead / 2, lead) == pytest.approx(0.5)


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_mode_effects_are_neutral_when_healthy_and_move_when_degraded(mode: str) -> None:
    healthy = mode_effects(mode, 0.0, "rr")
    degraded = mode_effects(mode, 1.0, "rr")
    assert healthy and set(healthy) <= set(EFFECT_NEUTRAL)
    for name, value in healthy.items():
        assert float(value) == pytest.approx(EFFECT_NEUTRAL[name])
    assert any(abs(float(degraded[n]) - EFFECT_NEUTRAL[n]) > 0.05 for n in degraded)


def test_first_order_lag_matches_the_step_by_step_recursion() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(20, 5, 3000)
    tau = np.where(rng.random(3000) < 0.5, 40.0, 30_000.0)
    for t in (tau, 150.0, 1e-6):
        expected, y = np.empty_like(x), 7.0
        taus = np.broadcast_to(t, x.shape)
        for i, value in enumerate(x):
            a = np.exp(-10.0 / taus[i])
            y = a * y + (1 - a) * value
            expected[i] = y
        got, last = physics.first_order_lag(x, 10.0, t, 7.0)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
        assert last == pytest.approx(expected[-1])


def test_pack_voltage_sags_under_load_and_rises_when_charging() -> None:
    ocv = np.full(3, 96 * float(physics.cell_ocv(np.array([60.0]))[0]))
    current = physics.battery_current(np.array([50_000.0, 0.0, -50_000.0]), ocv, np.full(3, 0.1))
    voltage = ocv - current * 0.1
    assert current[0] > 0 > current[2]
    assert voltage[0] < ocv[0] < voltage[2]


def test_tyre_pressure_follows_absolute_temperature() -> None:
    cold, hot = physics.tyre_pressure_kpa(240.0, np.array([-10.0, 40.0]))
    assert cold < 240.0 < hot
    assert hot / cold == pytest.approx((40 + 273.15) / (-10 + 273.15))
