"""``evtwin import`` round trip: our generator's frames, renamed and converted to a production car's
conventions (configs/catalogs/voltra_e5.json: degF, psi, mph, miles, negative discharge current, counter
from 0 with an ECU reboot), imported back, equal the original contract columns for the fields the car
sends; every other field is absent (NaN), never made up."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from configs import runs as io
from configs.catalog import SourceProfile, load_catalog
from configs.schema import SCHEMA
from configs.settings import load_config
from configs.units import convert
from serving.cli import main
from simulation.fleet import sample_profile
from simulation.generator import stream_vehicle_batches

CATALOG = Path(__file__).resolve().parents[1] / "configs" / "catalogs" / "voltra_e5.json"
SMALL = ["simulation.duration_days_per_vehicle=1.5", "simulation.frame_interval_s=300"]


def generated(index: int) -> pa.Table:
    cfg = load_config(overrides=SMALL)
    profile = sample_profile(cfg.simulation, cfg.seed, index)
    return pa.Table.from_batches(list(stream_vehicle_batches(profile, cfg.simulation, cfg.seed, batch_seconds=86400)))


def to_source(frames: pa.Table, profile: SourceProfile, counter_start: int, reboot_at: int | None) -> dict:
    """The inverse of the catalog: contract columns -> the car's names, units, sign and enum text."""
    rows = frames.num_rows
    counter = counter_start + np.arange(rows)
    if reboot_at is not None:
        counter[reboot_at:] = np.arange(rows - reboot_at)  # the ECU reboots and counts from 0 again
    ts = frames.column("ts").cast(pa.int64()).to_numpy()
    source: dict = {
        "vin": [frames.column("vehicle_id")[0].as_py()] * rows,
        profile.time.column: [np.datetime_as_string(t, unit="ms") + "Z" for t in ts.astype("datetime64[ms]")],
        profile.counter_column: counter,
    }
    for signal in profile.signals:
        values = frames.column(signal.field).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        if signal.values:
            text = {code: name for name, code in signal.values}
            source[signal.source] = [None if np.isnan(v) else text[int(v)] for v in values]
            continue
        values = -values if signal.negate else values
        source[signal.source] = (convert(values, SCHEMA.field(signal.field).unit, signal.unit) - signal.offset) / signal.scale
    return source


def write_csv_days(source_by_vehicle: list[dict], folder: Path) -> list[Path]:
    """Two files, split by time, each holding both vehicles' rows (a daily export with a VIN column)."""
    tables = [pa.table(s) for s in source_by_vehicle]
    paths = []
    for part in range(2):
        pieces = [t.slice(0, t.num_rows // 2) if part == 0 else t.slice(t.num_rows // 2) for t in tables]
        path = folder / f"export-{part}.csv"
        pacsv.write_csv(pa.concat_tables(pieces), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, list[pa.Table]]:
    folder = tmp_path_factory.mktemp("fleet")
    profile = load_catalog(CATALOG).profile()
    originals = [generated(0), generated(1)]
    sources = [to_source(originals[0], profile, counter_start=0, reboot_at=200),
               to_source(originals[1], profile, counter_start=41_000, reboot_at=None)]
    inputs = write_csv_days(sources, folder)
    run = folder / "run"
    assert main(["import", "--catalog", str(CATALOG), "--out", str(run), *map(str, inputs)]) == 0
    return run, originals


def test_imported_frames_equal_the_original_contract_columns_for_the_fields_the_car_sends(imported) -> None:
    run, originals = imported
    fields = load_catalog(CATALOG).profile().fields
    assert io.list_vehicles(run) == sorted(t.column("vehicle_id")[0].as_py() for t in originals)
    for original in originals:
        vehicle = original.column("vehicle_id")[0].as_py()
        back = io.read_vehicle_frames(run, vehicle)
        assert back.schema.equals(SCHEMA.arrow_schema, check_metadata=False)
        assert back.column("ts").equals(original.column("ts"))
        assert back.column("seq").to_pylist() == list(range(1, original.num_rows + 1))
        for name in SCHEMA.sensor_names:
            got = back.column(name).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
            if name in fields:
                want = original.column(name).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
                np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4, equal_nan=True, err_msg=name)
            else:
                assert np.isnan(got).all(), f"{name} is not sent by the car but has values"


def test_the_manifest_records_catalog_fitted_sensors_counters_and_no_events(imported) -> None:
    run, originals = imported
    manifest = io.read_manifest(run)
    catalog = load_catalog(CATALOG)
    assert manifest["catalog"] == {"name": "voltra_e5", "model": "default", "path": str(CATALOG),
                                   "sha256": catalog.sha256}
    fields = set(catalog.profile().fields)
    for fitted in manifest["fitted_sensors"].values():
        assert set(fitted) <= fields and len(fitted) >= len(fields) - 2  # a dropout day may hide one
    first = originals[0].column("vehicle_id")[0].as_py()
    second = originals[1].column("vehicle_id")[0].as_py()
    assert manifest["counters"][first]["restarts"] == 1 and manifest["counters"][second]["restarts"] == 0
    assert manifest["rows"]["raw_frames"] == sum(t.num_rows for t in originals)
    assert manifest["start_ms"] % 86_400_000 == 0 and manifest["end_ms"] > manifest["start_ms"]
    assert not (run / io.EVENTS_FILE).exists() and manifest["has_events"] is False
    hourly = io.read_aggregates(run, "hourly")
    assert hourly.num_rows > 0 and np.isnan(hourly.column("pump_speed_mean").to_numpy(zero_copy_only=False)).all()


def test_bad_rows_are_counted_per_signal_and_a_one_vehicle_parquet_needs_no_vehicle_column(tmp_path, capsys) -> None:
    document = json.loads(CATALOG.read_text())
    document["default"].update(vehicle_column=None, counter_column=None,
                               time={"column": "timestamp", "format": "epoch_s"})
    catalog_path = tmp_path / "per_vehicle.json"
    catalog_path.write_text(json.dumps(document))
    table = pa.table({"timestamp": [1767571200.0, 1767571260.0, None, 1767571320.0, 1767571320.0],
                      "VehSpd": ["31.0", "fast", "1", "", "2"], "TPMS_FL": [35.0, 35.0, 35.0, 35.0, 999.0],
                      "ChgStatus": ["NOT_CONNECTED", "WIRELESS", None, None, None], "Wipers": [1, 0, 1, 0, 1]})
    pq.write_table(table, tmp_path / "VIN42.parquet")
    run = tmp_path / "run"
    assert main(["import", "--catalog", str(catalog_path), "--out", str(run), str(tmp_path / "VIN42.parquet")]) == 0
    manifest = io.read_manifest(run)
    assert manifest["bad_values"] == {"timestamp": {"bad_time": 1}, "VehSpd": {"unparseable": 1},
                                      "TPMS_FL": {"out_of_range": 1}, "ChgStatus": {"unknown_enum": 1}}
    assert manifest["counters"]["VIN42"]["duplicates"] == 1  # two rows at one time and no counter
    assert manifest["fitted_sensors"] == {"VIN42": ["speed", "tyre_pressure_fl", "charger_state"]}  # contract order
    assert manifest["ignored_columns"] == ["Wipers"]
    frames = io.read_vehicle_frames(run, "VIN42")
    assert frames.column("seq").to_pylist() == [1, 2, 3]
    assert frames.column("charger_state").to_pylist() == [0, None, None]
    err = capsys.readouterr().err
    assert "no events.parquet" in err and "bad values VehSpd (unparseable)" in err


def test_an_existing_run_is_not_overwritten_and_a_bad_catalog_is_a_clear_error(tmp_path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "x.csv").write_text("timestamp,vin\n")
    assert main(["import", "--catalog", str(CATALOG), "--out", str(tmp_path / "run"), str(tmp_path / "x.csv")]) == 2
    assert "already exists" in " ".join(capsys.readouterr().err.split())  # rich wraps long paths
    bad = json.loads(CATALOG.read_text())
    bad["default"]["signals"]["VehSpd"]["unit"] = "degF"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["import", "--catalog", str(tmp_path / "bad.json"), "--out", str(tmp_path / "r2"),
                 str(tmp_path / "x.csv")]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "catalog 'voltra_e5' model 'default' signal 'VehSpd': unit 'degF' measures temperature" in err
