"""Frames of the synthetic fleet: determinism, ranges, failure precursors, levers, the run directory, the CLI.

Small on purpose: a few vehicles, a day or three, coarse frame intervals (config overrides).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from configs import runs
from configs.schema import SCHEMA
from configs.settings import Config, load_config
from serving.cli import main
from simulation.failures import FAILURE_MODES, FailureEvent
from simulation.fleet import MS_PER_DAY, observation_window, sample_profile, sample_profiles
from simulation.generator import stream_vehicle_batches, vehicle_events, vehicle_sensor_faults
from simulation.writer import write_run

SMALL = ["simulation.duration_days_per_vehicle=2", "simulation.frame_interval_s=120"]


def config(*overrides: str) -> Config:
    return load_config(overrides=[*SMALL, *overrides])


def frames(cfg: Config, index: int, batch_seconds: float = 86400, **kwargs) -> pa.Table:
    profile = sample_profile(cfg.simulation, cfg.seed, index)
    return pa.Table.from_batches(list(stream_vehicle_batches(profile, cfg.simulation, cfg.seed, batch_seconds, **kwargs)),
                                 schema=SCHEMA.arrow_schema)


def columns(table: pa.Table) -> dict[str, np.ndarray]:
    out = {name: table[name].to_numpy() for name in SCHEMA.sensor_names}
    out["ts"] = table["ts"].cast(pa.int64()).to_numpy()
    return out


def test_same_seed_gives_identical_frames_and_another_seed_does_not() -> None:
    cfg = config("simulation.sensor_fault_rate_per_day=0.5")
    assert frames(cfg, 1).equals(frames(cfg, 1))
    other = config("simulation.sensor_fault_rate_per_day=0.5", "seed=8")
    assert not frames(cfg, 1).equals(frames(other, 1))


def test_a_vehicles_frames_do_not_depend_on_fleet_size() -> None:
    small, large = config("simulation.num_vehicles=2"), config("simulation.num_vehicles=9")
    a = sample_profiles(small.simulation, small.seed)[1]
    b = sample_profiles(large.simulation, large.seed)[1]
    stream = lambda cfg, p: pa.Table.from_batches(list(stream_vehicle_batches(p, cfg.simulation, cfg.seed)))  # noqa: E731
    assert stream(small, a).equals(stream(large, b))


def test_batches_are_time_ordered_schema_conformant_and_independent_of_batch_size() -> None:
    cfg = config()
    profile = sample_profile(cfg.simulation, cfg.seed, 0)
    batches = list(stream_vehicle_batches(profile, cfg.simulation, cfg.seed, batch_seconds=1800))
    start_ms, end_ms = observation_window(cfg.simulation)
    assert len(batches) == 2 * 48
    assert all(b.schema.equals(SCHEMA.arrow_schema) for b in batches)
    table = pa.Table.from_batches(batches)
    seq = table["seq"].to_numpy()
    ts = table["ts"].cast(pa.int64()).to_numpy()
    assert np.all(np.diff(seq) == 1) and np.all(np.diff(ts) == 120_000)
    assert ts[0] == start_ms and ts[-1] < end_ms
    assert table.equals(frames(cfg, 0, batch_seconds=5 * 86400))


def test_all_values_lie_in_the_schema_ranges_except_injected_sensor_faults() -> None:
    cfg = config("simulation.num_vehicles=4", "simulation.sensor_fault_rate_per_day=0.5",
                 "simulation.duration_days_per_vehicle=3")
    names = list(SCHEMA.sensor_names)
    faults_seen = 0
    for profile in sample_profiles(cfg.simulation, cfg.seed):
        cols = columns(frames(cfg, profile.index))
        values = np.column_stack([cols[n] for n in names])
        bad = SCHEMA.out_of_range(values)
        for fault in vehicle_sensor_faults(profile, cfg.simulation, cfg.seed):
            inside = (cols["ts"] >= fault.start_ms) & (cols["ts"] < fault.end_ms)
            bad[inside, names.index(fault.field)] = False
            faults_seen += 1
        assert not bad.any(), [names[j] for j in np.flatnonzero(bad.any(axis=0))]
    assert faults_seen > 0


def test_sensor_faults_show_as_dropouts_stuck_values_drift_and_spikes() -> None:
    cfg = config("simulation.num_vehicles=1", "simulation.sensor_fault_rate_per_day=0")
    profile = sample_profile(cfg.simulation, cfg.seed, 0)
    start_ms, _ = observation_window(cfg.simulation)
    hour = 3_600_000
    from simulation.failures import SensorFault

    faults = [
        SensorFault(profile.vehicle_id, "dropout", "soc", start_ms + 2 * hour, start_ms + 4 * hour),
        SensorFault(profile.vehicle_id, "stuck", "ambient_temp", start_ms + 20 * hour, start_ms + 30 * hour),
        SensorFault(profile.vehicle_id, "drift", "coolant_temp_in", start_ms + 6 * hour, start_ms + 30 * hour, 10.0),
        SensorFault(profile.vehicle_id, "spike", "pack_voltage", start_ms, start_ms + 40 * hour, 400.0),
    ]
    clean = columns(frames(cfg, 0, faults=[]))
    dirty = columns(frames(cfg, 0, faults=faults))
    ts = clean["ts"]
    within = lambda f: (ts >= f.start_ms) & (ts < f.end_ms)  # noqa: E731
    assert np.isnan(dirty["soc"][within(faults[0])]).all() and not np.isnan(dirty["soc"][~within(faults[0])]).any()
    stuck = dirty["ambient_temp"][within(faults[1])]
    assert np.all(stuck == stuck[0]) and np.std(clean["ambient_temp"][within(faults[1])]) > 0.5
    drift = dirty["coolant_temp_in"] - clean["coolant_temp_in"]
    assert drift[within(faults[2])][-1] == pytest.approx(10.0, abs=0.2) and drift[~within(faults[2])].max() == 0
    jumps = dirty["pack_voltage"] - clean["pack_voltage"]
    assert 0 < np.sum(jumps > 399) < 0.1 * within(faults[3]).sum()
    for name in SCHEMA.sensor_names:  # nothing else was touched
        if name not in {f.field for f in faults}:
            np.testing.assert_array_equal(dirty[name], clean[name])


def _taxi_index(cfg: Config) -> int:
    return next(i for i in range(50) if sample_profile(cfg.simulation, cfg.seed, i).duty_cycle == "taxi")


def _precursor(mode: str, c: dict[str, np.ndarray], component: str) -> float:
    """The signal a reliability engineer would watch for ``mode`` (larger = more degraded)."""
    driving = c["speed"] > 5
    pumping = c["coolant_flow"] > 0.5
    asleep = (c["speed"] == 0) & (c["dcdc_current"] == 0)
    stats = {
        "cell_imbalance": lambda: np.mean(c["cell_voltage_max"] - c["cell_voltage_min"]) * 1000,
        "coolant_pump": lambda: -np.mean(c["coolant_flow"][pumping] / c["pump_speed"][pumping]) * 1000,
        "internal_resistance": lambda: np.mean(c["internal_resistance"]),
        "inverter_overheat": lambda: np.mean(c["inverter_temp"][driving] - c["coolant_temp_in"][driving]),
        "motor_bearing": lambda: np.mean(c["motor_temp"][driving] - c["coolant_temp_in"][driving]),
        "brake_wear": lambda: np.max(c["brake_pad_wear"]),
        "tyre_slow_leak": lambda: -np.mean(c[f"tyre_pressure_{component}"]),
        "aux_battery": lambda: -np.min(c["aux_battery_voltage"][asleep]),
    }
    return float(stats[mode]())


# Smallest move of the precursor (failing minus healthy, precursor units) in the last day before failure.
MIN_MOVE = {"cell_imbalance": 20.0, "coolant_pump": 0.8, "internal_resistance": 25.0, "inverter_overheat": 2.0,
            "motor_bearing": 2.0, "brake_wear": 15.0, "tyre_slow_leak": 30.0, "aux_battery": 0.1}


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_each_failure_modes_precursor_moves_before_failure_against_the_healthy_vehicle(mode: str) -> None:
    cfg = config("simulation.duration_days_per_vehicle=3", "simulation.sensor_fault_rate_per_day=0")
    index = _taxi_index(cfg)
    profile = sample_profile(cfg.simulation, cfg.seed, index)
    _, end_ms = observation_window(cfg.simulation)
    component = "rl"
    # Latent failure half a day after the window: the whole window is degrading, no repair inside it.
    event = FailureEvent(profile.vehicle_id, mode, end_ms - 12 * MS_PER_DAY, end_ms + MS_PER_DAY // 2, 2, False,
                         component if mode == "tyre_slow_leak" else "")
    failing = columns(frames(cfg, index, events=[event], faults=[]))
    healthy = columns(frames(cfg, index, events=[], faults=[]))
    last_day = failing["ts"] >= end_ms - MS_PER_DAY
    early = failing["ts"] < observation_window(cfg.simulation)[0] + MS_PER_DAY // 2
    pick = lambda c, m: {k: v[m] for k, v in c.items()}  # noqa: E731
    move_late = _precursor(mode, pick(failing, last_day), component) - _precursor(mode, pick(healthy, last_day), component)
    move_early = _precursor(mode, pick(failing, early), component) - _precursor(mode, pick(healthy, early), component)
    assert move_late > MIN_MOVE[mode]
    assert move_late > move_early  # it grows towards the failure


def test_levers_change_the_frames() -> None:
    base = config("simulation.sensor_fault_rate_per_day=0", "simulation.duration_days_per_vehicle=3")
    warm = config("simulation.sensor_fault_rate_per_day=0", "simulation.duration_days_per_vehicle=3",
                  "simulation.levers.ambient_offset_c=10")
    old = config("simulation.sensor_fault_rate_per_day=0", "simulation.duration_days_per_vehicle=3",
                 "simulation.levers.pack_age_offset_years=8")
    fast = config("simulation.sensor_fault_rate_per_day=0", "simulation.duration_days_per_vehicle=3",
                  "simulation.levers.dc_fast_charge_share=1")
    index = _taxi_index(base)
    b, w, o, f = (columns(frames(c, index)) for c in (base, warm, old, fast))
    assert np.mean(w["ambient_temp"] - b["ambient_temp"]) == pytest.approx(10.0, abs=0.1)
    assert np.mean(w["hvac_power"]) != np.mean(b["hvac_power"])
    assert np.mean(o["internal_resistance"]) > 1.3 * np.mean(b["internal_resistance"])
    assert np.mean(o["soh"]) < np.mean(b["soh"]) - 5
    assert np.sum(f["charger_state"] == 2) > np.sum(b["charger_state"] == 2)


def test_physics_is_physics() -> None:
    cfg = config("simulation.sensor_fault_rate_per_day=0", "simulation.duration_days_per_vehicle=3")
    c = columns(frames(cfg, _taxi_index(cfg)))
    driving, charging = c["speed"] > 20, np.isin(c["charger_state"], (1, 2))
    assert driving.any() and charging.any()
    # SOC falls while driving and rises while charging.
    dsoc = np.diff(c["soc"])
    assert np.mean(dsoc[driving[1:]]) < 0 < np.mean(dsoc[charging[1:]])
    # Current is positive (discharge) when driving, negative when charging; voltage sags under load.
    assert np.mean(c["pack_current"][driving]) > 0 > np.mean(c["pack_current"][charging])
    # Odometer never decreases and grows with speed.
    assert np.all(np.diff(c["odometer"]) >= 0)
    assert np.corrcoef(c["motor_speed"], c["speed"])[0, 1] > 0.99
    # Tyres warm (and pressures rise) while driving.
    assert np.mean(c["tyre_pressure_fl"][driving]) > np.mean(c["tyre_pressure_fl"][c["speed"] == 0])


def test_streamed_frames_equal_the_written_parquet_and_events(tmp_path: Path) -> None:
    cfg = config("simulation.num_vehicles=3", "simulation.sensor_fault_rate_per_day=0.3",
                 "simulation.healthy_vehicle_share=0", "simulation.levers.failure_rate_multiplier=20")
    summary = write_run(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert runs.list_vehicles(run) == ["EV000000", "EV000001", "EV000002"]
    for profile in sample_profiles(cfg.simulation, cfg.seed):
        assert runs.read_vehicle_frames(run, profile.vehicle_id).equals(frames(cfg, profile.index, 3600))
    events = runs.read_events(run).to_pylist()
    expected = [e for p in sample_profiles(cfg.simulation, cfg.seed) for e in vehicle_events(p, cfg.simulation, cfg.seed)]
    assert len(events) == len(expected) > 0
    assert [(e["vehicle_id"], e["mode"], e["onset_ms"], e["failure_ms"], e["severity"], e["observed"]) for e in events] \
        == [(e.vehicle_id, e.mode, e.onset_ms, e.failure_ms, e.severity, e.observed) for e in expected]
    manifest = runs.read_manifest(run)
    assert manifest["rows"]["raw_frames"] == summary.frames == 3 * 2 * 720
    assert manifest["rows"]["hourly"] == runs.read_aggregates(run, "hourly").num_rows == 3 * 48
    assert manifest["config_hash"] == cfg.content_hash()
    assert json.loads((run / "config.json").read_text()) == cfg.model_dump(mode="json")
    daily = runs.read_aggregates(run, "daily", "EV000001")
    raw = runs.read_vehicle_frames(run, "EV000001")
    first_day = raw.slice(0, 720)["speed"].to_numpy()
    assert daily["speed_max"][0].as_py() == pytest.approx(float(np.nanmax(first_day)))


def test_output_does_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    cfg = config("simulation.num_vehicles=3", "simulation.duration_days_per_vehicle=1")
    write_run(cfg, tmp_path / "one", workers=1)
    write_run(cfg, tmp_path / "two", workers=2)
    for vehicle in runs.list_vehicles(tmp_path / "one"):
        assert runs.read_vehicle_frames(tmp_path / "one", vehicle).equals(runs.read_vehicle_frames(tmp_path / "two", vehicle))
    assert (tmp_path / "one" / "manifest.json").read_text() == (tmp_path / "two" / "manifest.json").read_text()


def test_cli_generates_and_refuses_to_overwrite_without_flag(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    args = ["generate", "--set", "simulation.num_vehicles=2", "--set", "simulation.duration_days_per_vehicle=1",
            "--set", "simulation.frame_interval_s=300", "--out", str(out), "--workers", "1"]
    assert main(args) == 0
    manifest = (out / "manifest.json").read_text()
    assert main(args) == 2  # refused
    assert (out / "manifest.json").read_text() == manifest
    assert main([*args, "--overwrite"]) == 0
    precious = tmp_path / "not-a-run"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main([*args[:-3], str(precious), "--overwrite"]) == 2
    assert (precious / "notes.txt").read_text() == "keep me"


def test_plots_are_written_per_failure_mode(tmp_path: Path) -> None:
    from simulation.plots import write_precursor_plots

    cfg = config("simulation.num_vehicles=1", "simulation.duration_days_per_vehicle=1")
    write_run(cfg, tmp_path / "run")
    written = write_precursor_plots(tmp_path / "run", modes=("tyre_slow_leak",), days=8, frame_interval_s=600)
    assert written == [tmp_path / "run" / "plots" / "tyre_slow_leak.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
