"""Signal catalogs: how a real vehicle's signals map onto the telemetry contract.

A catalog (``configs/catalogs/<name>.json``) says, per vehicle model (and a ``default`` that models
extend), which source column feeds which contract field, in which unit, with which scale/offset, sign
convention and enum codes, and where the vehicle id, the time and the frame counter are. It is
validated eagerly, like the config: an unknown contract field, an unknown unit, a unit of another
quantity than the field's, or a declared range that cannot be physical after conversion is refused with
the catalog, model, signal and value named.

    {"catalog": "voltra_e5", "description": "...",
     "default": {"vehicle_column": "vin",                    # null: one file per vehicle, id = file stem
                 "time": {"column": "timestamp", "format": "epoch_ms"},   # epoch_s|epoch_ms|epoch_us|iso8601
                 "counter_column": "frame_ctr",              # null: seq from time order
                 "signals": {"BattCurr": {"field": "pack_current", "unit": "A", "negate": true,
                                          "range": [-800, 800]},
                             "ChgSt": {"field": "charger_state", "values": {"IDLE": 0, "AC": 1}}}},
     "models": {"E5-LR": {"signals": {"TyrePrsFL": {"field": "tyre_pressure_fl", "unit": "bar"},
                                       "BattCurr": null}}}}   # null removes a default mapping

Conversion of one value: ``x * scale + offset`` in ``unit``, converted to the field's contract unit, then
negated when ``negate`` (a source whose sign convention is the opposite of the contract's).

>>> catalog = catalog_from_dict({"catalog": "doc", "default": {"time": {"column": "t", "format": "epoch_s"},
...     "signals": {"Speed": {"field": "speed", "unit": "mph"}}}})
>>> rows = catalog.profile().decode(pa.table({"t": [1767571200], "Speed": [62.5]}), vehicle_id="EV1")
>>> rows.ts_ms.tolist(), round(float(rows.columns["speed"][0]), 3)
([1767571200000], 100.584)
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from configs.schema import SCHEMA
from configs.settings import read_json_object
from configs.units import UNITS, convert, quantity_of

CATALOG_DIR = Path(__file__).with_name("catalogs")
DEFAULT_MODEL = "default"
# Kinds of bad values counted per signal during decoding (nothing is dropped silently).
UNPARSEABLE = "unparseable"  # text that is not a number (or not a known enum value): NaN
UNKNOWN_ENUM = "unknown_enum"  # an enum value the catalog does not map: NaN
OUT_OF_RANGE = "out_of_range"  # outside the contract's physical limits after conversion: kept as sent
BAD_TIME = "bad_time"  # missing or unreadable time: the row is not a frame (dropped, counted)
MISSING_VEHICLE = "missing_vehicle"  # empty vehicle id, or one that is not a valid id: dropped, counted
# The wire's vehicle id rule without "/": a vehicle id is also a folder name in a run (vehicle_id=<id>/).
VEHICLE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class CatalogError(ValueError):
    """A catalog was refused; the message names the catalog, the model, the signal and the value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeSpec(_Strict):
    """The source's time column: epoch seconds/milliseconds/microseconds or ISO 8601 text (naive = UTC)."""

    column: str = Field(min_length=1)
    format: Literal["epoch_s", "epoch_ms", "epoch_us", "iso8601"] = "epoch_ms"


class SignalSpec(_Strict):
    """One source signal: the contract field it feeds and how its values convert."""

    field: str
    unit: str | None = None  # default: the field's contract unit
    scale: float = 1.0
    offset: float = 0.0
    negate: bool = False  # the source's sign convention is the contract's opposite
    values: dict[str, int] | None = None  # enum fields: source value (as text) -> contract code
    range: tuple[float, float] | None = None  # the source's valid values, as sent (checked after conversion)


class ModelSpec(_Strict):
    """A vehicle model's mapping; in ``models`` every key left out is taken from ``default``."""

    description: str = ""
    vehicle_column: str | None = None  # None: one file per vehicle, the vehicle id is the file name's stem
    time: TimeSpec | None = None
    counter_column: str | None = None  # None: seq follows time order
    signals: dict[str, SignalSpec | None] = {}


class CatalogDocument(_Strict):
    catalog: str = Field(min_length=1)
    description: str = ""
    default: ModelSpec
    models: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class SignalMapping:
    """A validated signal: ``contract = sign * convert(raw * scale + offset, unit -> field unit)``."""

    source: str
    field: str
    unit: str
    scale: float = 1.0
    offset: float = 0.0
    negate: bool = False
    values: tuple[tuple[str, int], ...] = ()

    def to_contract(self, raw: np.ndarray) -> np.ndarray:
        """Numeric source values -> contract values (float64)."""
        values = np.asarray(raw, dtype=np.float64) * self.scale + self.offset
        values = convert(values, self.unit, SCHEMA.field(self.field).unit)
        return -values if self.negate else values


@dataclass
class DecodedRows:
    """Source rows in contract terms: one entry per row that has a time (and a vehicle id)."""

    vehicle_id: np.ndarray  # object (str)
    ts_ms: np.ndarray  # int64
    counter: np.ndarray | None  # float64 (NaN where the row had none), None when the catalog has no counter
    columns: dict[str, np.ndarray]  # contract field -> float64 values, only fields whose signal was present
    issues: Counter[tuple[str, str]] = field(default_factory=Counter)  # (signal, kind) -> rows
    missing_signals: tuple[str, ...] = ()  # catalog signals the input does not have
    ignored_columns: tuple[str, ...] = ()  # input columns the catalog does not map


@dataclass(frozen=True)
class SourceProfile:
    """One vehicle model's resolved mapping (the ``default`` merged with the model's own entries)."""

    catalog: str
    model: str
    vehicle_column: str | None
    time: TimeSpec
    counter_column: str | None
    signals: tuple[SignalMapping, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(s.field for s in self.signals)

    def decode(self, table: pa.Table | Mapping[str, Any], vehicle_id: str | None = None) -> DecodedRows:
        """Source rows -> contract values. ``vehicle_id`` names the vehicle when the catalog has no vehicle column.

        Rows without a time or vehicle are dropped and counted; bad values become NaN (or, out of the
        physical range, stay as sent) and are counted per signal in ``issues``.
        """
        if not isinstance(table, pa.Table):
            table = pa.table({name: _as_arrow(values) for name, values in table.items()})
        names = set(table.column_names)
        where = f"catalog {self.catalog!r} model {self.model!r}"
        required = [self.time.column] + [c for c in (self.vehicle_column, self.counter_column) if c]
        for column in required:
            if column not in names:
                raise CatalogError(f"{where}: input has no column {column!r} (columns: {sorted(names)})")
        if self.vehicle_column is None and not vehicle_id:
            raise CatalogError(f"{where}: no vehicle_column, so each input must name its vehicle (file name)")
        if self.vehicle_column is None and not VEHICLE_ID_PATTERN.fullmatch(vehicle_id or ""):
            raise CatalogError(f"{where}: vehicle id {vehicle_id!r} (from the file name) is not 1-64 characters of "
                               f"[A-Za-z0-9._:-] starting alphanumeric")
        issues: Counter[tuple[str, str]] = Counter()
        ts_ms, time_ok = parse_time(table.column(self.time.column), self.time.format)
        issues[(self.time.column, BAD_TIME)] += int((~time_ok).sum())
        if self.vehicle_column:
            ids, has_id = _vehicle_ids(table.column(self.vehicle_column))
            issues[(self.vehicle_column, MISSING_VEHICLE)] += int((time_ok & ~has_id).sum())
            keep = time_ok & has_id
        else:
            ids = np.full(table.num_rows, vehicle_id, dtype=object)
            keep = time_ok
        counter = None
        if self.counter_column:
            counter, bad = parse_numbers(table.column(self.counter_column))
            issues[(self.counter_column, UNPARSEABLE)] += int((bad & keep).sum())
            counter = counter[keep]
        columns: dict[str, np.ndarray] = {}
        for signal in self.signals:
            if signal.source not in names:
                continue
            values, signal_issues = self._decode_signal(signal, table.column(signal.source))
            columns[signal.field] = values[keep]
            for kind, mask in signal_issues.items():
                issues[(signal.source, kind)] += int((mask & keep).sum())
        mapped = {s.source for s in self.signals} | set(required)
        return DecodedRows(
            vehicle_id=ids[keep], ts_ms=ts_ms[keep], counter=counter, columns=columns,
            issues=Counter({key: n for key, n in issues.items() if n}),
            missing_signals=tuple(s.source for s in self.signals if s.source not in names),
            ignored_columns=tuple(c for c in table.column_names if c not in mapped),
        )

    @staticmethod
    def _decode_signal(signal: SignalMapping, column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        spec = SCHEMA.field(signal.field)
        issues: dict[str, np.ndarray] = {}
        if signal.values:
            raw, unknown = _enum_codes(column, dict(signal.values))
            issues[UNKNOWN_ENUM] = unknown
        else:
            raw, issues[UNPARSEABLE] = parse_numbers(column)
        values = signal.to_contract(raw)
        with np.errstate(invalid="ignore"):
            outside = (values < spec.min) | (values > spec.max) | np.isinf(values)
        if spec.dtype.startswith("int"):
            outside |= ~np.isnan(values) & (values != np.round(values))
        issues[OUT_OF_RANGE] = outside
        return values, issues


@dataclass(frozen=True)
class Catalog:
    """A validated catalog document; ``profile(model)`` resolves one vehicle model."""

    name: str
    description: str
    document: CatalogDocument
    sha256: str
    path: str = ""

    @property
    def models(self) -> tuple[str, ...]:
        return (DEFAULT_MODEL, *self.document.models)

    def profile(self, model: str | None = None) -> SourceProfile:
        model = model or DEFAULT_MODEL
        if model == DEFAULT_MODEL:
            return _resolve(self.name, model, self.document.default, None)
        if model not in self.document.models:
            raise CatalogError(f"catalog {self.name!r}: unknown vehicle model {model!r} (known: {', '.join(self.models)})")
        return _resolve(self.name, model, self.document.models[model], self.document.default)


def _resolve(catalog: str, model: str, spec: ModelSpec, default: ModelSpec | None) -> SourceProfile:
    where = f"catalog {catalog!r} model {model!r}"

    def pick(key: str) -> Any:
        if default is None or key in spec.model_fields_set:
            return getattr(spec, key)
        return getattr(default, key)

    signals: dict[str, SignalSpec | None] = dict(default.signals) if default is not None else {}
    signals.update(spec.signals)
    time = pick("time")
    if time is None:
        raise CatalogError(f"{where}: no time column (\"time\": {{\"column\": ..., \"format\": ...}})")
    mappings = tuple(_validate_signal(where, source, s) for source, s in signals.items() if s is not None)
    fed: dict[str, str] = {}
    for mapping in mappings:
        if mapping.field in fed:
            raise CatalogError(f"{where}: field {mapping.field!r} fed by two signals, {fed[mapping.field]!r} "
                               f"and {mapping.source!r}")
        fed[mapping.field] = mapping.source
    keys = [c for c in (pick("vehicle_column"), time.column, pick("counter_column")) if c]
    for mapping in mappings:
        if mapping.source in keys:
            raise CatalogError(f"{where}: signal {mapping.source!r} is also the vehicle, time or counter column")
    return SourceProfile(catalog=catalog, model=model, vehicle_column=pick("vehicle_column"), time=time,
                         counter_column=pick("counter_column"), signals=mappings)


def _validate_signal(where: str, source: str, spec: SignalSpec) -> SignalMapping:
    where = f"{where} signal {source!r}"
    if spec.field not in SCHEMA.sensor_names:
        raise CatalogError(f"{where}: unknown contract field {spec.field!r} (fields: {', '.join(SCHEMA.sensor_names)})")
    contract = SCHEMA.field(spec.field)
    unit = spec.unit if spec.unit is not None else contract.unit
    if unit not in UNITS:
        raise CatalogError(f"{where}: unknown unit {unit!r} (known: {', '.join(UNITS)})")
    if quantity_of(unit) != quantity_of(contract.unit):
        raise CatalogError(f"{where}: unit {unit!r} measures {quantity_of(unit)}, but field {spec.field!r} is "
                           f"{quantity_of(contract.unit)} in {contract.unit!r}")
    if not math.isfinite(spec.scale) or spec.scale == 0 or not math.isfinite(spec.offset):
        raise CatalogError(f"{where}: scale must be finite and non-zero, offset finite (got scale {spec.scale}, "
                           f"offset {spec.offset})")
    is_enum = contract.unit == "enum"
    if spec.values is not None and not is_enum:
        raise CatalogError(f"{where}: 'values' maps enum codes, but field {spec.field!r} is not an enum")
    for text, code in (spec.values or {}).items():
        if not contract.min <= code <= contract.max:
            raise CatalogError(f"{where}: value {text!r} -> code {code} is not a {spec.field} code "
                               f"({int(contract.min)}..{int(contract.max)})")
    mapping = SignalMapping(source=source, field=spec.field, unit=unit, scale=spec.scale, offset=spec.offset,
                            negate=spec.negate, values=tuple(sorted((spec.values or {}).items())))
    if spec.range is not None:
        low, high = spec.range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise CatalogError(f"{where}: range must be two finite numbers, low < high (got {list(spec.range)})")
        ends = np.sort(mapping.to_contract(np.array([low, high])))
        slack = 1e-6 * (contract.max - contract.min)  # rounding of the unit factors only
        if ends[0] < contract.min - slack or ends[1] > contract.max + slack:
            raise CatalogError(
                f"{where}: range {list(spec.range)} {unit} is {ends[0]:.6g}..{ends[1]:.6g} {contract.unit} after "
                f"conversion, outside the physical limits of {spec.field!r} ({contract.min:g}..{contract.max:g} "
                f"{contract.unit}): wrong unit, scale, offset or sign?")
    return mapping


def _describe(error: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key (value {error['input']!r})"
    return f"{path}: {error['msg']} (got {error['input']!r})"


def catalog_from_dict(document: Mapping[str, Any], path: str = "") -> Catalog:
    """Validate a catalog document and every model in it (errors name catalog, model, signal, value)."""
    name = document.get("catalog", path or "<unnamed>") if isinstance(document, Mapping) else path
    try:
        parsed = CatalogDocument.model_validate(document)
    except ValidationError as exc:
        raise CatalogError(f"catalog {name!r}:\n  " + "\n  ".join(_describe(e) for e in exc.errors())) from None
    canonical = json.dumps(parsed.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    catalog = Catalog(name=parsed.catalog, description=parsed.description, document=parsed,
                      sha256=hashlib.sha256(canonical.encode()).hexdigest()[:16], path=path)
    for model in catalog.models:
        catalog.profile(model)  # eager: every model is valid, not only the one used first
    return catalog


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate ``path``; a bare name (no suffix, no folder) is looked up in ``configs/catalogs/``."""
    catalog_path = Path(path)
    if not catalog_path.exists() and catalog_path.suffix == "" and catalog_path.parent == Path("."):
        catalog_path = CATALOG_DIR / f"{path}.json"
    return catalog_from_dict(read_json_object(catalog_path, "catalog", CatalogError), str(catalog_path))


# ------------------------------------------------------------------------------------------- parsing
def _as_arrow(values: Any) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    array = np.asarray(values)
    return pa.array(array.tolist() if array.dtype.kind == "O" else array)


def _combine(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def parse_numbers(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN for missing/bad, mask of non-empty values that are not numbers).

    >>> values, bad = parse_numbers(pa.array(["1.5", "", None, "err"]))
    >>> values.tolist()[0], bad.tolist()
    (1.5, [False, False, False, True])
    """
    array = _combine(column)
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type) \
            or pa.types.is_null(array.type):
        values = array.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        return values, np.zeros(len(values), dtype=bool)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    text = array.cast(pa.string())
    try:
        values = pc.cast(pc.if_else(pc.equal(pc.utf8_trim_whitespace(text), ""), None, text), pa.float64())
        values = values.fill_null(np.nan).to_numpy(zero_copy_only=False)
        return values, np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out = np.full(len(text), np.nan)
    bad = np.zeros(len(text), dtype=bool)
    for i, item in enumerate(text.to_pylist()):
        if item is None or not item.strip():
            continue
        try:
            out[i] = float(item)
        except ValueError:
            bad[i] = True
    return out, bad


def _vehicle_ids(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(vehicle id per row as text, mask of valid ids); each distinct id is checked once.

    >>> ids, ok = _vehicle_ids(pa.array(["VIN1", None, "a/b", "VIN1"]))
    >>> ids.tolist(), ok.tolist()
    (['VIN1', '', 'a/b', 'VIN1'], [True, False, False, True])
    """
    array = _combine(column)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    encoded = array.cast(pa.string()).dictionary_encode()
    names = [*encoded.dictionary.to_pylist(), ""]  # the last slot: null rows
    valid = np.array([VEHICLE_ID_PATTERN.fullmatch(name) is not None for name in names], dtype=bool)
    index = encoded.indices.fill_null(len(names) - 1).to_numpy(zero_copy_only=False)
    return np.asarray(names, dtype=object)[index], valid[index]


def _enum_codes(column: pa.ChunkedArray | pa.Array, codes: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Source enum values (text or numbers, matched as text; 2.0 matches "2") -> codes, and the unknown mask.

    >>> values, unknown = _enum_codes(pa.array(["AC", None, "??", "AC"]), {"AC": 1, "2": 2})
    >>> values.tolist()[2:], unknown.tolist()
    ([nan, 1.0], [False, False, True, False])
    >>> _enum_codes(pa.array([2.0, 1.0]), {"AC": 1, "2": 2})[0].tolist()
    [2.0, nan]
    """
    array = _combine(column)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if len(array) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    lookup = {key.strip(): code for key, code in codes.items()}
    # Few distinct values: map each once, then index (rows x Python calls would dominate an import).
    encoded = array.dictionary_encode()
    code_of = np.full(len(encoded.dictionary) + 1, np.nan)  # the last slot: null rows
    unknown_of = np.zeros(len(encoded.dictionary) + 1, dtype=bool)
    for i, item in enumerate(encoded.dictionary.to_pylist()):
        if item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        key = str(int(item)) if isinstance(item, float) and item.is_integer() else str(item).strip()
        if key == "":
            continue
        if key in lookup:
            code_of[i] = lookup[key]
        else:
            unknown_of[i] = True
    indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False)
    return code_of[indices], unknown_of[indices]


def parse_time(column: pa.ChunkedArray | pa.Array, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ms since epoch UTC, mask of rows with a readable time). Naive ISO text and timestamps are UTC.

    >>> parse_time(pa.array(["2026-01-05T00:00:01Z", "2026-01-05 01:00:00+01:00", "x"]), "iso8601")[0][:2].tolist()
    [1767571201000, 1767571200000]
    """
    array = _combine(column)
    if pa.types.is_timestamp(array.type):
        utc = array.cast(pa.timestamp(array.type.unit, tz=array.type.tz or "UTC"))
        raw = utc.cast(pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64())
        ok = raw.is_valid().to_numpy(zero_copy_only=False)
        return raw.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64), ok
    if fmt == "iso8601":
        ms = np.zeros(len(array), dtype=np.int64)
        ok = np.zeros(len(array), dtype=bool)
        for i, item in enumerate(array.cast(pa.string()).to_pylist()):
            if not item:
                continue
            try:
                moment = datetime.fromisoformat(item.strip())
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ms[i] = round(moment.timestamp() * 1000)
            ok[i] = True
        return ms, ok
    values, _ = parse_numbers(array)
    scale = {"epoch_s": 1000.0, "epoch_ms": 1.0, "epoch_us": 1e-3}[fmt]
    ok = np.isfinite(values)
    ms = np.where(ok, np.round(np.where(ok, values, 0.0) * scale), 0).astype(np.int64)
    return ms, ok
