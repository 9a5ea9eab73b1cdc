"""Signal catalogs: unit conversions (property tests), validation errors that name the culprit, decoding of
source rows (units, sign, enums, bad values counted per signal) and counter re-basing."""
from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.catalog import (
    BAD_TIME,
    OUT_OF_RANGE,
    UNKNOWN_ENUM,
    UNPARSEABLE,
    CatalogError,
    catalog_from_dict,
    load_catalog,
    parse_time,
)
from configs.counters import SeqRebaser
from configs.schema import SCHEMA
from configs.units import QUANTITIES, UNITS, UnitError, convert, units_of

BASE = {
    "catalog": "test_car",
    "default": {
        "vehicle_column": "vin",
        "time": {"column": "t", "format": "epoch_ms"},
        "counter_column": "ctr",
        "signals": {
            "Spd": {"field": "speed", "unit": "mph"},
            "Curr": {"field": "pack_current", "unit": "A", "negate": True},
            "Tyre": {"field": "tyre_pressure_fl", "unit": "psi"},
            "Chg": {"field": "charger_state", "values": {"OFF": 0, "AC": 1, "DC": 2}},
            "Amb": {"field": "ambient_temp", "unit": "degF"},
            "Soc": {"field": "soc", "unit": "fraction"},
            "Raw12V": {"field": "aux_battery_voltage", "unit": "V", "scale": 0.1, "offset": 1.0},
        },
    },
    "models": {"LR": {"signals": {"Tyre": {"field": "tyre_pressure_fl", "unit": "bar"}, "Amb": None}}},
}

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def with_signal(**spec) -> dict:
    document = copy.deepcopy(BASE)
    document["default"]["signals"]["X"] = spec
    return document


# ------------------------------------------------------------------------------------------- units
@settings(max_examples=200, deadline=None)
@given(quantity=st.sampled_from(QUANTITIES), data=st.data(), value=finite)
def test_a_conversion_and_its_inverse_give_the_value_back(quantity: str, data: st.DataObject, value: float) -> None:
    units = units_of(quantity)
    source, target = data.draw(st.sampled_from(units)), data.draw(st.sampled_from(units))
    back = convert(convert(value, source, target), target, source)
    assert back == pytest.approx(value, rel=1e-9, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(quantity=st.sampled_from(QUANTITIES), data=st.data(), value=finite)
def test_converting_through_a_third_unit_equals_converting_directly(quantity: str, data: st.DataObject,
                                                                    value: float) -> None:
    units = units_of(quantity)
    a, b, c = (data.draw(st.sampled_from(units)) for _ in range(3))
    assert convert(convert(value, a, b), b, c) == pytest.approx(float(convert(value, a, c)), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("value, source, target, expected", [
    (32.0, "degF", "degC", 0.0), (212.0, "degF", "degC", 100.0), (0.0, "K", "degC", -273.15),
    (1.0, "bar", "kPa", 100.0), (36.0, "psi", "kPa", 248.2112625540), (60.0, "mph", "km/h", 96.56064),
    (10.0, "m/s", "km/h", 36.0), (100.0, "miles", "km", 160.9344), (0.5, "fraction", "%", 50.0),
    (3700.0, "mV", "V", 3.7), (7400.0, "W", "kW", 7.4), (2.0, "kWh", "Wh", 2000.0), (1.0, "Ohm", "mOhm", 1000.0),
])
def test_known_conversions(value: float, source: str, target: str, expected: float) -> None:
    assert float(convert(value, source, target)) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_units_of_different_quantities_do_not_convert() -> None:
    with pytest.raises(UnitError, match="'psi' .*pressure.* 'degC'"):
        convert(1.0, "psi", "degC")
    with pytest.raises(UnitError, match="unknown unit 'furlong'"):
        convert(1.0, "furlong", "km")


def test_every_contract_unit_is_in_the_unit_table() -> None:
    assert {f.unit for f in SCHEMA.fields} <= set(UNITS)


# ------------------------------------------------------------------------------------------- validation
def test_the_shipped_example_catalog_is_valid_and_covers_about_half_the_contract() -> None:
    catalog = load_catalog("voltra_e5")
    for model in catalog.models:
        fields = catalog.profile(model).fields
        assert 0.4 * len(SCHEMA.sensor_names) <= len(fields) <= 0.7 * len(SCHEMA.sensor_names)


def test_a_model_inherits_the_default_and_overrides_or_removes_signals() -> None:
    catalog = catalog_from_dict(BASE)
    default, lr = catalog.profile(), catalog.profile("LR")
    assert {s.source: s.unit for s in lr.signals}["Tyre"] == "bar"
    assert "ambient_temp" in default.fields and "ambient_temp" not in lr.fields
    assert lr.time == default.time and lr.counter_column == "ctr" and lr.vehicle_column == "vin"


@pytest.mark.parametrize("spec, fragments", [
    ({"field": "warp_speed"}, ["'test_car'", "'default'", "signal 'X'", "unknown contract field 'warp_speed'"]),
    ({"field": "speed", "unit": "knots"}, ["signal 'X'", "unknown unit 'knots'"]),
    ({"field": "speed", "unit": "psi"}, ["signal 'X'", "'psi' measures pressure", "'speed' is speed"]),
    ({"field": "ambient_temp", "unit": "degC", "range": [-58, 140]},
     ["signal 'X'", "range [-58.0, 140.0]", "outside the physical limits of 'ambient_temp'"]),
    ({"field": "tyre_pressure_rr", "unit": "kPa", "scale": 0}, ["signal 'X'", "scale must be finite and non-zero"]),
    ({"field": "speed", "values": {"FAST": 1}}, ["signal 'X'", "'speed' is not an enum"]),
    ({"field": "charger_state", "values": {"WIRELESS": 7}}, ["signal 'X'", "'WIRELESS' -> code 7"]),
    ({"field": "speed", "unit": "km/h", "negate": True, "range": [0, 200]}, ["signal 'X'", "-200..-0 km/h"]),
])
def test_an_impossible_signal_is_refused_naming_catalog_model_signal_and_value(spec: dict, fragments: list) -> None:
    with pytest.raises(CatalogError) as error:
        catalog_from_dict(with_signal(**spec))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_an_invalid_model_is_refused_at_load_not_at_first_use() -> None:
    document = copy.deepcopy(BASE)
    document["models"]["BAD"] = {"signals": {"Odo": {"field": "odometer", "unit": "degC"}}}
    with pytest.raises(CatalogError, match="model 'BAD' signal 'Odo': unit 'degC' measures temperature"):
        catalog_from_dict(document)


def test_structural_errors_name_the_key_and_value() -> None:
    document = copy.deepcopy(BASE)
    document["default"]["signals"]["Spd"]["colour"] = "red"
    with pytest.raises(CatalogError, match=r"(?s)catalog 'test_car'.*default\.signals\.Spd\.colour: unknown key .*'red'"):
        catalog_from_dict(document)
    document = copy.deepcopy(BASE)
    document["default"]["time"]["format"] = "fortnights"
    with pytest.raises(CatalogError, match="(?s)default.time.format.*'fortnights'"):
        catalog_from_dict(document)


def test_one_field_fed_by_two_signals_is_refused() -> None:
    with pytest.raises(CatalogError, match="field 'speed' fed by two signals, 'Spd' and 'X'"):
        catalog_from_dict(with_signal(field="speed", unit="km/h"))


def test_an_unknown_model_lists_the_known_ones(tmp_path) -> None:
    path = tmp_path / "car.json"
    path.write_text(json.dumps(BASE))
    with pytest.raises(CatalogError, match="unknown vehicle model 'XL' .*default, LR"):
        load_catalog(path).profile("XL")
    with pytest.raises(CatalogError, match="catalog file not found"):
        load_catalog(tmp_path / "nope.json")


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from([f for f in SCHEMA.fields if f.unit not in ("enum",)]), data=st.data())
def test_a_declared_range_is_accepted_exactly_when_it_converts_inside_the_physical_limits(field, data) -> None:
    unit = data.draw(st.sampled_from(units_of(UNITS[field.unit].quantity)))
    lo_c, hi_c = sorted(data.draw(st.tuples(st.floats(field.min - 100, field.max + 100),
                                            st.floats(field.min - 100, field.max + 100))))
    if hi_c - lo_c < 1e-3:
        hi_c = lo_c + 1.0
    source_range = sorted(convert(np.array([lo_c, hi_c]), field.unit, unit).tolist())
    if source_range[1] - source_range[0] <= 1e-9 * max(1.0, abs(source_range[0])):
        return  # collapses in float arithmetic
    span = field.max - field.min
    inside = lo_c >= field.min - 1e-6 * span and hi_c <= field.max + 1e-6 * span
    clearly_outside = lo_c < field.min - 1e-4 * span or hi_c > field.max + 1e-4 * span
    document = with_signal(field=field.name, unit=unit, range=source_range)
    document["default"]["signals"] = {"X": document["default"]["signals"]["X"]}
    document["models"] = {}
    if clearly_outside:
        with pytest.raises(CatalogError, match="outside the physical limits"):
            catalog_from_dict(document)
    elif inside:
        assert catalog_from_dict(document).profile().fields == (field.name,)


# ------------------------------------------------------------------------------------------- decoding
def test_decoding_converts_units_sign_scale_and_enum_codes() -> None:
    profile = catalog_from_dict(BASE).profile()
    rows = profile.decode({"vin": ["A", "A"], "t": [1_000, 2_000], "ctr": [5, 6], "Spd": [62.137119, 0.0],
                           "Curr": [-100.0, 20.0], "Tyre": [36.0, 30.0], "Chg": ["AC", "OFF"],
                           "Amb": [50.0, 32.0], "Soc": [0.8, 0.25], "Raw12V": [120, 130]})
    np.testing.assert_allclose(rows.columns["speed"], [100.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(rows.columns["pack_current"], [100.0, -20.0])
    np.testing.assert_allclose(rows.columns["tyre_pressure_fl"], [248.21126, 206.84272], atol=1e-4)
    np.testing.assert_array_equal(rows.columns["charger_state"], [1, 0])
    np.testing.assert_allclose(rows.columns["ambient_temp"], [10.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(rows.columns["soc"], [80.0, 25.0])
    np.testing.assert_allclose(rows.columns["aux_battery_voltage"], [13.0, 14.0])
    assert rows.ts_ms.tolist() == [1_000, 2_000] and rows.counter.tolist() == [5, 6] and not rows.issues


def test_bad_values_are_counted_per_signal_and_never_dropped_silently() -> None:
    profile = catalog_from_dict(BASE).profile()
    rows = profile.decode(pa.table({
        "vin": ["A", "A", "A", "", "A", "a/b"], "t": pa.array(["1000", "2000", "oops", "4000", "5000", "6000"]),
        "ctr": [1, 2, 3, 4, 5, 6], "Spd": ["10", "err", "10", "10", "", "1"],
        "Chg": ["AC", "WIRELESS", "DC", "DC", None, None], "Tyre": [30.0, 300.0, 30.0, 30.0, 30.0, 30.0],
        "Extra": [1, 2, 3, 4, 5, 6],
    }))
    assert rows.ts_ms.tolist() == [1000, 2000, 5000]  # no time or no (valid) vehicle: not a frame
    assert rows.issues == {("t", BAD_TIME): 1, ("vin", "missing_vehicle"): 2, ("Spd", UNPARSEABLE): 1,
                           ("Chg", UNKNOWN_ENUM): 1, ("Tyre", OUT_OF_RANGE): 1}
    assert np.isnan(rows.columns["speed"][1]) and np.isnan(rows.columns["speed"][2])  # "err" and empty
    assert rows.columns["tyre_pressure_fl"][1] == pytest.approx(300 * 6.894757293168361)  # kept as sent
    assert "Amb" in rows.missing_signals and rows.ignored_columns == ("Extra",)


def test_a_missing_key_column_is_a_clear_error() -> None:
    profile = catalog_from_dict(BASE).profile()
    with pytest.raises(CatalogError, match="input has no column 'ctr'"):
        profile.decode({"vin": ["A"], "t": [1]})


@pytest.mark.parametrize("fmt, values, expected", [
    ("epoch_s", [1767571200.5], [1767571200500]), ("epoch_ms", [1767571200500], [1767571200500]),
    ("epoch_us", [1767571200500000], [1767571200500]),
    ("iso8601", ["2026-01-05T00:00:00.5", "2026-01-05T02:00:00.5+02:00"], [1767571200500] * 2),
])
def test_time_formats(fmt: str, values: list, expected: list) -> None:
    ms, ok = parse_time(pa.array(values), fmt)
    assert ms.tolist() == expected and ok.all()


def test_arrow_timestamps_are_read_whatever_the_format_says() -> None:
    column = pa.array([1767571200500], type=pa.timestamp("ms"))
    assert parse_time(column, "epoch_s")[0].tolist() == [1767571200500]


# ------------------------------------------------------------------------------------------- counters
def test_a_counter_from_zero_with_a_restart_becomes_a_continuous_seq_from_one() -> None:
    rebaser = SeqRebaser()
    ts = np.arange(8) * 1000
    counter = np.array([0, 1, 2, 3, 0, 1, 5, 6], dtype=float)  # reboot after 4 frames, then 3 frames lost
    order, seq = rebaser.assign("EV1", ts, counter)
    assert order.tolist() == list(range(8)) and seq.tolist() == list(range(1, 9))
    report = rebaser.reports["EV1"]
    assert (report.restarts, report.lost_frames, report.duplicates, report.frames) == (1, 3, 0, 8)


def test_rows_are_put_in_time_order_and_exact_duplicates_are_dropped() -> None:
    rebaser = SeqRebaser()
    order, seq = rebaser.assign("EV1", np.array([30, 10, 20, 20]), np.array([102.0, 100.0, 101.0, 101.0]))
    assert order.tolist() == [1, 2, 0] and seq.tolist() == [1, 2, 3]
    assert rebaser.reports["EV1"].duplicates == 1 and rebaser.reports["EV1"].restarts == 0


def test_without_a_counter_seq_follows_time_and_repeated_times_are_duplicates() -> None:
    rebaser = SeqRebaser()
    order, seq = rebaser.assign("EV1", np.array([5, 5, 1, 9]))
    assert order.tolist() == [2, 0, 3] and seq.tolist() == [1, 2, 3]
    assert rebaser.reports["EV1"].duplicates == 1


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.integers(1, 5_000), min_size=1, max_size=60), start=st.integers(0, 2**40),
       resets=st.lists(st.integers(0, 59), max_size=4), cut=st.integers(0, 60))
def test_seq_is_strictly_increasing_from_one_and_the_same_in_one_call_or_in_batches(steps, start, resets, cut) -> None:
    ts = np.cumsum(steps).astype(np.int64)
    counter = start + np.arange(len(ts), dtype=float)
    for reset in resets:
        if reset < len(ts):
            counter[reset:] -= counter[reset]  # the ECU restarts its counter at 0
    whole = SeqRebaser()
    _, seq = whole.assign("V", ts, counter)
    assert seq.tolist() == list(range(1, len(ts) + 1))
    batched = SeqRebaser()
    cut = min(cut, len(ts))
    _, first = batched.assign("V", ts[:cut], counter[:cut])
    _, second = batched.assign("V", ts[cut:], counter[cut:])
    assert np.concatenate([first, second]).tolist() == seq.tolist()
    assert vars(batched.reports["V"]) == vars(whole.reports["V"])
    assert whole.reports["V"].restarts == int((np.diff(counter) <= 0).sum())


def test_a_frame_older_than_one_already_numbered_is_late_when_streaming() -> None:
    rebaser = SeqRebaser()
    rebaser.assign("V", np.array([10, 20]), np.array([1.0, 2.0]))
    order, seq = rebaser.assign("V", np.array([15, 30]), np.array([9.0, 3.0]))
    assert order.tolist() == [1] and seq.tolist() == [3] and rebaser.reports["V"].late == 1
