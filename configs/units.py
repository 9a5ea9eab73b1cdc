"""Units of the physical quantities that telemetry sources use, and conversion between them.

Every unit is an affine map onto its quantity's base unit: ``base = value * factor + offset``. Two units
convert into each other only within one quantity, so a catalog that maps psi onto a temperature field
is refused instead of producing numbers.

>>> round(float(convert(212.0, "degF", "degC")), 6)
100.0
>>> round(float(convert(100.0, "km/h", "mph")), 4)
62.1371
>>> quantity_of("kPa")
'pressure'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class UnitError(ValueError):
    """A unit that is unknown, or that does not measure the quantity asked for."""


@dataclass(frozen=True)
class Unit:
    """``base = value * factor + offset`` where base is the quantity's base unit (first in the table)."""

    name: str
    quantity: str
    factor: float
    offset: float = 0.0


_PSI_KPA = 6.894757293168361  # 1 lbf/in^2 in kPa (exact definition of the pound and inch)
_MILE_KM = 1.609344  # international mile
_LBF_FT_NM = 1.3558179483314004
_US_GALLON_L = 3.785411784

_TABLE: tuple[Unit, ...] = (
    Unit("degC", "temperature", 1.0),
    Unit("degF", "temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    Unit("K", "temperature", 1.0, -273.15),
    Unit("kPa", "pressure", 1.0),
    Unit("Pa", "pressure", 1e-3),
    Unit("bar", "pressure", 100.0),
    Unit("psi", "pressure", _PSI_KPA),
    Unit("km/h", "speed", 1.0),
    Unit("m/s", "speed", 3.6),
    Unit("mph", "speed", _MILE_KM),
    Unit("km", "distance", 1.0),
    Unit("m", "distance", 1e-3),
    Unit("miles", "distance", _MILE_KM),
    Unit("V", "voltage", 1.0),
    Unit("mV", "voltage", 1e-3),
    Unit("A", "current", 1.0),
    Unit("mA", "current", 1e-3),
    Unit("%", "ratio", 1.0),
    Unit("fraction", "ratio", 100.0),
    Unit("kW", "power", 1.0),
    Unit("W", "power", 1e-3),
    Unit("kWh", "energy", 1.0),
    Unit("Wh", "energy", 1e-3),
    Unit("mOhm", "resistance", 1.0),
    Unit("Ohm", "resistance", 1e3),
    Unit("kOhm", "resistance", 1e6),
    Unit("MOhm", "resistance", 1e9),
    Unit("L/min", "volume_flow", 1.0),
    Unit("L/h", "volume_flow", 1.0 / 60.0),
    Unit("gal/min", "volume_flow", _US_GALLON_L),
    Unit("rpm", "rotational_speed", 1.0),
    Unit("rad/s", "rotational_speed", 60.0 / (2.0 * np.pi)),
    Unit("Nm", "torque", 1.0),
    Unit("lbf_ft", "torque", _LBF_FT_NM),
    Unit("deg", "angle", 1.0),
    Unit("rad", "angle", 180.0 / np.pi),
    Unit("enum", "enum", 1.0),
)
UNITS: dict[str, Unit] = {unit.name: unit for unit in _TABLE}
QUANTITIES: tuple[str, ...] = tuple(dict.fromkeys(unit.quantity for unit in _TABLE))


def unit(name: str) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise UnitError(f"unknown unit {name!r} (known: {', '.join(UNITS)})") from None


def quantity_of(name: str) -> str:
    return unit(name).quantity


def units_of(quantity: str) -> tuple[str, ...]:
    """All unit names of one quantity, base unit first."""
    return tuple(u.name for u in _TABLE if u.quantity == quantity)


def convert(values: np.ndarray | float, source: str, target: str) -> np.ndarray:
    """``values`` in unit ``source`` expressed in unit ``target`` (float64); both must measure one quantity."""
    src, dst = unit(source), unit(target)
    if src.quantity != dst.quantity:
        raise UnitError(f"cannot convert {source!r} ({src.quantity}) to {target!r} ({dst.quantity})")
    values = np.asarray(values, dtype=np.float64)
    if src == dst:
        return values
    return (values * src.factor + src.offset - dst.offset) / dst.factor
