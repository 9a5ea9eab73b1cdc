"""Vehicle physics as pure, vectorised functions of arrays over time.

Nothing here draws random numbers or knows about frames or files: the generator composes these
functions, and the what-if engine can call them directly. Units are SI unless a name says otherwise.

>>> round(float(cell_ocv(np.array([50.0]))[0]), 3)
3.68
>>> y, last = first_order_lag(np.ones(4), dt_s=10.0, tau_s=1e-9, y0=0.0)
>>> y.tolist()
[1.0, 1.0, 1.0, 1.0]
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

GRAVITY = 9.81
AIR_DENSITY = 1.2  # kg/m3
ROLLING_RESISTANCE = 0.011
WHEEL_RADIUS_M = 0.33
GEAR_RATIO = 9.0
DRIVE_EFFICIENCY = 0.90  # battery -> wheel
REGEN_EFFICIENCY = 0.70  # wheel -> battery
REGEN_LIMIT_W = 60_000.0
FRICTION_BLEND_SHARE = 0.25  # share of braking done by the friction brakes even below the regen limit
AUX_LOAD_W = 300.0  # 12 V loads fed by the DC-DC converter while awake
PARKED_DRAIN_W = 20.0  # telematics and BMS while asleep
PACK_HEAT_CAPACITY_J_PER_K = 3.0e5  # ~400 kg pack
PACK_PASSIVE_CONDUCTANCE_W_PER_K = 12.0
COOLANT_CONDUCTANCE_W_PER_K_PER_LPM = 45.0
COOLANT_HEAT_CAPACITY_J_PER_L_K = 3600.0
FLOW_LPM_PER_KRPM = 3.2
CHARGER_EFFICIENCY = 0.92
KELVIN = 273.15

# Cell open-circuit voltage against SOC (NMC-like).
_OCV_SOC = np.array([0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0])
_OCV_V = np.array([3.00, 3.30, 3.45, 3.55, 3.60, 3.64, 3.68, 3.75, 3.84, 3.94, 4.06, 4.18])


# LFP: a flat plateau around 3.3 V with steep knees at both ends (little voltage signal of SOC in between).
_OCV_V_LFP = np.array([2.50, 3.00, 3.18, 3.24, 3.27, 3.29, 3.30, 3.31, 3.32, 3.33, 3.35, 3.55])
OCV_CURVES: dict[str, np.ndarray] = {"nmc": _OCV_V, "lfp": _OCV_V_LFP}


def cell_ocv(soc_pct: np.ndarray, chemistry: str = "nmc") -> np.ndarray:
    """Open-circuit voltage (V) of one cell at the given state of charge (%), by cell chemistry.

    >>> round(float(cell_ocv(np.array([50.0]), "lfp")[0]), 2)
    3.3
    """
    curve = OCV_CURVES.get(chemistry)
    if curve is None:
        raise ValueError(f"chemistry must be one of {sorted(OCV_CURVES)} (got {chemistry!r})")
    return np.interp(soc_pct, _OCV_SOC, curve)


def resistance_temperature_factor(temp_c: np.ndarray) -> np.ndarray:
    """Cell resistance against its 25 degC value: roughly doubles every 20 K colder (Arrhenius-like).

    >>> float(resistance_temperature_factor(np.array([25.0]))[0])
    1.0
    """
    return np.exp(0.035 * (25.0 - np.clip(temp_c, -40.0, 80.0)))


GAS_CONSTANT_J_PER_MOL_K = 8.314


def arrhenius_acceleration(temp_c: np.ndarray | float, activation_energy_j_per_mol: float,
                           reference_c: float) -> np.ndarray:
    """How much faster a thermally activated process runs at ``temp_c`` than at ``reference_c``.

    ``exp(Ea / R * (1 / T_ref - 1 / T))`` with absolute temperatures; exactly 1 at the reference and
    for ``Ea = 0`` (a process that does not care about temperature).

    >>> float(arrhenius_acceleration(25.0, 50_000.0, 25.0))
    1.0
    >>> round(float(arrhenius_acceleration(35.0, 50_000.0, 25.0)), 2)  # the "doubles every 10 K" rule
    1.92
    """
    if activation_energy_j_per_mol < 0:
        raise ValueError(f"activation_energy_j_per_mol must be >= 0 (got {activation_energy_j_per_mol})")
    temp_k = np.asarray(temp_c, dtype=np.float64) + KELVIN
    return np.exp(activation_energy_j_per_mol / GAS_CONSTANT_J_PER_MOL_K * (1.0 / (reference_c + KELVIN) - 1.0 / temp_k))


def first_order_lag(x: np.ndarray, dt_s: float, tau_s: np.ndarray | float, y0: float) -> tuple[np.ndarray, float]:
    """Exact discrete first-order lag ``dy/dt = (x - y) / tau`` (zero-order hold), vectorised.

    ``tau_s`` may vary per step. The recursion ``y[k] = a[k] y[k-1] + (1 - a[k]) x[k]`` is solved in
    closed form with exponential weights inside blocks short enough that the weights stay finite, so
    the cost is a few numpy passes, not a Python loop per frame. Returns the lagged series and its
    last value (the state for the next chunk).

    >>> y, _ = first_order_lag(np.ones(3), dt_s=1.0, tau_s=1.0, y0=0.0)
    >>> np.round(y, 4).tolist()
    [0.6321, 0.8647, 0.9502]
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return x.copy(), float(y0)
    if np.ndim(tau_s) == 0:
        rate = min(dt_s / float(tau_s), 50.0)
        gain = -np.expm1(-rate)
        cumulative = _constant_rate_cumulative(rate, n)
    else:
        rate_array = np.minimum(dt_s / np.asarray(tau_s, dtype=np.float64), 50.0)
        gain = -np.expm1(-rate_array)
        cumulative = np.cumsum(rate_array)
    total = float(cumulative[-1])
    edges = np.searchsorted(cumulative, np.arange(300.0, total, 300.0), side="right").tolist() if total > 300.0 else []
    out = np.empty(n)
    y_prev, c_prev, start = float(y0), 0.0, 0
    for end in (*edges, n):
        if end <= start:
            continue
        weight = np.exp(cumulative[start:end] - c_prev) if c_prev else _exp_view(cumulative, end)
        driven = gain * x[start:end] if np.ndim(gain) == 0 else gain[start:end] * x[start:end]
        np.multiply(driven, weight, out=driven)
        np.cumsum(driven, out=driven)
        driven += y_prev
        np.divide(driven, weight, out=out[start:end])
        y_prev, c_prev, start = float(out[end - 1]), float(cumulative[end - 1]), end
    return out, y_prev


def _exp_view(cumulative: np.ndarray, end: int) -> np.ndarray:
    return np.exp(cumulative[:end])


@lru_cache(maxsize=64)
def _constant_rate_cumulative(rate: float, n: int) -> np.ndarray:
    values = rate * np.arange(1, n + 1, dtype=np.float64)
    values.flags.writeable = False
    return values


def road_load(speed_ms: np.ndarray, accel_ms2: np.ndarray, mass_kg: float, cda_m2: float,
              extra_force_n: np.ndarray | float = 0.0) -> np.ndarray:
    """Force at the wheels (N): inertia + aerodynamic drag + rolling resistance + any extra drag."""
    moving = speed_ms > 0.1
    drag = 0.5 * AIR_DENSITY * cda_m2 * speed_ms * speed_ms
    rolling = ROLLING_RESISTANCE * mass_kg * GRAVITY * moving
    return mass_kg * accel_ms2 + drag + rolling + extra_force_n * moving


def split_wheel_power(wheel_power_w: np.ndarray, drive_efficiency: float = DRIVE_EFFICIENCY,
                      regen_efficiency: float = REGEN_EFFICIENCY) -> tuple[np.ndarray, np.ndarray]:
    """Battery traction power (W, + discharging) and friction-brake power (W, >= 0) from wheel power."""
    braking = np.minimum(wheel_power_w, 0.0)
    regen = np.maximum(braking * (1.0 - FRICTION_BLEND_SHARE), -REGEN_LIMIT_W)
    friction = regen - braking  # the part of the braking power the regen did not take
    battery = np.where(wheel_power_w > 0.0, wheel_power_w / drive_efficiency, regen * regen_efficiency)
    return battery, friction


def motor_speed_rpm(speed_ms: np.ndarray) -> np.ndarray:
    return speed_ms / WHEEL_RADIUS_M * GEAR_RATIO * 60.0 / (2.0 * np.pi)


def motor_torque_nm(wheel_force_n: np.ndarray) -> np.ndarray:
    return wheel_force_n * WHEEL_RADIUS_M / GEAR_RATIO


def hvac_power_w(ambient_c: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Cabin heating (PTC, up to 6 kW) or cooling (up to 4 kW) while the vehicle is in use."""
    heating = np.minimum(6000.0, 280.0 * np.maximum(18.0 - ambient_c, 0.0))
    cooling = np.minimum(4000.0, 180.0 * np.maximum(ambient_c - 24.0, 0.0))
    return (heating + cooling + 250.0) * active


def battery_current(power_w: np.ndarray, ocv_v: np.ndarray, resistance_ohm: np.ndarray) -> np.ndarray:
    """Current (A, + discharging) that delivers ``power_w`` at the terminals: P = (OCV - I R) I.

    >>> round(float(battery_current(np.array([40_000.0]), np.array([400.0]), np.array([0.1]))[0]), 1)
    102.6
    """
    discriminant = np.maximum(ocv_v * ocv_v - 4.0 * resistance_ohm * power_w, 0.25 * ocv_v * ocv_v)
    return (ocv_v - np.sqrt(discriminant)) / (2.0 * resistance_ohm)


def bms_current_limit(current_a: np.ndarray, ocv_v: np.ndarray, resistance_ohm: np.ndarray, cells: int) -> np.ndarray:
    """The BMS derates power so that the average cell stays within 2.9..4.25 V under load.

    >>> round(float(bms_current_limit(np.array([5000.0]), np.array([360.0]), np.array([0.1]), 96)[0]), 1)
    816.0
    """
    discharge_max = np.maximum((ocv_v - 2.9 * cells) / resistance_ohm, 0.0)
    charge_max = np.maximum((4.25 * cells - ocv_v) / resistance_ohm, 0.0)
    return np.clip(current_a, -charge_max, discharge_max)


def tyre_pressure_kpa(cold_kpa: float, tyre_temp_c: np.ndarray) -> np.ndarray:
    """Gay-Lussac: pressure (gauge, approximated as absolute-proportional) scales with absolute temperature."""
    return cold_kpa * (tyre_temp_c + KELVIN) / (20.0 + KELVIN)


def ambient_temperature(hour_of_day: np.ndarray, daily_mean_c: np.ndarray, diurnal_c: float) -> np.ndarray:
    """Diurnal cycle: coldest around 03:00, warmest around 15:00."""
    return daily_mean_c + diurnal_c * np.sin(2.0 * np.pi * (hour_of_day - 9.0) / 24.0)


def thermal_sink_c(ambient_c: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Temperature the thermal system pulls the pack towards: chiller above 22 degC, heater below 5 degC."""
    managed = np.where(ambient_c > 22.0, 22.0 + 0.3 * (ambient_c - 22.0),
                       np.where(ambient_c < 5.0, 5.0 + 0.4 * (ambient_c - 5.0), ambient_c))
    return np.where(active, managed, ambient_c)
