"""Domain-shift variants of the generator (issue 12 items 7, 8): plant coefficients, a variable frame rate,
counters from 0, sensor profiles and failure modes the default fleet never has. The default fleet must not move.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pytest

from configs.schema import SCHEMA
from configs.settings import SENSOR_PROFILES, ConfigError, config_from_dict, load_config
from simulation.failures import ALL_FAILURE_MODES, FAILURE_MODES, UNSEEN_FAILURE_MODES, FailureEvent
from simulation.fleet import MS_PER_DAY, observation_window, sample_profile
from simulation.generator import stream_vehicle_batches, vehicle_events, vehicle_sensor_faults
from simulation.writer import write_run

VARIANTS_DIR = Path(__file__).resolve().parents[1] / "configs" / "variants"
BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_domain_shift.py"
SMALL = ["simulation.duration_days_per_vehicle=2", "simulation.frame_interval_s=120", "simulation.sensor_fault_rate_per_day=0"]
# sha256 of the default generator's frames, events and sensor faults (see _default_digest), taken before the
# variants existed: every variant key at its default must leave the default fleet bit-identical.
DEFAULT_FLEET_DIGEST = "a16433e33b9ed9d4b259b210f1cc6f79afafc5f9ee6a4f2ef02bf5b6ab6e2d34"


def _frames(overrides: list[str], index: int = 1, **kwargs) -> pa.Table:
    cfg = load_config(overrides=overrides)
    profile = sample_profile(cfg.simulation, cfg.seed, index)
    return pa.Table.from_batches(list(stream_vehicle_batches(profile, cfg.simulation, cfg.seed, 86400, **kwargs)),
                                 schema=SCHEMA.arrow_schema)


def _taxi_index(overrides: list[str]) -> int:
    cfg = load_config(overrides=overrides)
    return next(i for i in range(50) if sample_profile(cfg.simulation, cfg.seed, i).duty_cycle == "taxi")


def _default_digest() -> str:
    cfg = load_config(overrides=["simulation.duration_days_per_vehicle=3", "simulation.frame_interval_s=120",
                                 "simulation.sensor_fault_rate_per_day=0.5", "simulation.healthy_vehicle_share=0",
                                 "simulation.levers.failure_rate_multiplier=20"])
    digest = hashlib.sha256()
    for i in range(4):
        profile = sample_profile(cfg.simulation, cfg.seed, i)
        for batch in stream_vehicle_batches(profile, cfg.simulation, cfg.seed, 86400):
            for column in batch.columns[1:]:  # vehicle_id (strings) aside: the rest are plain numbers
                digest.update(column.to_numpy(zero_copy_only=False).tobytes())
        digest.update(repr(vehicle_events(profile, cfg.simulation, cfg.seed)).encode())
        digest.update(repr(vehicle_sensor_faults(profile, cfg.simulation, cfg.seed)).encode())
    return digest.hexdigest()


def test_the_default_fleet_is_bit_identical_to_before_the_variants() -> None:
    assert _default_digest() == DEFAULT_FLEET_DIGEST


def test_variable_frame_rate_is_fast_on_trips_slow_parked_and_seq_stays_consecutive() -> None:
    table = _frames([*SMALL, "simulation.frame_interval_s=60", "simulation.driving_frame_interval_s=5"])
    ts = table["ts"].cast(pa.int64()).to_numpy()
    seq = table["seq"].to_numpy()
    speed = table["speed"].to_numpy()
    steps = np.diff(ts)
    assert np.all(np.diff(seq) == 1) and seq[0] == 1
    assert steps.min() == 5000 and steps.max() >= 60_000
    moving = speed[1:] > 5.0
    assert np.median(steps[moving]) == 5000  # driving frames every 5 s
    parked = (speed[1:] == 0) & (speed[:-1] == 0)
    assert np.median(steps[parked]) == 60_000  # parked frames every minute
    start_ms, end_ms = observation_window(load_config(overrides=SMALL).simulation)
    assert ts[0] == start_ms and ts[-1] < end_ms


def test_counters_can_start_at_zero() -> None:
    table = _frames([*SMALL, "simulation.first_seq=0"])
    default = _frames(SMALL)
    assert table["seq"].to_numpy()[0] == 0
    assert np.array_equal(table["seq"].to_numpy() + 1, default["seq"].to_numpy())
    assert table.drop(["seq"]).equals(default.drop(["seq"]))


@pytest.mark.parametrize("profile", sorted(set(SENSOR_PROFILES) - {"full"}))
def test_sensor_profiles_drop_their_columns_and_nothing_else(profile: str) -> None:
    table = _frames([*SMALL, f"simulation.sensor_profile={profile}"])
    default = _frames(SMALL)
    missing = SENSOR_PROFILES[profile]
    assert missing
    for name in SCHEMA.sensor_names:
        values = table[name].to_numpy()
        if name in missing:
            assert np.isnan(values).all(), name
        else:
            assert np.array_equal(values, default[name].to_numpy(), equal_nan=True), name


def test_sensor_faults_on_absent_sensors_are_not_in_the_ground_truth() -> None:
    overrides = ["simulation.duration_days_per_vehicle=60", "simulation.sensor_fault_rate_per_day=1"]
    cfg = load_config(overrides=[*overrides, "simulation.sensor_profile=no_coolant_loop"])
    full = load_config(overrides=overrides)
    profile = sample_profile(cfg.simulation, cfg.seed, 0)
    kept = vehicle_sensor_faults(profile, cfg.simulation, cfg.seed)
    every = vehicle_sensor_faults(profile, full.simulation, full.seed)
    assert {f.field for f in every} & set(SENSOR_PROFILES["no_coolant_loop"])
    assert kept == [f for f in every if f.field not in SENSOR_PROFILES["no_coolant_loop"]]


def test_unknown_sensor_profile_and_field_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="no_brakes"):
        load_config(overrides=["simulation.sensor_profile=no_brakes"])
    with pytest.raises(ConfigError, match="coolant_colour"):
        load_config(overrides=['simulation.absent_sensors=["coolant_colour"]'])
    with pytest.raises(ConfigError, match="charger_state"):
        load_config(overrides=['simulation.absent_sensors=["charger_state"]'])
    with pytest.raises(ConfigError, match="driving_frame_interval_s"):
        load_config(overrides=["simulation.frame_interval_s=60", "simulation.driving_frame_interval_s=7"])


def test_plant_variants_change_the_physics_they_name() -> None:
    base = _frames(SMALL, _taxi_index(SMALL))
    lfp = _frames([*SMALL, "simulation.plant.cell_chemistry=lfp", "simulation.plant.cells_series=110"], _taxi_index(SMALL))
    # LFP at 110 cells: a flat ~3.3 V plateau, so the pack sits near 363 V whatever the SOC.
    cell_v = lfp["pack_voltage"].to_numpy() / 110.0
    assert 3.1 < np.median(cell_v) < 3.4
    assert np.median(base["pack_voltage"].to_numpy() / base["cell_voltage_max"].to_numpy()) > 90
    lossy = _frames([*SMALL, "simulation.plant.drive_efficiency=0.8"], _taxi_index(SMALL))
    driving = base["speed"].to_numpy() > 20
    power = lambda t: np.mean((t["pack_current"].to_numpy() * t["pack_voltage"].to_numpy())[driving])  # noqa: E731
    assert power(lossy) > 1.05 * power(base)
    hot = _frames([*SMALL, "simulation.plant.drivetrain_heating_scale=2"], _taxi_index(SMALL))
    rise = lambda t: np.mean((t["inverter_temp"].to_numpy() - t["ambient_temp"].to_numpy())[driving])  # noqa: E731
    assert rise(hot) > rise(base) + 3.0


def test_unseen_failure_modes_are_off_by_default_and_sampled_when_a_variant_names_them() -> None:
    assert set(UNSEEN_FAILURE_MODES).isdisjoint(FAILURE_MODES)
    assert ALL_FAILURE_MODES[:len(FAILURE_MODES)] == FAILURE_MODES
    overrides = ["simulation.duration_days_per_vehicle=60", "simulation.healthy_vehicle_share=0"]
    default = load_config(overrides=overrides)
    assert not {e.mode for i in range(40) for e in vehicle_events(sample_profile(default.simulation, 7, i),
                                                                  default.simulation, 7)} & set(UNSEEN_FAILURE_MODES)
    rates = dict(default.simulation.failure_mode_rates, wheel_bearing=0.3, hvac_compressor=0.3)
    variant = load_config(overrides=[*overrides, f"simulation.failure_mode_rates={json.dumps(rates)}"])
    seen = {e.mode for i in range(40) for e in vehicle_events(sample_profile(variant.simulation, 7, i), variant.simulation, 7)}
    assert set(UNSEEN_FAILURE_MODES) <= seen
    # The default modes' draws come first: their events do not move when the unseen modes are switched on.
    for i in range(10):
        profile = sample_profile(default.simulation, 7, i)
        old = vehicle_events(profile, default.simulation, 7)
        new = [e for e in vehicle_events(profile, variant.simulation, 7) if e.mode in FAILURE_MODES]
        assert new == old


@pytest.mark.parametrize("mode", UNSEEN_FAILURE_MODES)
def test_unseen_failure_modes_move_their_precursors_before_failure(mode: str) -> None:
    # Hot climate so that the HVAC compressor works; a taxi so that there is driving every day.
    overrides = [*SMALL, "simulation.duration_days_per_vehicle=3", 'simulation.fleet_mix.climates={"hot": 1.0}']
    cfg = load_config(overrides=overrides)
    index = _taxi_index(overrides)
    profile = sample_profile(cfg.simulation, cfg.seed, index)
    _, end_ms = observation_window(cfg.simulation)
    event = FailureEvent(profile.vehicle_id, mode, end_ms - 12 * MS_PER_DAY, end_ms + MS_PER_DAY // 2, 2, False)
    failing = _frames(overrides, index, events=[event], faults=[])
    healthy = _frames(overrides, index, events=[], faults=[])
    last_day = failing["ts"].cast(pa.int64()).to_numpy() >= end_ms - MS_PER_DAY
    driving = (healthy["speed"].to_numpy() > 20) & last_day
    mean = lambda t, name: float(np.mean(t[name].to_numpy()[driving]))  # noqa: E731
    if mode == "wheel_bearing":
        energy = lambda t: float(np.mean((t["pack_current"].to_numpy() * t["pack_voltage"].to_numpy())[driving]))  # noqa: E731
        assert energy(failing) > 1.08 * energy(healthy)
        assert mean(failing, "brake_temp") > mean(healthy, "brake_temp") + 2.0
    else:
        assert mean(failing, "hvac_power") > 1.5 * mean(healthy, "hvac_power")


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_domain_shift", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_variant_config_merges_over_the_base_and_names_what_it_changes() -> None:
    bench = _bench()
    base = json.loads((VARIANTS_DIR.parent / "benchmark.json").read_text())
    paths = sorted(VARIANTS_DIR.glob("*.json"))
    assert len(paths) >= 8
    profiles, plants = set(), set()
    for path in paths:
        document, description = bench.variant_document(base, path)
        assert description, path
        cfg = config_from_dict(document)
        assert cfg.dataset == config_from_dict(base).dataset  # windows must match the trained model's
        profiles.add(cfg.simulation.sensor_profile)
        plants.add(cfg.simulation.plant)
    assert {"no_coolant_loop", "no_drivetrain", "no_gps_dcdc"} <= profiles
    assert len(plants) >= 4  # default plus three physics variants


def test_deep_merge_keeps_what_the_change_does_not_name_and_publish_replaces_between_markers(tmp_path: Path) -> None:
    bench = _bench()
    merged = bench.deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"c": 5}})
    assert merged == {"a": {"b": 1, "c": 5}, "d": 3}
    target = tmp_path / "README.md"
    target.write_text("# Title\n\ntext\n")
    bench.publish("| first |\n", target, "### Domain shift")
    bench.publish("| second |\n", target, "### Domain shift")
    text = target.read_text()
    assert text.count("### Domain shift") == 1 and "| second |" in text and "| first |" not in text
    assert text.startswith("# Title\n\ntext\n")


def test_a_fast_driving_frame_rate_keeps_the_energy_per_km_of_the_default_rate() -> None:
    """Same trips, finer sampling: energy per km must agree (white speed noise at 1 Hz would inflate it)."""
    def kwh_per_km(overrides: list[str]) -> float:
        table = _frames([*SMALL, "simulation.frame_interval_s=60", *overrides], index=2)
        ts = table["ts"].cast(pa.int64()).to_numpy()
        hours = np.diff(ts, append=ts[-1]) / 3.6e6
        moving = table["speed"].to_numpy() > 0
        power_kw = table["pack_current"].to_numpy() * table["pack_voltage"].to_numpy() / 1000.0
        odometer = table["odometer"].to_numpy()
        return float(np.sum((power_kw * hours)[moving]) / (odometer[-1] - odometer[0]))

    coarse, fine = kwh_per_km([]), kwh_per_km(["simulation.driving_frame_interval_s=1"])
    assert 0.08 < coarse < 0.4
    assert fine == pytest.approx(coarse, rel=0.05)


def test_the_manifest_counts_unseen_modes_only_where_a_variant_has_them(tmp_path: Path) -> None:
    base = [*SMALL, "simulation.num_vehicles=6", "simulation.duration_days_per_vehicle=20",
            "simulation.healthy_vehicle_share=0", "simulation.frame_interval_s=1800"]
    default = write_run(load_config(overrides=base), tmp_path / "default", workers=1)
    assert set(default.manifest["events_by_mode"]) == set(FAILURE_MODES)
    rates = {mode: 0.0 for mode in FAILURE_MODES} | {"wheel_bearing": 0.9}
    variant = write_run(load_config(overrides=[*base, f"simulation.failure_mode_rates={json.dumps(rates)}"]),
                        tmp_path / "variant", workers=1)
    assert variant.manifest["events_by_mode"]["wheel_bearing"] > 0
    assert "hvac_compressor" not in variant.manifest["events_by_mode"]
