"""Precursor plots: for each failure mode, a failing vehicle against healthy ones in the weeks before failure.

The plots are how a reliability engineer judges whether the generator is believable. Each figure runs a
dedicated simulation with the run's own configuration (physics, levers, fleet mix): one vehicle is
given a failure of the mode (severity 2, failing on day ``PLOT_DAYS - 2``), and is drawn against the
*same* vehicle without the failure (its healthy counterfactual: same trips, weather and charging) and
against another healthy vehicle of the fleet. Values are 6-hour means over the frames where the
signal means something (e.g. while driving). Files: ``<run>/plots/<mode>.png``.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from configs.frames import Columns
from configs.runs import CONFIG_FILE, PLOTS
from configs.settings import Config, config_from_dict
from simulation.failures import FAILURE_MODES, MODE_SPECS, FailureEvent
from simulation.fleet import MS_PER_DAY, VehicleProfile, observation_window, sample_profile
from simulation.generator import simulate_vehicle

PLOT_DAYS = 35
PLOT_FRAME_INTERVAL_S = 60.0
BIN_MS = 6 * 3_600_000
View = tuple[str, Callable[[Columns], tuple[np.ndarray, np.ndarray]]]


def _driving(c: Columns) -> np.ndarray:
    return c["speed"] > 5.0


def _pumping(c: Columns) -> np.ndarray:
    return c["coolant_flow"] > 0.5


def _parked(c: Columns) -> np.ndarray:
    return (c["speed"] == 0.0) & (c["charger_state"] == 0) & (c["dcdc_current"] == 0.0)


def _all(c: Columns) -> np.ndarray:
    return np.ones(c["speed"].shape, dtype=bool)


def _tyre_pressure(w: str) -> Callable[[Columns], tuple[np.ndarray, np.ndarray]]:
    return lambda c: (c[f"tyre_pressure_{w}"], _all(c))


# Per mode: (label, f(columns) -> (values, frames where the value is meaningful)).
PRECURSOR_VIEWS: dict[str, list[View]] = {
    "cell_imbalance": [
        ("cell voltage spread, driving (mV)", lambda c: ((c["cell_voltage_max"] - c["cell_voltage_min"]) * 1000, _driving(c))),
        ("SOH (%)", lambda c: (c["soh"], _all(c))),
    ],
    "coolant_pump": [
        ("coolant flow per 1000 rpm (L/min)", lambda c: (c["coolant_flow"] / np.maximum(c["pump_speed"], 1) * 1000, _pumping(c))),
        ("pump speed, pumping (rpm)", lambda c: (c["pump_speed"], _pumping(c))),
        ("coolant out - in, pumping (K)", lambda c: (c["coolant_temp_out"] - c["coolant_temp_in"], _pumping(c))),
        ("max cell temp - ambient, pumping (K)", lambda c: (c["cell_temp_max"] - c["ambient_temp"], _pumping(c))),
    ],
    "internal_resistance": [
        ("BMS internal resistance (mOhm)", lambda c: (c["internal_resistance"], _all(c))),
        ("min cell voltage, driving (V)", lambda c: (c["cell_voltage_min"], _driving(c))),
        ("avg cell temp - ambient, driving (K)", lambda c: (c["cell_temp_avg"] - c["ambient_temp"], _driving(c))),
    ],
    "inverter_overheat": [
        ("inverter - coolant in, driving (K)", lambda c: (c["inverter_temp"] - c["coolant_temp_in"], _driving(c))),
        ("inverter temp, driving (degC)", lambda c: (c["inverter_temp"], _driving(c))),
    ],
    "motor_bearing": [
        ("motor - coolant in, driving (K)", lambda c: (c["motor_temp"] - c["coolant_temp_in"], _driving(c))),
        ("motor torque at > 40 km/h (Nm)", lambda c: (c["motor_torque"], c["speed"] > 40.0)),
    ],
    "brake_wear": [
        ("brake pad wear (%)", lambda c: (c["brake_pad_wear"], _all(c))),
        ("brake temp - ambient, driving (K)", lambda c: (c["brake_temp"] - c["ambient_temp"], _driving(c))),
    ],
    "tyre_slow_leak": [
        (f"tyre pressure {w} (kPa)", _tyre_pressure(w))
        for w in ("fl", "fr", "rl", "rr")
    ],
    "aux_battery": [
        ("12 V voltage, asleep (V)", lambda c: (c["aux_battery_voltage"], _parked(c))),
        ("DC-DC current, awake (A)", lambda c: (c["dcdc_current"], c["dcdc_current"] > 0.0)),
    ],
}


def _binned(columns: Columns, ts: np.ndarray, view: View, start_ms: int, bins: int) -> np.ndarray:
    values, mask = view[1](columns)
    mask = mask & np.isfinite(values)
    index = ((ts - start_ms) // BIN_MS)[mask]
    total = np.bincount(index, weights=values[mask], minlength=bins)[:bins]
    count = np.bincount(index, minlength=bins)[:bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _simulate(profile: VehicleProfile, config: Config, events: list[FailureEvent]) -> tuple[np.ndarray, Columns]:
    chunks = list(simulate_vehicle(profile, config.simulation, config.seed, events=events, faults=[]))
    ts = np.concatenate([c.ts_ms for c in chunks])
    columns = {name: np.concatenate([c.columns[name] for c in chunks]).astype(np.float64) for name in chunks[0].columns}
    return ts, columns


def plot_config(config: Config, days: float = PLOT_DAYS, frame_interval_s: float = PLOT_FRAME_INTERVAL_S) -> Config:
    """The run's configuration, stretched to ``days`` days at a coarse frame interval."""
    document = config.model_dump(mode="json")
    document["simulation"]["duration_days_per_vehicle"] = days
    document["simulation"]["frame_interval_s"] = frame_interval_s
    return config_from_dict(document)


def _pick_vehicles(config: Config, mode: str) -> tuple[VehicleProfile, VehicleProfile]:
    """A vehicle that uses the failing part a lot (taxi or delivery for drivetrain and brakes), and another."""
    wanted = ("taxi",) if MODE_SPECS[mode].subsystem in ("drivetrain", "chassis", "thermal") else None
    profiles = [sample_profile(config.simulation, config.seed, i) for i in range(40)]
    failing = next((p for p in profiles if wanted is None or p.duty_cycle in wanted), profiles[0])
    other = next(p for p in profiles if p.index != failing.index)
    return failing, other


def failure_for_plot(profile: VehicleProfile, config: Config, mode: str, severity: int = 2) -> FailureEvent:
    """The failure shown: two days before the end of the window, with the longest lead that fits."""
    start_ms, end_ms = observation_window(config.simulation)
    failure_ms = end_ms - 2 * MS_PER_DAY
    window_days = (end_ms - start_ms) / MS_PER_DAY
    lead_days = max(1.0, min(MODE_SPECS[mode].lead_days[1], window_days - 6))
    component = "rl" if mode == "tyre_slow_leak" else ""
    return FailureEvent(profile.vehicle_id, mode, failure_ms - int(lead_days * MS_PER_DAY), failure_ms, severity,
                        True, component)


def plot_mode(config: Config, mode: str, path: Path) -> Path:
    """Write one figure: the mode's precursor views, failing vs healthy counterfactual vs another vehicle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    failing, other = _pick_vehicles(config, mode)
    event = failure_for_plot(failing, config, mode)
    start_ms, end_ms = observation_window(config.simulation)
    bins = int(-(-(end_ms - start_ms) // BIN_MS))
    x = (start_ms + (np.arange(bins) + 0.5) * BIN_MS - event.failure_ms) / MS_PER_DAY
    series = [
        (f"{failing.vehicle_id} failing ({failing.duty_cycle}, {failing.climate})", "tab:red",
         _simulate(failing, config, [event])),
        (f"{failing.vehicle_id} healthy counterfactual", "tab:blue", _simulate(failing, config, [])),
        (f"{other.vehicle_id} healthy ({other.duty_cycle}, {other.climate})", "0.6", _simulate(other, config, [])),
    ]
    views = PRECURSOR_VIEWS[mode]
    fig, axes = plt.subplots(len(views), 1, figsize=(10, 2.4 * len(views) + 0.8), sharex=True, squeeze=False)
    for ax, view in zip(axes[:, 0], views, strict=False):
        for label, colour, (ts, columns) in series:
            ax.plot(x, _binned(columns, ts, view, start_ms, bins), color=colour, lw=1.3, label=label)
        ax.axvline((event.onset_ms - event.failure_ms) / MS_PER_DAY, color="tab:orange", ls="--", lw=1)
        ax.axvline(0.0, color="black", lw=1)
        ax.set_ylabel(view[0], fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("days relative to failure (orange dashed: onset, black: failure; then 2 days repair)")
    fig.suptitle(f"{mode} (severity {event.severity}): {MODE_SPECS[mode].signature}", fontsize=9, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_precursor_plots(run_dir: str | Path, modes: tuple[str, ...] = FAILURE_MODES, days: float = PLOT_DAYS,
                          frame_interval_s: float = PLOT_FRAME_INTERVAL_S) -> list[Path]:
    """One PNG per failure mode under ``<run_dir>/plots/``, using the run's configuration."""
    run = Path(run_dir)
    config = plot_config(config_from_dict(json.loads((run / CONFIG_FILE).read_text())), days, frame_interval_s)
    out = run / PLOTS
    out.mkdir(parents=True, exist_ok=True)
    return [plot_mode(config, mode, out / f"{mode}.png") for mode in modes]
