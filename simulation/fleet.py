"""Vehicle profiles: how one vehicle of the synthetic fleet differs from the others.

A profile is drawn from its own random stream ``(seed, vehicle_index)``, so vehicle ``i`` is the same
whether the fleet has 3 or 3000 vehicles. Scenario levers are applied after every draw (common random
numbers): turning a lever changes the value it governs and nothing else.

>>> from configs.settings import SimulationConfig
>>> a = sample_profiles(SimulationConfig(num_vehicles=3), seed=1)
>>> b = sample_profiles(SimulationConfig(num_vehicles=5), seed=1)
>>> a == b[:3]
True
>>> a[0].vehicle_id
'EV000000'
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from configs.settings import SimulationConfig

# Random-stream tags: each concern of a vehicle draws from np.random.default_rng([seed, index, TAG]).
STREAM_PROFILE = 0
STREAM_FAILURES = 1
STREAM_SENSOR_FAULTS = 2
STREAM_WEATHER = 3
STREAM_CHUNK = 4
STREAM_NOISE = 5

# Climate model: daily-mean ambient (degC), diurnal half-amplitude (K), day-to-day weather sd (K),
# home position (deg). Coordinates are cosmetic; every schedule is in UTC.
CLIMATES: dict[str, dict[str, float]] = {
    "temperate": {"mean_c": 8.0, "diurnal_c": 4.0, "weather_sd_c": 3.0, "lat": 51.5, "lon": -0.1},
    "hot": {"mean_c": 30.0, "diurnal_c": 6.0, "weather_sd_c": 2.0, "lat": 5.6, "lon": -0.2},
    "cold": {"mean_c": -10.0, "diurnal_c": 3.0, "weather_sd_c": 4.0, "lat": 64.1, "lon": -21.9},
}

# Duty cycle: nominal daily distance (km) and trips per day, used for planning and by the what-if model.
DUTY_CYCLES: dict[str, dict[str, float]] = {
    "commuter": {"daily_km": 45.0, "trips_per_day": 2.4},
    "taxi": {"daily_km": 200.0, "trips_per_day": 16.0},
    "delivery": {"daily_km": 120.0, "trips_per_day": 14.0},
}
# How strongly a duty cycle uses DC fast charging relative to the fleet-wide lever.
DC_SHARE_BY_DUTY: dict[str, float] = {"commuter": 0.6, "taxi": 2.5, "delivery": 1.0}
AGGRESSIVE_THRESHOLD = 0.6  # aggressiveness above this = an aggressive driver


@dataclass(frozen=True)
class VehicleProfile:
    """Everything that makes one vehicle's normal differ from the fleet's (fixed for the run)."""

    index: int
    vehicle_id: str
    duty_cycle: str  # commuter | taxi | delivery
    climate: str  # temperate | hot | cold
    aggressiveness: float  # 0 calm .. 1 very aggressive: harder accelerations, higher speeds
    aggressive: bool
    pack_age_years: float  # includes the pack-age lever
    capacity_kwh: float  # nameplate capacity when new
    cells_series: int  # 96 (400 V class) or 192 (800 V class)
    resistance_mohm_new: float  # pack resistance at 25 degC when new
    mass_kg: float
    cda_m2: float  # drag area
    daily_km: float
    trips_per_day: float
    commute_km: float  # one-way commute (commuters), typical trip otherwise
    dc_fast_charge_share: float  # share of charging sessions that are DC fast charging (lever x duty)
    ac_power_kw: float  # home/depot AC charger
    dc_power_kw: float  # peak DC fast-charge power the pack accepts
    tyre_cold_kpa: float  # cold inflation pressure at 20 degC
    initial_odometer_km: float
    initial_brake_wear_pct: float
    aux_battery_health: float  # 12 V battery capacity share at the start (1 = new)
    insulation_kohm: float
    home_lat: float
    home_lon: float
    ambient_offset_c: float  # vehicle's micro-climate offset plus the ambient lever

    @property
    def nominal_voltage(self) -> float:
        return self.cells_series * 3.65


MS_PER_DAY = 86_400_000


def frame_interval_ms(sim_cfg: SimulationConfig) -> int:
    """Frame interval in whole milliseconds (timestamps are int64 ms)."""
    return max(1, int(round(sim_cfg.frame_interval_s * 1000)))


def observation_window(sim_cfg: SimulationConfig) -> tuple[int, int]:
    """(start_ms, end_ms) of the observed window; frames lie in [start_ms, end_ms).

    >>> observation_window(SimulationConfig(duration_days_per_vehicle=1, start_time="2026-01-05T00:00:00+00:00"))
    (1767571200000, 1767657600000)
    """
    start = datetime.fromisoformat(sim_cfg.start_time)
    if start.tzinfo is None:
        raise ValueError(f"simulation.start_time must carry a UTC offset (got {sim_cfg.start_time!r})")
    start_ms = int(round(start.timestamp() * 1000))
    return start_ms, start_ms + int(round(sim_cfg.duration_days_per_vehicle * MS_PER_DAY))


def frame_count(sim_cfg: SimulationConfig) -> int:
    """Frames per vehicle in the observed window."""
    start_ms, end_ms = observation_window(sim_cfg)
    step = frame_interval_ms(sim_cfg)
    return (end_ms - start_ms + step - 1) // step


def vehicle_id_for(index: int) -> str:
    """Fleet-unique id of the vehicle at ``index``.

    >>> vehicle_id_for(42)
    'EV000042'
    """
    return f"EV{index:06d}"


def _choose(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = sorted(shares)
    u = rng.random()
    cumulative = np.cumsum([shares[n] for n in names])
    return names[min(int(np.searchsorted(cumulative, u, side="right")), len(names) - 1)]


def sample_profile(sim_cfg: SimulationConfig, seed: int, index: int) -> VehicleProfile:
    """Draw vehicle ``index``'s profile; it depends only on (seed, index) and the scenario levers."""
    rng = np.random.default_rng([seed, index, STREAM_PROFILE])
    mix = sim_cfg.fleet_mix
    levers = sim_cfg.levers
    # Draw everything first, in a fixed order, then apply levers (common random numbers).
    duty = _choose(rng, dict(mix.duty_cycles))
    climate = _choose(rng, dict(mix.climates))
    aggressive_u = rng.random()
    aggressiveness_raw = rng.random()
    age_u = rng.random()
    high_voltage = rng.random() < 0.2
    size_u = rng.random()
    u_misc = rng.random(12)

    aggressive = aggressive_u < mix.aggressive_driver_share
    aggressiveness = 0.6 + 0.4 * aggressiveness_raw if aggressive else 0.5 * aggressiveness_raw
    is_van = duty == "delivery"
    capacity = (75.0 + 25.0 * size_u) if high_voltage else (55.0 + 25.0 * size_u)
    if is_van:
        capacity += 10.0
    cells = 192 if high_voltage else 96
    if sim_cfg.plant.cells_series is not None:  # a variant's pack: every vehicle has this many cells in series
        cells = sim_cfg.plant.cells_series
    # Pack resistance scales with series count; a 96s pack of ~60 kWh is ~60-90 mOhm when new.
    resistance = (55.0 + 30.0 * u_misc[0]) * cells / 96.0 * sim_cfg.plant.resistance_scale
    duty_spec = DUTY_CYCLES[duty]
    daily_km = duty_spec["daily_km"] * (0.7 + 0.6 * u_misc[1])
    commute_km = {"commuter": daily_km / 2.2, "taxi": 9.0, "delivery": 6.0}[duty] * (0.8 + 0.4 * u_misc[2])
    dc_share = float(np.clip(levers.dc_fast_charge_share * DC_SHARE_BY_DUTY[duty], 0.0, 1.0))
    climate_spec = CLIMATES[climate]
    pack_age = mix.pack_age_years_max * age_u + levers.pack_age_offset_years
    return VehicleProfile(
        index=index,
        vehicle_id=vehicle_id_for(index),
        duty_cycle=duty,
        climate=climate,
        aggressiveness=float(aggressiveness),
        aggressive=bool(aggressive),
        pack_age_years=float(pack_age),
        capacity_kwh=float(capacity),
        cells_series=cells,
        resistance_mohm_new=float(resistance),
        mass_kg=float((2600.0 + 600.0 * u_misc[3]) if is_van else (1700.0 + 600.0 * u_misc[3])),
        cda_m2=float((1.1 + 0.3 * u_misc[4]) if is_van else (0.55 + 0.2 * u_misc[4])),
        daily_km=float(daily_km),
        trips_per_day=float(duty_spec["trips_per_day"]),
        commute_km=float(commute_km),
        dc_fast_charge_share=dc_share,
        ac_power_kw=float(7.4 if u_misc[5] < 0.5 else 11.0),
        dc_power_kw=float((150.0 + 100.0 * u_misc[6]) if high_voltage else (50.0 + 70.0 * u_misc[6])),
        tyre_cold_kpa=float((260.0 if is_van else 230.0) + 20.0 * u_misc[7]),
        initial_odometer_km=float(pack_age * daily_km * 300.0 * (0.8 + 0.4 * u_misc[8]) + 50.0),
        initial_brake_wear_pct=float(5.0 + 45.0 * u_misc[9]),
        aux_battery_health=float(0.85 + 0.15 * u_misc[10]),
        insulation_kohm=float(3000.0 + 6000.0 * u_misc[11]),
        home_lat=float(climate_spec["lat"]),
        home_lon=float(climate_spec["lon"]),
        ambient_offset_c=float(levers.ambient_offset_c),
    )


def sample_profiles(sim_cfg: SimulationConfig, seed: int) -> list[VehicleProfile]:
    """Profiles of the whole fleet (``sim_cfg.num_vehicles`` of them), vehicle ``i`` from stream (seed, i)."""
    return [sample_profile(sim_cfg, seed, i) for i in range(sim_cfg.num_vehicles)]


def soh_at_start(profile: VehicleProfile) -> float:
    """State of health (%) from calendar and cycle ageing: ~2 %/year plus throughput wear.

    >>> from configs.settings import SimulationConfig
    >>> 70.0 <= soh_at_start(sample_profile(SimulationConfig(), 0, 0)) <= 100.0
    True
    """
    throughput_loss = profile.initial_odometer_km / 1000.0 * 0.04  # ~4 % per 100 000 km
    return float(np.clip(100.0 - 1.8 * profile.pack_age_years - throughput_loss, 70.0, 100.0))


def resistance_at_start(profile: VehicleProfile) -> float:
    """Pack resistance (mOhm, 25 degC) grown with age: ~7 % per year."""
    return profile.resistance_mohm_new * (1.0 + 0.07 * profile.pack_age_years)
