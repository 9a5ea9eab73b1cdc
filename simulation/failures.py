"""Failure modes, their degradation curves and the sampling of failures and sensor faults.

A failure is a degradation that starts at ``onset`` and grows until the part fails at ``failure``.
Everything a consumer needs to evaluate a failure without generating frames is a pure function here:

* ``progress(elapsed_s, lead_s)``: share of onset-to-failure time elapsed, 0..1;
* ``degradation(mode, elapsed_s, severity, lead_s)``: how far the part has degraded, 0 (healthy) up to
  ``SEVERITY_SCALE[severity]`` at failure, accelerating (``progress ** shape``);
* ``mode_effects(mode, level, component)``: what that degradation does to the physics (e.g. a pack
  resistance factor, a coolant-flow factor). Effects not named are neutral (``EFFECT_NEUTRAL``).

>>> float(degradation("coolant_pump", 0.0, 2, 86400.0))
0.0
>>> float(degradation("coolant_pump", 86400.0, 2, 86400.0))
1.0
>>> round(float(mode_effects("coolant_pump", 1.0)["coolant_flow_factor"]), 2)
0.3
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from configs.settings import AmbientWindow, SimulationConfig
from simulation.fleet import CLIMATES, MS_PER_DAY, STREAM_FAILURES, STREAM_SENSOR_FAULTS, VehicleProfile, observation_window
from simulation.physics import arrhenius_acceleration

MS_PER_S = 1000

SEVERITY_LEVELS: dict[int, str] = {1: "minor", 2: "major", 3: "critical"}
# How large the precursor deviation is at failure, by severity: severity is visible in the signals.
SEVERITY_SCALE: dict[int, float] = {1: 0.6, 2: 1.0, 3: 1.5}
# Days a failed vehicle spends parked in the workshop, by severity.
REPAIR_DAYS: dict[int, float] = {1: 1.0, 2: 2.0, 3: 3.0}
TYRE_POSITIONS: tuple[str, ...] = ("fl", "fr", "rl", "rr")


@dataclass(frozen=True)
class FailureMode:
    """A failure mode: where it lives, how long it develops, and which signals show it coming."""

    name: str
    subsystem: str
    lead_days: tuple[float, float]  # onset-to-failure time, uniform in this range
    shape: float  # degradation = progress ** shape: > 1 means slow start, fast end
    precursors: tuple[str, ...]  # telemetry fields in which the degradation shows
    signature: str  # what a reliability engineer sees, in words
    severity_probs: tuple[float, float, float] = (0.5, 0.35, 0.15)


MODE_SPECS: dict[str, FailureMode] = {m.name: m for m in (
    FailureMode("cell_imbalance", "battery", (10.0, 40.0), 1.5,
                ("cell_voltage_min", "cell_voltage_max", "soh"),
                "spread between highest and lowest cell voltage grows, most under load and at low SOC; "
                "usable capacity (SOH) drops slightly"),
    FailureMode("coolant_pump", "thermal", (7.0, 30.0), 2.0,
                ("coolant_flow", "pump_speed", "coolant_temp_out", "cell_temp_max"),
                "coolant flow falls while the controller raises pump speed; outlet-inlet coolant delta and "
                "cell temperatures rise under load and during DC charging"),
    FailureMode("internal_resistance", "battery", (14.0, 45.0), 1.3,
                ("internal_resistance", "pack_voltage", "cell_temp_avg"),
                "BMS resistance estimate climbs; pack voltage sags more under load and the pack runs warmer"),
    FailureMode("inverter_overheat", "drivetrain", (5.0, 25.0), 2.0,
                ("inverter_temp",),
                "inverter temperature rises faster and higher for the same electrical load (thermal interface "
                "degrading)"),
    FailureMode("motor_bearing", "drivetrain", (10.0, 40.0), 2.0,
                ("motor_temp", "motor_torque"),
                "friction: motor runs hotter at speed and needs more torque for the same cruise speed"),
    FailureMode("brake_wear", "chassis", (7.0, 30.0), 1.2,
                ("brake_pad_wear", "brake_temp"),
                "sticking caliper: pad wear accelerates towards 100 % and the disc stays warm while cruising"),
    FailureMode("tyre_slow_leak", "chassis", (3.0, 21.0), 1.0,
                ("tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr"),
                "one tyre loses pressure steadily against the other three at the same temperature"),
    FailureMode("aux_battery", "low_voltage", (7.0, 30.0), 1.5,
                ("aux_battery_voltage", "dcdc_current"),
                "12 V battery rests lower after parking (worst in the cold) and draws more DC-DC current "
                "to recharge after each start"),
    # Failures the default (training) fleet never has: their rates are 0 unless a variant config names them
    # in simulation.failure_mode_rates, so a model trained on the default fleet has never seen them.
    FailureMode("wheel_bearing", "chassis", (10.0, 35.0), 1.8,
                ("brake_temp", "pack_current", "motor_torque"),
                "a wheel bearing failing slowly (or a dragging hub): more energy per km at the same speed, "
                "more torque for the same cruise, and the hub warms the brake disc while driving"),
    FailureMode("hvac_compressor", "thermal", (7.0, 30.0), 1.5,
                ("hvac_power",),
                "HVAC compressor losing efficiency: the cabin climate needs more electrical power for the same "
                "ambient, so HVAC power and energy per km rise"),
)}
# The modes the default fleet is sampled with (the models are trained on these)...
FAILURE_MODES: tuple[str, ...] = tuple(m for m in MODE_SPECS if m not in ("wheel_bearing", "hvac_compressor"))
# ...and the ones it never has (off by default; a domain-shift variant enables them by rate).
UNSEEN_FAILURE_MODES: tuple[str, ...] = ("wheel_bearing", "hvac_compressor")
ALL_FAILURE_MODES: tuple[str, ...] = FAILURE_MODES + UNSEEN_FAILURE_MODES

# Neutral value of every effect a degradation can have on the physics.
EFFECT_NEUTRAL: dict[str, float] = {
    "cell_spread_mv": 0.0,  # extra cell-voltage spread (mV) at rest; doubles at 1C load
    "capacity_factor": 1.0,  # usable capacity multiplier
    "resistance_factor": 1.0,  # pack resistance multiplier
    "coolant_flow_factor": 1.0,  # coolant flow per pump rpm
    "pump_speed_factor": 1.0,  # controller raises pump speed to compensate
    "inverter_thermal_factor": 1.0,  # inverter thermal resistance multiplier
    "bearing_drag_nm": 0.0,  # extra drag torque at the motor while turning
    "brake_drag_kw": 0.0,  # friction power of a sticking caliper at 50 km/h (kW)
    "brake_wear_fraction": 0.0,  # share of the remaining pad consumed by accelerated wear
    "tyre_leak_kpa_fl": 0.0, "tyre_leak_kpa_fr": 0.0, "tyre_leak_kpa_rl": 0.0, "tyre_leak_kpa_rr": 0.0,
    "aux_capacity_factor": 1.0,  # 12 V battery capacity multiplier
    "wheel_drag_n": 0.0,  # extra drag force at the wheels (N) of a failing wheel bearing; its heat warms the brake
    "hvac_power_factor": 1.0,  # electrical HVAC power per unit of cabin heating/cooling (compressor efficiency)
}


def progress(elapsed_s: np.ndarray | float, lead_s: float) -> np.ndarray:
    """Share of the onset-to-failure time elapsed: 0 before onset, 1 at (and after) failure.

    >>> progress([-5.0, 50.0, 200.0], 100.0).tolist()
    [0.0, 0.5, 1.0]
    """
    return np.clip(np.asarray(elapsed_s, dtype=np.float64) / max(float(lead_s), 1e-9), 0.0, 1.0)


def degradation(mode: str, elapsed_s: np.ndarray | float, severity: int, lead_s: float) -> np.ndarray:
    """Degradation level of ``mode`` ``elapsed_s`` after onset: 0 healthy .. SEVERITY_SCALE[severity] at failure."""
    spec = MODE_SPECS[mode]
    return SEVERITY_SCALE[int(severity)] * progress(elapsed_s, lead_s) ** spec.shape


def mode_effects(mode: str, level: np.ndarray | float, component: str = "", severity: int = 2) -> dict[str, np.ndarray]:
    """Physical effects of ``mode`` at degradation ``level`` (only the effects this mode changes).

    ``severity`` is needed only where a state must be reached exactly at failure whatever the
    severity (brake pads worn through); elsewhere severity acts through ``level``.

    >>> sorted(mode_effects("tyre_slow_leak", 1.0, "rl"))
    ['tyre_leak_kpa_rl']
    """
    x = np.asarray(level, dtype=np.float64)
    if mode == "cell_imbalance":
        return {"cell_spread_mv": 110.0 * x, "capacity_factor": 1.0 - 0.05 * x}
    if mode == "coolant_pump":
        return {"coolant_flow_factor": np.clip(1.0 - 0.7 * x, 0.05, 1.0), "pump_speed_factor": 1.0 + 0.25 * x}
    if mode == "internal_resistance":
        return {"resistance_factor": 1.0 + 1.1 * x, "capacity_factor": 1.0 - 0.03 * x}
    if mode == "inverter_overheat":
        return {"inverter_thermal_factor": 1.0 + 1.6 * x}
    if mode == "motor_bearing":
        return {"bearing_drag_nm": 4.0 * x}
    if mode == "brake_wear":
        # Pads are worn through exactly at failure; severity shows in how hard the caliper drags.
        return {"brake_drag_kw": 1.0 * x, "brake_wear_fraction": np.clip(x / SEVERITY_SCALE[int(severity)], 0.0, 1.0)}
    if mode == "tyre_slow_leak":
        position = component if component in TYRE_POSITIONS else "fl"
        return {f"tyre_leak_kpa_{position}": 95.0 * x}
    if mode == "aux_battery":
        return {"aux_capacity_factor": np.clip(1.0 - 0.55 * x, 0.1, 1.0)}
    if mode == "wheel_bearing":
        return {"wheel_drag_n": 180.0 * x}
    if mode == "hvac_compressor":
        return {"hvac_power_factor": 1.0 + 1.2 * x}
    raise KeyError(f"unknown failure mode {mode!r}")


@dataclass(frozen=True)
class FailureEvent:
    """Ground truth of one failure of one vehicle (a row of events.parquet)."""

    vehicle_id: str
    mode: str
    onset_ms: int
    failure_ms: int
    severity: int  # 1 minor, 2 major, 3 critical
    observed: bool  # failure_ms <= end of the observed window
    component: str = ""  # tyre position for tyre_slow_leak

    @property
    def lead_s(self) -> float:
        return (self.failure_ms - self.onset_ms) / MS_PER_S

    @property
    def repair_end_ms(self) -> int:
        return self.failure_ms + int(REPAIR_DAYS[self.severity] * MS_PER_DAY)

    def degradation_at(self, ts_ms: np.ndarray | int) -> np.ndarray:
        """Degradation level at ``ts_ms``; zero again after failure (the part is replaced)."""
        ts = np.asarray(ts_ms, dtype=np.int64)
        level = degradation(self.mode, (ts - self.onset_ms) / MS_PER_S, self.severity, self.lead_s)
        return np.where(ts < self.failure_ms, level, 0.0)


# ---------------------------------------------------------------------------------------------------
# Hazard: how often each mode fails on a vehicle, and how the ambient temperature changes that.

# Ambient (daily mean, degC) at which the temperature factor is exactly 1: the temperate climate, so
# a temperate fleet keeps the failure rates the configuration was calibrated with.
HAZARD_REFERENCE_AMBIENT_C: float = CLIMATES["temperate"]["mean_c"]
# Ambient range the temperature factor is evaluated over (outside it, the nearest bound).
HAZARD_AMBIENT_RANGE_C: tuple[float, float] = (-40.0, 60.0)
# Apparent activation energy (J/mol) of each mode's ageing with respect to the daily-mean ambient.
# Apparent, because the part does not sit at ambient: thermal management, self-heating and thermal
# mass pass only part of an ambient change on to it, so these are far below the part's own activation
# energy (~50 kJ/mol for lithium-ion calendar ageing). Coolant pump and inverter are calibrated so that
# the hot climate's 30 degC mean gives the x1.5 those modes were calibrated with; tyres and brakes wear
# mechanically and do not care.
HEAT_ACTIVATION_J_PER_MOL: dict[str, float] = {
    "cell_imbalance": 10_000.0,  # SEI growth and self-discharge spread between cell groups
    "internal_resistance": 10_000.0,  # SEI growth, electrolyte decomposition
    "coolant_pump": 13_000.0,  # seal and bearing ageing; the pump also runs harder in heat
    "inverter_overheat": 13_000.0,  # thermal-interface pump-out and solder fatigue of the power module
    "motor_bearing": 3_000.0,  # grease ageing; the bearing's temperature is set by the motor's losses
    "brake_wear": 0.0,
    "tyre_slow_leak": 0.0,
    "aux_battery": 10_000.0,  # lead-acid grid corrosion
    "wheel_bearing": 3_000.0,  # grease ageing, as the motor bearing
    "hvac_compressor": 13_000.0,  # the compressor works hardest in heat
}
# Cold stress (per K below the reference ambient): a cold 12 V lead-acid battery has less capacity and
# more resistance for the same wake-up loads, so a weak one fails sooner. Calibrated so that, with its
# heat term, the cold climate's -10 degC mean gives the x2.0 the mode was calibrated with.
COLD_STRESS_PER_K: dict[str, float] = {"aux_battery": 0.055}


def temperature_hazard_factor(mode: str, ambient_c: np.ndarray | float) -> np.ndarray:
    """Hazard multiplier of ``mode`` at daily-mean ambient ``ambient_c``: 1 at the temperate reference.

    Arrhenius acceleration for heat-driven modes times an exponential cold stress where a mode has one.

    >>> float(temperature_hazard_factor("coolant_pump", HAZARD_REFERENCE_AMBIENT_C))
    1.0
    >>> round(float(temperature_hazard_factor("coolant_pump", 30.0)), 2)
    1.5
    >>> float(temperature_hazard_factor("tyre_slow_leak", 42.0))
    1.0
    """
    if mode not in MODE_SPECS:
        raise KeyError(f"unknown failure mode {mode!r}")
    low, high = HAZARD_AMBIENT_RANGE_C
    ambient = np.clip(np.asarray(ambient_c, dtype=np.float64), low, high)
    heat = arrhenius_acceleration(ambient, HEAT_ACTIVATION_J_PER_MOL[mode], HAZARD_REFERENCE_AMBIENT_C)
    cold = np.exp(COLD_STRESS_PER_K.get(mode, 0.0) * np.maximum(HAZARD_REFERENCE_AMBIENT_C - ambient, 0.0))
    return heat * cold


def usage_hazard_factor(mode: str, profile: VehicleProfile) -> float:
    """Why some vehicles fail more, temperature aside: old packs, fast charging, mileage, hard driving."""
    high_mileage = profile.duty_cycle in ("taxi", "delivery")
    factors = {
        "cell_imbalance": 1.0 + 0.12 * profile.pack_age_years,
        "internal_resistance": (1.0 + 0.2 * profile.pack_age_years) * (1.0 + profile.dc_fast_charge_share),
        "coolant_pump": 1.0,
        "inverter_overheat": 1.3 if profile.aggressive else 1.0,
        "motor_bearing": 1.5 if high_mileage else 1.0,
        "brake_wear": (1.8 if profile.aggressive else 1.0) * (1.5 if profile.duty_cycle == "delivery" else 1.0),
        "tyre_slow_leak": 1.0,
        "aux_battery": 1.0,
        "wheel_bearing": 1.5 if high_mileage else 1.0,
        "hvac_compressor": 1.0,
    }
    return factors[mode]


def hazard_ambient_c(profile: VehicleProfile, extra_offset_c: float = 0.0) -> float:
    """Daily-mean ambient the hazard sees: the climate's mean, the vehicle's offset (ambient lever) and
    any time-bounded offset (a heatwave). Day-to-day weather averages out and is left aside."""
    return CLIMATES[profile.climate]["mean_c"] + profile.ambient_offset_c + extra_offset_c


def hazard_per_day(mode: str, profile: VehicleProfile, sim_cfg: SimulationConfig, extra_offset_c: float = 0.0) -> float:
    """Constant hazard (failures per day) of ``mode`` on ``profile`` at an ambient offset of ``extra_offset_c``.

    The config rate is a probability within 30 days for a reference vehicle (temperate, new, calm);
    it becomes a hazard ``-ln(1 - rate) / 30`` scaled by the failure-rate lever, the vehicle's usage
    and the temperature factor.
    """
    rate = sim_cfg.failure_mode_rates.get(mode, 0.0)
    if rate <= 0.0:
        return 0.0
    hazard = -np.log1p(-min(rate, 0.999999)) / 30.0
    factor = usage_hazard_factor(mode, profile) * float(
        temperature_hazard_factor(mode, hazard_ambient_c(profile, extra_offset_c)))
    return float(hazard * (sim_cfg.levers.failure_rate_multiplier * factor))


def ambient_offset_schedule(windows: Sequence[AmbientWindow]) -> list[tuple[float, float]]:
    """Piecewise-constant extra ambient offset from time-bounded windows: ``[(start_day, offset_c), ...]``.

    The first piece starts at day 0; each applies until the next starts (the last, forever).
    Overlapping windows add up.

    >>> ambient_offset_schedule([AmbientWindow(start_day=30, duration_days=14, offset_c=12.0)])
    [(0.0, 0.0), (30.0, 12.0), (44.0, 0.0)]
    """
    edges = sorted({0.0} | {float(w.start_day) for w in windows} | {float(w.start_day + w.duration_days) for w in windows})
    return [(edge, float(sum(w.offset_c for w in windows if w.start_day <= edge < w.start_day + w.duration_days)))
            for edge in edges]


def failure_day_from_exposure(exposure: float, starts_day: Sequence[float], hazards_per_day: Sequence[float]) -> float:
    """Day at which the cumulative hazard reaches ``exposure`` (inf if it never does).

    ``hazards_per_day[i]`` applies from ``starts_day[i]`` (the first is 0) until the next start; the last
    forever. With ``exposure = -ln(1 - u)`` for a uniform ``u`` this samples the failure time of a
    piecewise-constant hazard exactly; with one piece it is ``exposure / hazard``.

    >>> failure_day_from_exposure(30.0, [0.0, 10.0, 20.0], [1.0, 2.0, 1.0])  # doubled hazard on days 10..20
    20.0
    >>> failure_day_from_exposure(8.0, [0.0, 10.0, 20.0], [1.0, 2.0, 1.0])  # before the window: untouched
    8.0
    """
    if len(starts_day) != len(hazards_per_day) or not starts_day or starts_day[0] != 0.0:
        raise ValueError(f"starts_day must begin at 0 and pair with hazards_per_day (got {list(starts_day)}, "
                         f"{list(hazards_per_day)})")
    for i, hazard in enumerate(hazards_per_day):
        if not hazard >= 0:
            raise ValueError(f"hazards_per_day[{i}] must be >= 0 (got {hazard})")
    remaining = float(exposure)
    for i, hazard in enumerate(hazards_per_day):
        end = starts_day[i + 1] if i + 1 < len(starts_day) else math.inf
        if hazard > 0 and remaining <= hazard * (end - starts_day[i]):
            return starts_day[i] + remaining / hazard
        if hazard > 0:
            remaining -= hazard * (end - starts_day[i])
    return math.inf


def sample_vehicle_failures(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int,
                            ambient_windows: Sequence[AmbientWindow] = ()) -> list[FailureEvent]:
    """Failures of one vehicle within the window plus ``latent_failure_days``; first failure per mode.

    Uniform draws are taken for every mode in a fixed order whatever the rates, so a lever (rate
    multiplier, ambient offset) moves failure times without reshuffling anything else. Each mode's
    failure time is drawn from its cumulative hazard: one uniform draw is an exposure ``-ln(1 - u)``,
    spent at the hazard of each piece of the ambient schedule (``ambient_windows``, days from the start
    of the window), so a heatwave raises the hazard only while it lasts.
    """
    start_ms, end_ms = observation_window(sim_cfg)
    rng = np.random.default_rng([seed, profile.index, STREAM_FAILURES])
    healthy = rng.random() < sim_cfg.healthy_vehicle_share
    # One row of draws per mode of ALL_FAILURE_MODES: the default modes come first, so their draws (and the
    # default fleet) are the same as before the unseen modes existed (a generator fills arrays in order).
    draws = rng.random((len(ALL_FAILURE_MODES), 4))
    horizon_days = (end_ms - start_ms) / MS_PER_DAY + sim_cfg.latent_failure_days
    schedule = ambient_offset_schedule(ambient_windows)
    starts_day = [start for start, _ in schedule]
    events: list[FailureEvent] = []
    for (u_time, u_lead, u_severity, u_component), mode in zip(draws, ALL_FAILURE_MODES, strict=True):
        if healthy:
            continue
        hazards = [hazard_per_day(mode, profile, sim_cfg, offset) for _, offset in schedule]
        if max(hazards) <= 0.0:
            continue
        failure_day = failure_day_from_exposure(-np.log1p(-u_time), starts_day, hazards)
        if failure_day >= horizon_days:
            continue
        spec = MODE_SPECS[mode]
        lead_days = spec.lead_days[0] + (spec.lead_days[1] - spec.lead_days[0]) * u_lead
        failure_ms = start_ms + int(failure_day * MS_PER_DAY)
        severity = 1 + int(np.searchsorted(np.cumsum(spec.severity_probs), u_severity, side="right"))
        component = TYRE_POSITIONS[int(u_component * 4) % 4] if mode == "tyre_slow_leak" else ""
        events.append(FailureEvent(
            vehicle_id=profile.vehicle_id, mode=mode, onset_ms=failure_ms - int(lead_days * MS_PER_DAY),
            failure_ms=failure_ms, severity=min(severity, 3), observed=failure_ms <= end_ms, component=component,
        ))
    return sorted(events, key=lambda e: (e.failure_ms, e.mode))


# ---------------------------------------------------------------------------------------------------
# Sensor faults: anomalies in the data, not failures of the vehicle.

SENSOR_FAULT_KINDS: tuple[str, ...] = ("stuck", "drift", "dropout", "spike")
# Duration range (hours) per kind.
SENSOR_FAULT_HOURS: dict[str, tuple[float, float]] = {
    "stuck": (0.3, 6.0), "drift": (24.0, 72.0), "dropout": (0.05, 2.0), "spike": (0.5, 6.0),
}
SPIKE_FRAME_SHARE = 0.03  # share of frames inside a spike interval that carry a spike
# Fields a sensor fault can hit: the analogue measurements (not position, odometer or enums).
FAULTABLE_FIELDS: tuple[str, ...] = (
    "pack_voltage", "pack_current", "soc", "cell_voltage_min", "cell_voltage_max", "cell_temp_min",
    "cell_temp_max", "cell_temp_avg", "internal_resistance", "insulation_resistance", "coolant_temp_in",
    "coolant_temp_out", "coolant_flow", "pump_speed", "motor_temp", "inverter_temp", "speed",
    "tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr", "brake_temp",
    "aux_battery_voltage", "dcdc_current", "ambient_temp",
)


@dataclass(frozen=True)
class SensorFault:
    """One sensor misbehaving for a while (a row of sensor_faults.parquet).

    magnitude: drift rate in field units per day (drift), spike amplitude in field units (spike), else 0.
    """

    vehicle_id: str
    kind: str
    field: str
    start_ms: int
    end_ms: int
    magnitude: float = 0.0


def sample_sensor_faults(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int,
                         field_ranges: Mapping[str, tuple[float, float]]) -> list[SensorFault]:
    """At most one new sensor fault per vehicle-day with probability ``sensor_fault_rate_per_day``."""
    start_ms, end_ms = observation_window(sim_cfg)
    rng = np.random.default_rng([seed, profile.index, STREAM_SENSOR_FAULTS])
    n_days = int(np.ceil((end_ms - start_ms) / MS_PER_DAY))
    draws = rng.random((n_days, 6))
    faults: list[SensorFault] = []
    for day, (u_occurs, u_start, u_kind, u_field, u_duration, u_magnitude) in enumerate(draws):
        if u_occurs >= sim_cfg.sensor_fault_rate_per_day:
            continue
        kind = SENSOR_FAULT_KINDS[int(u_kind * len(SENSOR_FAULT_KINDS)) % len(SENSOR_FAULT_KINDS)]
        field = FAULTABLE_FIELDS[int(u_field * len(FAULTABLE_FIELDS)) % len(FAULTABLE_FIELDS)]
        low_h, high_h = SENSOR_FAULT_HOURS[kind]
        fault_start = start_ms + day * MS_PER_DAY + int(u_start * MS_PER_DAY)
        if fault_start >= end_ms:
            continue
        fault_end = min(end_ms, fault_start + int((low_h + (high_h - low_h) * u_duration) * 3_600_000))
        lo, hi = field_ranges[field]
        span = hi - lo
        sign = 1.0 if u_magnitude >= 0.5 else -1.0
        strength = abs(u_magnitude - 0.5) * 2.0  # 0..1
        magnitude = {
            "drift": sign * (0.02 + 0.06 * strength) * span,  # per day
            "spike": sign * (0.25 + 0.5 * strength) * span,
        }.get(kind, 0.0)
        faults.append(SensorFault(profile.vehicle_id, kind, field, fault_start, fault_end, float(magnitude)))
    return faults
