"""The telemetry contract, read from ``telemetry_schema.json`` (the single source of truth).

The Arrow schema, the value ranges used by validation and the proto ``Frame`` message all derive
from (or are tested against) this module.

>>> SCHEMA.field("soc").unit
'%'
>>> "pack_voltage" in SCHEMA.sensor_names
True
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

SCHEMA_PATH = Path(__file__).with_name("telemetry_schema.json")
# A vehicle id: 1-64 characters of [A-Za-z0-9._:/-], starting alphanumeric. Anchored with ``\Z``, not ``$``
# (``$`` also matches before a trailing newline, and "V1\n" then named a twin, a checkpoint and a metric),
# so ``match`` and ``fullmatch`` agree; prefer ``is_vehicle_id``.
VEHICLE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}\Z")

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "timestamp_ms": pa.timestamp("ms", tz="UTC"),
    "int64": pa.int64(),
    "int8": pa.int8(),
    "float32": pa.float32(),
    "float64": pa.float64(),
}
_NUMPY_TYPES: dict[str, type] = {
    "int64": np.int64,
    "int8": np.int8,
    "float32": np.float32,
    "float64": np.float64,
}


@dataclass(frozen=True)
class FieldSpec:
    """One sensor field of a frame: its type, unit, physical range and subsystem."""

    name: str
    dtype: str
    unit: str
    min: float
    max: float
    subsystem: str
    description: str

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.dtype]

    @property
    def numpy_type(self) -> type:
        return _NUMPY_TYPES[self.dtype]


class TelemetrySchema:
    """Typed view of ``telemetry_schema.json``."""

    def __init__(self, document: Mapping) -> None:
        self.version: str = document["schema_version"]
        self.key_names: tuple[str, ...] = tuple(f["name"] for f in document["key_fields"])
        self.fields: tuple[FieldSpec, ...] = tuple(
            FieldSpec(
                name=f["name"], dtype=f["dtype"], unit=f["unit"], min=float(f["min"]),
                max=float(f["max"]), subsystem=f["subsystem"], description=f["description"],
            )
            for f in document["fields"]
        )
        self._by_name = {f.name: f for f in self.fields}
        for spec in self.fields:
            if spec.dtype not in _NUMPY_TYPES:
                raise ValueError(f"telemetry schema field {spec.name!r}: unknown dtype {spec.dtype!r}")
            if not spec.min < spec.max:
                raise ValueError(f"telemetry schema field {spec.name!r}: min {spec.min} >= max {spec.max}")

    @classmethod
    def load(cls, path: Path = SCHEMA_PATH) -> TelemetrySchema:
        return cls(json.loads(Path(path).read_text()))

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def column_names(self) -> tuple[str, ...]:
        return self.key_names + self.sensor_names

    def field(self, name: str) -> FieldSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown telemetry field {name!r}") from None

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        key_types = {"vehicle_id": pa.string(), "ts": _ARROW_TYPES["timestamp_ms"], "seq": pa.int64()}
        columns = [pa.field(name, key_types[name], nullable=False) for name in self.key_names]
        columns += [
            pa.field(f.name, f.arrow_type, nullable=True,
                     metadata={"unit": f.unit, "subsystem": f.subsystem, "min": str(f.min), "max": str(f.max)})
            for f in self.fields
        ]
        return pa.schema(columns, metadata={"schema_version": self.version})

    @cached_property
    def lower_bounds(self) -> np.ndarray:
        return np.array([f.min for f in self.fields], dtype=np.float64)

    @cached_property
    def upper_bounds(self) -> np.ndarray:
        return np.array([f.max for f in self.fields], dtype=np.float64)

    def out_of_range(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask, same shape as ``values`` (rows x sensor fields): NaN, inf or outside [min, max]."""
        values = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            inside = (values >= self.lower_bounds) & (values <= self.upper_bounds)
        return ~inside


SCHEMA = TelemetrySchema.load()


def is_vehicle_id(text: str) -> bool:
    """True when the whole of ``text`` is a vehicle id (see ``VEHICLE_ID_PATTERN``)."""
    return isinstance(text, str) and VEHICLE_ID_PATTERN.fullmatch(text) is not None
