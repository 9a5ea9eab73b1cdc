"""The vectorised fleet generator: one vehicle, one UTC day at a time, numpy over the day's frames.

Each vehicle lives its days: a duty-cycle plan of trips and parking, charging decided from the state of
charge at each stop (AC at home or depot, DC fast charging by the scenario's share), and physics
(``simulation.physics``) that turns speed, ambient and charging into every telemetry field. Failure
degradations (``simulation.failures``) change the physics' parameters; sensor faults corrupt the
measured values afterwards. State (SOC, temperatures, odometer, charging session...) is carried from
one day to the next, so memory does not grow with duration, and each vehicle's randomness comes from
its own streams ``(seed, vehicle_index, ...)``, so a vehicle does not depend on the fleet size.

``stream_vehicle_batches`` is the one code path: the Parquet writer consumes the same day chunks.

>>> from configs.settings import AmbientWindow, SimulationConfig
>>> from simulation.fleet import sample_profile
>>> cfg = SimulationConfig(duration_days_per_vehicle=0.5, frame_interval_s=60)
>>> batches = list(stream_vehicle_batches(sample_profile(cfg, 1, 0), cfg, seed=1, batch_seconds=3600))
>>> len(batches), batches[0].num_rows, batches[0].schema.names[:3]
(12, 60, ['vehicle_id', 'ts', 'seq'])
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from configs.frames import FrameBatch, frames_matrix, vehicle_record_batch
from configs.schema import SCHEMA
from configs.settings import AmbientWindow, PlantVariant, SimulationConfig
from simulation import physics
from simulation.failures import (
    EFFECT_NEUTRAL,
    SPIKE_FRAME_SHARE,
    FailureEvent,
    SensorFault,
    mode_effects,
    sample_sensor_faults,
    sample_vehicle_failures,
)
from simulation.fleet import (
    CLIMATES,
    MS_PER_DAY,
    STREAM_CHUNK,
    STREAM_NOISE,
    STREAM_WEATHER,
    VehicleProfile,
    frame_count,
    frame_interval_ms,
    observation_window,
    resistance_at_start,
    soh_at_start,
)

__all__ = [
    "VehicleChunk", "VehicleSimulation", "observation_window", "simulate_vehicle", "stream_vehicle_batches", "vehicle_events",
    "vehicle_sensor_faults",
]

MS_PER_HOUR = 3_600_000
PARK_DRAWS = 96  # uniform draws reserved per day for charging decisions (common random numbers)
FIELD_RANGES: dict[str, tuple[float, float]] = {f.name: (f.min, f.max) for f in SCHEMA.fields}
_FLOAT_RANGES = tuple((f.name, (f.min, f.max)) for f in SCHEMA.fields if f.dtype.startswith("float"))
# np.clip of a float array with both bounds is this ufunc (numpy._core._methods._clip); called directly,
# without np.clip's dispatch layers (~35 calls a day, a tenth of the day's fixed cost), same bits.
# Every float field has both bounds (checked here), which is the only case the ufunc covers.
# numpy-internal: fall back to the public np.clip (same bits, slower) if a numpy upgrade moves it.
_clip_ufunc = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", np.clip)
assert all(low is not None and high is not None for _, (low, high) in _FLOAT_RANGES)
# Measurement noise (1 sigma, field units) of each sensor.
NOISE_SD: dict[str, float] = {
    "pack_voltage": 0.3, "pack_current": 0.5, "soc": 0.02, "soh": 0.03, "cell_voltage_min": 0.002,
    "cell_voltage_max": 0.002, "cell_temp_min": 0.15, "cell_temp_max": 0.15, "cell_temp_avg": 0.1,
    "internal_resistance": 0.4, "insulation_resistance": 25.0, "coolant_temp_in": 0.15,
    "coolant_temp_out": 0.15, "coolant_flow": 0.08, "pump_speed": 12.0, "hvac_power": 0.02, "motor_speed": 4.0,
    "motor_torque": 1.0, "motor_temp": 0.3, "inverter_temp": 0.3, "tyre_pressure_fl": 0.4,
    "tyre_pressure_fr": 0.4, "tyre_pressure_rl": 0.4, "tyre_pressure_rr": 0.4, "brake_temp": 0.5,
    "aux_battery_voltage": 0.01, "dcdc_current": 0.3, "charge_power": 0.1, "ambient_temp": 0.1,
}
_NOISY = tuple(NOISE_SD)
# Signals that are exactly zero when the part is idle carry no noise then.
_NOISE_ONLY_WHEN = {"motor_speed": "drive", "motor_torque": "drive", "coolant_flow": "pumping",
                    "pump_speed": "pumping", "charge_power": "charging", "hvac_power": "drive",
                    "dcdc_current": "awake"}
TYRE_OFFSETS_KPA = {"fl": 0.0, "fr": 2.0, "rl": -3.0, "rr": -1.0}
TYRE_NATURAL_LOSS_KPA_PER_DAY = 0.05
DEFAULT_PLANT = PlantVariant()  # the training fleet's physics coefficients
SPEED_NOISE_TAU_S = 30.0  # correlation time of speed noise under a variable (fast driving) frame rate


def vehicle_events(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int,
                   ambient_windows: Sequence[AmbientWindow] = ()) -> list[FailureEvent]:
    """Ground-truth failures of one vehicle (observed and latent), sorted by failure time.

    ``ambient_windows`` (what-if scenarios) raise the ambient, and so the hazards, for a while; the
    frames of those days must then come from the generator with the same offset and these events.
    """
    return sample_vehicle_failures(profile, sim_cfg, seed, ambient_windows=ambient_windows)


def vehicle_sensor_faults(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int) -> list[SensorFault]:
    """Sensor faults injected into one vehicle's frames (anomalies that are not failures).

    Faults drawn on a sensor the vehicles do not fit (``sim_cfg.missing_sensors``) are left out: nothing
    could show them. The draws are the same either way, so the other faults do not move.
    """
    faults = sample_sensor_faults(profile, sim_cfg, seed, FIELD_RANGES)
    missing = set(sim_cfg.missing_sensors)
    return [f for f in faults if f.field not in missing] if missing else faults


@dataclass(frozen=True)
class VehicleChunk:
    """One simulated UTC day of one vehicle: frame columns as numpy arrays in schema dtypes.

    The storage form, not a second in-process batch: it keeps the schema dtypes (float64 odometer, latitude,
    longitude) the Parquet files and Arrow streams carry; ``frames()`` is the ``configs.frames.FrameBatch`` the
    twins take (see that module for why both exist).
    """

    vehicle_id: str
    day_index: int
    seq: np.ndarray  # int64
    ts_ms: np.ndarray  # int64
    columns: dict[str, np.ndarray]  # SCHEMA.sensor_names -> values

    @property
    def num_rows(self) -> int:
        return int(self.ts_ms.shape[0])

    def frames(self) -> FrameBatch:
        """The day as the in-process batch: what ``FrameBatch.from_columns(self.to_record_batch())`` gives, without Arrow."""
        return FrameBatch.of_vehicle(self.vehicle_id, self.seq, self.ts_ms, frames_matrix(self.columns, self.num_rows))

    def to_record_batch(self) -> pa.RecordBatch:
        return vehicle_record_batch(self.vehicle_id, self.ts_ms, self.seq, self.columns)


@dataclass
class _State:
    """What one day hands to the next."""

    soc: float
    soh: float
    odometer_km: float
    brake_wear_base: float
    pack_temp: float
    pack_temp_free: float
    coolant_in: float
    coolant_delta: float
    motor_temp: float
    inverter_temp: float
    brake_temp: float
    tyre_temp: float
    awake: bool = False
    last_change_s: float = -8 * 3600.0  # seconds since window start of the last wake/sleep change
    session: tuple[str, float, float] | None = None  # ongoing charging: (kind, power_kw, target_soc)
    stuck_values: dict[int, float] = field(default_factory=dict)
    frames_emitted: int = 0  # frames handed out so far (the seq counter under a variable frame rate)


@dataclass(frozen=True)
class _Trips:
    """Trips of one day as frame index ranges of the chunk plus their driving style."""

    start: np.ndarray
    end: np.ndarray
    cruise_kmh: np.ndarray
    urban: np.ndarray
    phases: np.ndarray  # (trips, 3)
    periods: np.ndarray  # (trips, 3) seconds


def _weather(profile: VehicleProfile, seed: int, n_days: int) -> tuple[np.ndarray, float]:
    """Daily mean ambient (degC) at each day's midpoint (with one day of margin each side), initial SOC."""
    rng = np.random.default_rng([seed, profile.index, STREAM_WEATHER])
    climate = CLIMATES[profile.climate]
    shocks = rng.standard_normal(n_days + 2)
    anomaly = np.empty(n_days + 2)
    level = shocks[0] * climate["weather_sd_c"]
    for i, shock in enumerate(shocks):  # AR(1) weather: a warm day is followed by a warm day
        level = 0.7 * level + np.sqrt(1 - 0.49) * climate["weather_sd_c"] * shock if i else level
        anomaly[i] = level
    initial_soc = 50.0 + 40.0 * rng.random()
    return climate["mean_c"] + profile.ambient_offset_c + anomaly, float(initial_soc)


def _initial_state(profile: VehicleProfile, daily_mean0: float, initial_soc: float) -> _State:
    return _State(
        soc=initial_soc, soh=soh_at_start(profile), odometer_km=profile.initial_odometer_km,
        brake_wear_base=profile.initial_brake_wear_pct, pack_temp=daily_mean0, pack_temp_free=daily_mean0,
        coolant_in=daily_mean0, coolant_delta=0.0, motor_temp=daily_mean0, inverter_temp=daily_mean0,
        brake_temp=daily_mean0, tyre_temp=daily_mean0,
    )


# --------------------------------------------------------------------------------------------- plans


def _trip_hours(profile: VehicleProfile, rng: np.random.Generator, weekday: int) -> list[tuple[float, float, float, bool]]:
    """(start hour UTC, duration h, cruise km/h, urban) of each trip of the day, by duty cycle."""
    aggressive_boost = 1.0 + 0.12 * profile.aggressiveness
    trips: list[tuple[float, float, float, bool]] = []
    if profile.duty_cycle == "commuter":
        if weekday < 5:
            cruise = (55.0 + 25.0 * rng.random()) * aggressive_boost
            duration = profile.commute_km / (cruise * 0.7)
            trips.append((7.0 + 1.2 * rng.random(), duration, cruise, False))
            trips.append((16.5 + 2.0 * rng.random(), duration * (1.0 + 0.3 * rng.random()), cruise, False))
            if rng.random() < 0.35:
                trips.append((19.0 + 1.5 * rng.random(), 0.15 + 0.3 * rng.random(), 40.0 * aggressive_boost, True))
        else:
            for _ in range(int(rng.integers(0, 4))):
                urban = rng.random() < 0.5
                trips.append((9.0 + 10.0 * rng.random(), 0.25 + 1.0 * rng.random(),
                              (40.0 if urban else 80.0) * aggressive_boost, urban))
    elif profile.duty_cycle == "taxi":
        if weekday != profile.index % 7:  # one day off a week
            hour = 5.5 + 2.5 * rng.random() if rng.random() < 0.7 else 13.0 + 2.0 * rng.random()
            shift_end = min(hour + 9.0 + 2.0 * rng.random(), 23.5)
            break_at = (hour + shift_end) / 2.0
            while hour < shift_end:
                if break_at <= hour < break_at + 1.0:
                    hour += 0.5 + 0.25 * rng.random()  # meal break: a charging opportunity
                    break_at = 99.0
                    continue
                duration = (8.0 + 25.0 * rng.random()) / 60.0
                airport = rng.random() < 0.12
                cruise = (85.0 if airport else 32.0 + 12.0 * rng.random()) * aggressive_boost
                trips.append((hour, duration, cruise, not airport))
                hour += duration + (3.0 + 17.0 * rng.random()) / 60.0
    else:  # delivery
        if weekday != 6:
            hour = 7.5 + rng.random()
            trips.append((hour, 0.4, 60.0 * aggressive_boost, False))  # depot to the round
            hour += 0.4 + 0.1
            end = 16.0 + 2.0 * rng.random()
            lunch_done = False
            while hour < end:
                if not lunch_done and hour >= 12.0:
                    hour += 0.5
                    lunch_done = True
                    continue
                duration = (4.0 + 11.0 * rng.random()) / 60.0
                trips.append((hour, duration, (30.0 + 10.0 * rng.random()) * aggressive_boost, True))
                hour += duration + (4.0 + 8.0 * rng.random()) / 60.0
            trips.append((hour, 0.4, 60.0 * aggressive_boost, False))  # back to the depot
    return trips


def _plan_trips(profile: VehicleProfile, rng: np.random.Generator, ts: np.ndarray,
                blocked: list[tuple[int, int]]) -> _Trips:
    """Place the day's trips on the chunk's frames; no trips while the vehicle is in the workshop."""
    midnight = int(ts[0]) // MS_PER_DAY * MS_PER_DAY
    weekday = datetime.fromtimestamp(midnight / 1000, tz=UTC).weekday()
    hours = _trip_hours(profile, rng, weekday)
    phases = rng.random((max(len(hours), 1), 3)) * 2.0 * np.pi
    periods = np.array([240.0, 70.0, 90.0]) * (0.7 + 0.6 * rng.random((max(len(hours), 1), 3)))
    starts, ends, keep = [], [], []
    previous_end = 0
    bounds_ms = []
    for hour, duration, _, _ in hours:
        start_ms = midnight + int(hour * MS_PER_HOUR)
        bounds_ms += [start_ms, start_ms + int(duration * MS_PER_HOUR)]
    frames = np.searchsorted(ts, np.array(bounds_ms, dtype=np.int64)).tolist()  # one call for all trips
    for j in range(len(hours)):
        start_ms, end_ms = bounds_ms[2 * j], bounds_ms[2 * j + 1]
        if any(start_ms < b_end and end_ms > b_start for b_start, b_end in blocked):
            continue
        start_i = max(frames[2 * j], previous_end)
        end_i = frames[2 * j + 1]
        if end_i - start_i < 2:
            continue
        starts.append(start_i)
        ends.append(end_i)
        keep.append(j)
        previous_end = end_i
    index = np.array(keep, dtype=np.int64)
    return _Trips(
        start=np.array(starts, dtype=np.int64), end=np.array(ends, dtype=np.int64),
        cruise_kmh=np.array([hours[j][2] for j in keep]), urban=np.array([hours[j][3] for j in keep], dtype=bool),
        phases=phases[index], periods=periods[index],
    )


def _speed_profile(trips: _Trips, n: int, dt: float, aggressiveness: float, noise: np.ndarray) -> np.ndarray:
    """Road speed (km/h) per frame: ramps, cruise waves and stop-and-go for urban trips."""
    speed = np.zeros(n)
    if trips.start.size == 0:
        return speed
    lengths = trips.end - trips.start
    frame = np.repeat(trips.start - np.cumsum(np.concatenate(([0], lengths[:-1]))), lengths) + np.arange(lengths.sum())
    t = (frame - np.repeat(trips.start, lengths)) * dt
    duration = np.repeat(lengths * dt, lengths)
    cruise = np.repeat(trips.cruise_kmh, lengths)
    urban = np.repeat(trips.urban, lengths)
    phase = np.repeat(trips.phases, lengths, axis=0)
    period = np.repeat(trips.periods, lengths, axis=0)
    two_pi = 2.0 * np.pi
    envelope = np.clip(np.minimum(t + dt, duration - t) / 90.0, 0.0, 1.0)
    amplitude = 0.12 + 0.18 * aggressiveness
    wave = 1.0 + amplitude * np.sin(two_pi * t / period[:, 0] + phase[:, 0]) \
        + 0.5 * amplitude * np.sin(two_pi * t / period[:, 1] + phase[:, 1])
    stop_and_go = np.where(urban, np.clip(2.5 * np.sin(two_pi * t / period[:, 2] + phase[:, 2]) + 1.3, 0.0, 1.0), 1.0)
    value = cruise * envelope * np.clip(wave, 0.3, 1.6) * stop_and_go + 1.5 * noise[frame]
    speed[frame] = np.clip(value, 0.0, 180.0)
    return speed


# --------------------------------------------------------------------------------------------- charging


def _decide_session(profile: VehicleProfile, soc: float, duration_s: float, overnight: bool,
                    u: float) -> tuple[str, float, float] | None:
    """Whether and how the driver plugs in at this stop: (kind, power kW, target SOC) or None."""
    thresholds = {"commuter": (70.0, 30.0), "taxi": (80.0, 60.0), "delivery": (85.0, 35.0)}
    overnight_threshold, break_threshold = thresholds[profile.duty_cycle]
    if duration_s < 15 * 60 or soc >= (overnight_threshold if overnight else break_threshold):
        return None
    dc = u < profile.dc_fast_charge_share
    if not dc and not (overnight or duration_s >= 2 * 3600):
        if soc >= 25.0:
            return None
        dc = True  # low and no time for AC: find a fast charger
    if dc:
        return ("dc", profile.dc_power_kw, 80.0)
    return ("ac", profile.ac_power_kw, 90.0)


def _charge_profile(soc0: float, session: tuple[str, float, float], n: int, dt: float,
                    energy_j: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """SOC after each frame, charge power (kW) and charger state of a session lasting ``n`` frames.

    AC: constant power to the target, then plugged idle. DC: constant power to 50 %, then power tapering
    in proportion to (100 - SOC) (closed-form exponential), unplugged at the target. Returns also
    whether the session is still going at the end (DC below target, or AC plugged).
    """
    kind, power_kw, target = session
    t = (np.arange(n) + 1.0) * dt
    rate = power_kw * 1000.0 * physics.CHARGER_EFFICIENCY / energy_j * 100.0  # % per second at full power
    if kind == "ac":
        soc_after = np.minimum(target, soc0 + rate * t) if soc0 < target else np.full(n, soc0)
    else:
        t_to_50 = max(0.0, (50.0 - soc0) / rate)
        knee = max(soc0, 50.0)
        soc_after = np.where(t <= t_to_50, soc0 + rate * t,
                             100.0 - (100.0 - knee) * np.exp(-(rate / 50.0) * np.maximum(t - t_to_50, 0.0)))
        soc_after = np.minimum(soc_after, target) if soc0 < target else np.full(n, soc0)
    soc_before = np.concatenate(([soc0], soc_after[:-1]))
    charging = soc_before < target - 1e-6
    taper = 1.0 if kind == "ac" else np.minimum(1.0, (100.0 - soc_before) / 50.0)
    power = np.where(charging, power_kw * taper, 0.0)
    state = np.where(charging, 1 if kind == "ac" else 2, 3 if kind == "ac" else 0).astype(np.int8)
    ongoing = kind == "ac" or bool(charging[-1] and soc_after[-1] < target - 1e-6)
    return soc_after, power, state, ongoing


# --------------------------------------------------------------------------------------------- physics


def _effects(events: list[FailureEvent], ts: np.ndarray) -> dict[str, np.ndarray | float]:
    """Combined effect of every degradation active in this chunk (neutral values when none)."""
    combined: dict[str, np.ndarray | float] = dict(EFFECT_NEUTRAL)
    for event in events:
        if event.failure_ms <= ts[0] or event.onset_ms >= ts[-1]:
            continue
        for name, value in mode_effects(event.mode, event.degradation_at(ts), event.component,
                                        event.severity).items():
            combined[name] = combined[name] * value if EFFECT_NEUTRAL[name] == 1.0 else combined[name] + value
    return combined


def _drive_power(speed_kmh: np.ndarray, dt: float, profile: VehicleProfile, ambient: np.ndarray,
                 effects: dict[str, np.ndarray | float], plant: PlantVariant = DEFAULT_PLANT) -> dict[str, np.ndarray]:
    """Traction and auxiliary power of the driving frames (W, + discharging)."""
    speed_ms = speed_kmh / 3.6
    accel = np.diff(speed_ms, prepend=0.0) / dt
    driving = speed_kmh > 0.0
    drag_force = np.asarray(effects["bearing_drag_nm"]) * physics.GEAR_RATIO / physics.WHEEL_RADIUS_M \
        + np.asarray(effects["brake_drag_kw"]) * 1000.0 / (50.0 / 3.6)
    wheel_drag = np.asarray(effects["wheel_drag_n"])
    # Only a failing wheel bearing adds terms: adding zeros could turn -0.0 into 0.0 and move bits.
    if np.any(wheel_drag):
        drag_force = drag_force + wheel_drag
    force = physics.road_load(speed_ms, accel, profile.mass_kg, profile.cda_m2, drag_force)
    traction, friction = physics.split_wheel_power(force * speed_ms, plant.drive_efficiency, plant.regen_efficiency)
    friction = friction + np.asarray(effects["brake_drag_kw"]) * 1000.0 * speed_ms / (50.0 / 3.6)
    if np.any(wheel_drag):  # the bearing's friction heats the hub and, through it, the brake disc
        friction = friction + wheel_drag * speed_ms * (speed_ms > 0.1)
    hvac = physics.hvac_power_w(ambient, driving) * plant.hvac_power_scale * np.asarray(effects["hvac_power_factor"])
    pack_heater = 1500.0 * (ambient < 5.0) * driving
    total = (traction + hvac + physics.AUX_LOAD_W + pack_heater) * driving
    return {"speed_ms": speed_ms, "force": force * driving, "traction": traction * driving,
            "friction": friction * driving, "hvac": hvac, "total": total, "driving": driving}


def _segments(trips: _Trips, n: int) -> list[tuple[str, int, int, int]]:
    """(kind, start, end, trip number) covering the chunk: parking between trips, driving on trips."""
    segments: list[tuple[str, int, int, int]] = []
    cursor = 0
    for j, (start, end) in enumerate(zip(trips.start.tolist(), trips.end.tolist(), strict=False)):
        if start > cursor:
            segments.append(("park", cursor, start, -1))
        segments.append(("drive", start, end, j))
        cursor = end
    if cursor < n:
        segments.append(("park", cursor, n, -1))
    return segments


def simulate_vehicle(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int,
                     events: list[FailureEvent] | None = None,
                     faults: list[SensorFault] | None = None) -> Iterator[VehicleChunk]:
    """Every frame of one vehicle, one UTC day (chunk) at a time, in time order.

    ``events`` / ``faults`` replace the sampled failures / sensor faults (a scenario that injects a
    given failure, or a healthy counterfactual with ``[]``); by default they are sampled.
    """
    yield from VehicleSimulation(profile, sim_cfg, seed, events, faults)


class VehicleSimulation:
    """``simulate_vehicle`` as an iterator whose failures can be replaced part-way (a workshop repair).

    Day ``d`` holds the frames in ``[start + d*day, start + (d+1)*day)``. Without ``replace_events`` the
    chunks are exactly ``simulate_vehicle``'s. ``replace_events`` rewinds to the start of a recent day
    (the state at each day's start is kept for the last ``keep_days`` days) and simulates from there
    with the new failures: the carried state (SOC, temperatures, odometer, wear) is what the old
    failures made it, and from that day on a removed failure no longer changes any signal; so a repair
    neither re-simulates the vehicle from day 0 nor rewrites its history.
    """

    def __init__(self, profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int,
                 events: list[FailureEvent] | None = None, faults: list[SensorFault] | None = None,
                 keep_days: int = 0) -> None:
        if keep_days < 0:
            raise ValueError(f"keep_days must be >= 0 (got {keep_days})")
        self.profile, self.seed = profile, seed
        self.start_ms, end_ms = observation_window(sim_cfg)
        self.plant, self.missing, self.first_seq = sim_cfg.plant, sim_cfg.missing_sensors, sim_cfg.first_seq
        # A variable frame rate simulates at the driving rate and keeps every parked_every-th parked frame.
        self.parked_every = 1
        self.step_ms = frame_interval_ms(sim_cfg)
        self.total = frame_count(sim_cfg)
        if sim_cfg.driving_frame_interval_s is not None:
            fine = sim_cfg.model_copy(update={"frame_interval_s": sim_cfg.driving_frame_interval_s})
            self.parked_every = int(round(sim_cfg.frame_interval_s / sim_cfg.driving_frame_interval_s))
            self.step_ms, self.total = frame_interval_ms(fine), frame_count(fine)
        self.n_days = -(-(end_ms - self.start_ms) // MS_PER_DAY)
        self.events = vehicle_events(profile, sim_cfg, seed) if events is None else list(events)
        self.faults = vehicle_sensor_faults(profile, sim_cfg, seed) if faults is None else list(faults)
        self.daily_means, initial_soc = _weather(profile, seed, self.n_days)
        self.state = _initial_state(profile, float(self.daily_means[1]), initial_soc)
        self.noise_bank = _noise_bank(profile, seed, -(-MS_PER_DAY // self.step_ms))
        self.day = 0  # the next day to simulate
        self.keep_days = keep_days
        self._day_starts: dict[int, _State] = {}  # day -> state at its start, for the last keep_days days

    def __iter__(self) -> VehicleSimulation:
        return self

    def __next__(self) -> VehicleChunk:
        while self.day < self.n_days:
            day = self.day
            self.day += 1
            first = -(-(day * MS_PER_DAY) // self.step_ms)
            last = min(self.total, -(-((day + 1) * MS_PER_DAY) // self.step_ms))
            if last <= first:
                continue
            if self.keep_days:
                self._day_starts[day] = _copy_state(self.state)
                self._day_starts.pop(day - self.keep_days, None)
            frame_index = np.arange(first, last, dtype=np.int64)
            # seq counts from first_seq (1 by default, the wire contract; real vehicles often count from 0)
            # and goes up by one per frame handed out (under a variable frame rate: per frame kept).
            seq = frame_index + self.first_seq if self.parked_every == 1 else \
                self.state.frames_emitted + self.first_seq + np.arange(last - first, dtype=np.int64)
            chunk = _simulate_day(self.profile, self.seed, day, seq,
                                  self.start_ms + frame_index * self.step_ms, self.step_ms / 1000.0, self.start_ms,
                                  self.state, self.events, self.faults, self.daily_means, self.noise_bank,
                                  self.plant, self.parked_every, self.missing)
            self.state.frames_emitted += chunk.num_rows
            return chunk
        raise StopIteration

    def day_of(self, ts_ms: int) -> int:
        """The day (chunk index) holding ``ts_ms``."""
        return max(0, (int(ts_ms) - self.start_ms) // MS_PER_DAY)

    def replace_events(self, events: list[FailureEvent], from_day: int) -> None:
        """Simulate from the start of ``from_day`` on with ``events``; the next chunk is that day's."""
        if from_day >= self.day:
            self.events = list(events)  # that day is not simulated yet: nothing to rewind
            return
        snapshot = self._day_starts.get(from_day)
        if snapshot is None:
            raise ValueError(f"cannot rewind to day {from_day}: only the last {self.keep_days} day starts are kept "
                             f"(next day {self.day}); raise keep_days")
        self.events = list(events)
        self.state = _copy_state(snapshot)
        self.day = from_day
        for later in [d for d in self._day_starts if d > from_day]:
            del self._day_starts[later]


def _copy_state(state: _State) -> _State:
    return replace(state, stuck_values=dict(state.stuck_values))


@dataclass(frozen=True)
class _DayPlan:
    """Outcome of walking a day's stops and trips: charging per frame, skipped trips, open session."""

    charge_kw: np.ndarray
    charger_state: np.ndarray  # int8, schema enum
    charge_dsoc: np.ndarray  # SOC gained per frame while plugged in (%)
    skipped: np.ndarray  # frames of trips not driven (SOC too low)
    session: tuple[str, float, float] | None  # charging still going at the end of the day


def _walk_segments(profile: VehicleProfile, trips: _Trips, drive_power_w: np.ndarray, hour: np.ndarray, dt: float,
                   energy_j: float, state: _State, day: int, park_draws: np.ndarray) -> _DayPlan:
    """Walk the day's segments in order: SOC decides whether a trip is driven and whether to plug in."""
    n = drive_power_w.shape[0]
    cumulative_j = np.concatenate(([0.0], np.cumsum(drive_power_w * dt)))
    charge_kw = np.zeros(n)
    charger_state = np.zeros(n, dtype=np.int8)
    charge_dsoc = np.zeros(n)
    skipped = np.zeros(n, dtype=bool)
    soc, session = state.soc, state.session
    drain_pct_per_s = physics.PARKED_DRAIN_W / energy_j * 100.0
    for number, (kind, a, b, _) in enumerate(_segments(trips, n)):
        if kind == "drive":
            used = (cumulative_j[b] - cumulative_j[a]) / energy_j * 100.0
            if soc < 12.0 or soc - used < 6.0:  # the driver would not set off: the trip is skipped
                skipped[a:b] = True
                soc -= drain_pct_per_s * (b - a) * dt
            else:
                soc -= used
                session = None  # unplugged to drive
            continue
        # A stop that runs on from yesterday was decided yesterday (plugged in or not); no new decision
        # at midnight, except on the first day when nothing was decided yet.
        if not (a == 0 and (day > 0 or session is not None)):
            overnight = b == n or (hour[a] >= 15.0 and (b - a) * dt >= 3 * 3600)
            session = _decide_session(profile, soc, (b - a) * dt, overnight, float(park_draws[number % PARK_DRAWS]))
        if session is None:
            soc -= drain_pct_per_s * (b - a) * dt
            continue
        soc_after, kw, st, ongoing = _charge_profile(soc, session, b - a, dt, energy_j)
        charge_kw[a:b], charger_state[a:b] = kw, st
        charge_dsoc[a:b] = np.diff(np.concatenate(([soc], soc_after)))
        soc = float(soc_after[-1])
        if not ongoing:
            session = None
    return _DayPlan(charge_kw, charger_state, charge_dsoc, skipped, session)


def _noise_bank(profile: VehicleProfile, seed: int, frames_per_day: int) -> np.ndarray:
    """Standard-normal measurement noise drawn once per vehicle; each day reads it at random offsets.

    Drawing ~30 fresh normal series per day was a quarter of the generator's time; windows of one
    long series at independent random offsets are statistically the same white noise.
    """
    rng = np.random.default_rng([seed, profile.index, STREAM_NOISE])
    return rng.standard_normal(4 * frames_per_day + 1021, dtype=np.float32)


def _simulate_day(profile: VehicleProfile, seed: int, day: int, seq: np.ndarray, ts: np.ndarray, dt: float,
                  start_ms: int, state: _State, events: list[FailureEvent], faults: list[SensorFault],
                  daily_means: np.ndarray, noise_bank: np.ndarray, plant: PlantVariant = DEFAULT_PLANT,
                  parked_every: int = 1, missing: tuple[str, ...] = ()) -> VehicleChunk:
    """One day of frames. ``parked_every`` > 1: keep every frame while driving but only every that-many-th
    one (aligned to the window start) while parked or charging (a variable frame rate); ``missing``: fields
    the vehicle does not fit, NaN in every frame."""
    n = seq.shape[0]
    rng = np.random.default_rng([seed, profile.index, STREAM_CHUNK, day])
    park_draws = rng.random(PARK_DRAWS)
    t_s = (ts - start_ms) / 1000.0
    hour = (ts % MS_PER_DAY) / MS_PER_HOUR
    climate = CLIMATES[profile.climate]
    day_position = t_s / 86400.0
    daily_mean = np.interp(day_position, np.arange(daily_means.shape[0]) - 0.5, daily_means)
    ambient = physics.ambient_temperature(hour, daily_mean, climate["diurnal_c"])

    blocked = [(e.failure_ms, e.repair_end_ms) for e in events]
    trips = _plan_trips(profile, rng, ts, blocked)
    offsets = rng.integers(0, noise_bank.shape[0] - n + 1, size=len(_NOISY) + 1)
    noise = [noise_bank[o:o + n] for o in offsets.tolist()]
    effects = _effects(events, ts)
    speed_noise = noise[-1]
    if parked_every > 1:
        # At a fast driving rate white speed noise would mean accelerations of ~0.6 m/s2 every second (more
        # inertia force than rolling and air drag together): smooth it to a 30 s process of the same spread.
        lagged, _ = physics.first_order_lag(speed_noise, dt, SPEED_NOISE_TAU_S, 0.0)
        speed_noise = lagged * np.sqrt(2.0 * SPEED_NOISE_TAU_S / dt)
    speed = _speed_profile(trips, n, dt, profile.aggressiveness, speed_noise)
    power = _drive_power(speed, dt, profile, ambient, effects, plant)

    soh = state.soh - 0.003 * day  # slow calendar ageing over the run
    capacity_factor = float(np.mean(effects["capacity_factor"]))
    energy_j = profile.capacity_kwh * 3.6e6 * soh / 100.0 * capacity_factor

    plan = _walk_segments(profile, trips, power["total"], hour, dt, energy_j, state, day, park_draws)
    charge_kw, charger_state, charge_dsoc, skipped = plan.charge_kw, plan.charger_state, plan.charge_dsoc, plan.skipped
    session = plan.session
    if skipped.any():
        speed = np.where(skipped, 0.0, speed)
        power = _drive_power(speed, dt, profile, ambient, effects, plant)

    driving = power["driving"]
    charging = charger_state == 1
    charging |= charger_state == 2
    awake = driving | charging
    parked_drain = physics.PARKED_DRAIN_W * ~awake
    battery_w = power["total"] + parked_drain + physics.AUX_LOAD_W * charging - charge_kw * 1000.0 * physics.CHARGER_EFFICIENCY
    dsoc = np.where(charging | (charger_state == 3), charge_dsoc, -(power["total"] + parked_drain) * dt / energy_j * 100.0)
    soc_series = np.clip(state.soc + np.cumsum(dsoc), 0.5, 100.0)

    columns = _physics_columns(profile, state, dt, t_s, ambient, speed, power, effects, soc_series, battery_w,
                               awake, charger_state, charge_kw, soh, energy_j, plant)
    state.soc = float(soc_series[-1])
    state.session = session
    _reset_after_repairs(events, ts, columns, state)
    pumping = columns["coolant_flow"] > 0
    # Measurement happens in the sensors' own precision: cast first, then noise, saturation and faults.
    typed = {f.name: columns[f.name].astype(f.numpy_type) for f in SCHEMA.fields}
    _add_noise(typed, noise, driving, charging, awake, pumping)
    for name, (low, high) in _FLOAT_RANGES:  # the BMS and ECUs saturate at their physical limits
        column = typed[name]
        _clip_ufunc(column, low, high, out=column)
    _apply_sensor_faults(faults, ts, typed, state, rng)
    for name in missing:  # a sensor the vehicle does not have reports nothing, in every frame
        typed[name][:] = np.nan
    if parked_every > 1:
        # The logger runs fast for the whole trip (stops at lights included), slow otherwise.
        on_trip = np.zeros(n, dtype=bool)
        for a, b in zip(trips.start.tolist(), trips.end.tolist(), strict=True):
            on_trip[a:b] = True
        on_grid = (ts - start_ms) % int(round(parked_every * dt * 1000)) == 0
        keep = (on_trip & ~skipped) | on_grid
        typed = {name: values[keep] for name, values in typed.items()}
        ts = ts[keep]
        seq = seq[0] + np.arange(ts.shape[0], dtype=np.int64)
    return VehicleChunk(profile.vehicle_id, day, seq, ts, typed)


def _physics_columns(profile: VehicleProfile, state: _State, dt: float, t_s: np.ndarray, ambient: np.ndarray,
                     speed: np.ndarray, power: dict[str, np.ndarray], effects: dict[str, np.ndarray | float],
                     soc: np.ndarray, battery_w: np.ndarray, awake: np.ndarray, charger_state: np.ndarray,
                     charge_kw: np.ndarray, soh: float, energy_j: float,
                     plant: PlantVariant = DEFAULT_PLANT) -> dict[str, np.ndarray]:
    """Every sensor field from the day's driving, charging and ambient; updates the carried state."""
    driving = power["driving"]
    cells = profile.cells_series
    ocv = cells * physics.cell_ocv(soc, plant.cell_chemistry)
    sink = physics.thermal_sink_c(ambient, awake)
    # Plant variants scale the default coefficients (x 1.0 leaves every bit as it was).
    heat_capacity = physics.PACK_HEAT_CAPACITY_J_PER_K * plant.pack_heat_capacity_scale
    coolant_conductance = physics.COOLANT_CONDUCTANCE_W_PER_K_PER_LPM * plant.coolant_conductance_scale
    drivetrain_heating = 0.02 * plant.drivetrain_heating_scale

    # Pack thermal: a first pass without self-heating gives the temperature for the resistance.
    nominal_conductance = physics.PACK_PASSIVE_CONDUCTANCE_W_PER_K + awake * (coolant_conductance * 6.0)
    pack_free, state.pack_temp_free = physics.first_order_lag(
        sink, dt, heat_capacity / nominal_conductance, state.pack_temp_free)
    resistance_25 = resistance_at_start(profile) * np.asarray(effects["resistance_factor"])
    resistance_ohm = resistance_25 * physics.resistance_temperature_factor(pack_free) / 1000.0
    current = physics.bms_current_limit(physics.battery_current(battery_w, ocv, resistance_ohm), ocv,
                                        resistance_ohm, cells)
    heat_w = current * current * resistance_ohm
    pump_rpm = awake * np.minimum(1800.0 + 0.5 * heat_w, 4800.0) * np.asarray(effects["pump_speed_factor"])
    flow = pump_rpm / 1000.0 * physics.FLOW_LPM_PER_KRPM * np.asarray(effects["coolant_flow_factor"])
    conductance = physics.PACK_PASSIVE_CONDUCTANCE_W_PER_K + coolant_conductance * flow
    rise = heat_w / conductance
    pack_temp, state.pack_temp = physics.first_order_lag(
        sink + rise, dt, heat_capacity / conductance, state.pack_temp)
    coolant_in, state.coolant_in = physics.first_order_lag(np.where(awake, sink, pack_temp), dt, 400.0, state.coolant_in)
    delta = np.where(flow > 0.1, heat_w / (np.maximum(flow, 0.1) / 60.0 * physics.COOLANT_HEAT_CAPACITY_J_PER_L_K), 0.0)
    coolant_delta, state.coolant_delta = physics.first_order_lag(delta, dt, 120.0, state.coolant_delta)

    # Cells: spread of cell voltages grows with load and, for an imbalanced pack, at low SOC.
    amp_hours = energy_j / 3600.0 / profile.nominal_voltage
    c_rate = np.abs(current) / amp_hours
    imbalance = np.asarray(effects["cell_spread_mv"]) * (1.0 + np.maximum(30.0 - soc, 0.0) / 15.0)
    spread_v = ((6.0 + 1.5 * profile.pack_age_years) + imbalance) * (1.0 + c_rate) / 1000.0
    pack_voltage = ocv - current * resistance_ohm
    mean_cell = pack_voltage / cells

    # Drivetrain temperatures: losses heat the motor and inverter above the coolant (or ambient, parked).
    motor_rpm = physics.motor_speed_rpm(power["speed_ms"])
    torque = np.clip(physics.motor_torque_nm(power["force"]), -450.0, 650.0)
    bearing = np.asarray(effects["bearing_drag_nm"]) * motor_rpm * 2.0 * np.pi / 60.0
    motor_losses = (0.02 * torque * torque + 0.08 * motor_rpm + bearing) * driving
    base = np.where(driving, coolant_in, ambient)
    motor_temp, state.motor_temp = physics.first_order_lag(base + drivetrain_heating * motor_losses, dt, 900.0,
                                                           state.motor_temp)
    inverter_losses = (0.04 * np.abs(power["traction"]) + 200.0) * driving
    inverter_target = base + inverter_losses * drivetrain_heating * np.asarray(effects["inverter_thermal_factor"])
    inverter_temp, state.inverter_temp = physics.first_order_lag(inverter_target, dt, 150.0, state.inverter_temp)
    brake_tau = np.where(speed > 5.0, 200.0, 900.0)
    brake_temp, state.brake_temp = physics.first_order_lag(ambient + 0.12 * power["friction"], dt, brake_tau,
                                                           state.brake_temp)

    # Chassis: odometer, brake pads, tyres warmed by rolling (pressure follows absolute temperature).
    km = np.cumsum(speed * dt / 3600.0)
    odometer = state.odometer_km + km
    wear_rate = 0.0011 * (1.0 + profile.aggressiveness) * (1.3 if profile.duty_cycle == "delivery" else 1.0)
    wear_base = state.brake_wear_base + wear_rate * km
    wear = wear_base + (100.0 - wear_base) * np.asarray(effects["brake_wear_fraction"])
    tyre_temp, state.tyre_temp = physics.first_order_lag(ambient + 0.15 * speed + 0.002 * power["friction"], dt,
                                                         1500.0, state.tyre_temp)
    day = t_s / 86400.0
    tyres = {
        f"tyre_pressure_{w}": physics.tyre_pressure_kpa(profile.tyre_cold_kpa + offset, tyre_temp)
        - TYRE_NATURAL_LOSS_KPA_PER_DAY * day - np.asarray(effects[f"tyre_leak_kpa_{w}"])
        for w, offset in TYRE_OFFSETS_KPA.items()
    }

    # 12 V: rests lower the longer the car sleeps (and the weaker the battery); recharged after wake-up.
    change = awake != np.concatenate(([state.awake], awake[:-1]))
    last_change = np.maximum.accumulate(np.where(change, t_s, -np.inf))
    last_change = np.maximum(last_change, state.last_change_s)
    since = t_s - last_change
    aux_capacity = profile.aux_battery_health * np.asarray(effects["aux_capacity_factor"])
    rest_v = 12.72 - 0.35 * (1.0 - aux_capacity) - np.minimum(0.012 * since / 3600.0 / aux_capacity, 0.9) \
        - 0.006 * np.maximum(10.0 - ambient, 0.0)
    aux_v = np.where(awake, 13.9 + 0.25 * np.exp(-since / 900.0), rest_v)
    recharge_a = 40.0 * (1.15 - aux_capacity) * np.exp(-since / (900.0 / np.maximum(aux_capacity, 0.1)))
    dcdc = awake * ((physics.AUX_LOAD_W + 0.04 * power["hvac"]) / 13.8 + recharge_a)
    state.awake = bool(awake[-1])
    state.last_change_s = float(last_change[-1])
    state.odometer_km = float(odometer[-1])
    state.brake_wear_base = float(wear_base[-1])

    path = odometer  # km along a looping route around home
    columns = {
        "pack_voltage": pack_voltage,
        "pack_current": current,
        "soc": soc,
        "soh": np.broadcast_to(soh * np.asarray(effects["capacity_factor"]), soc.shape).copy(),
        "cell_voltage_min": mean_cell - 0.6 * spread_v,
        "cell_voltage_max": mean_cell + 0.4 * spread_v,
        "cell_temp_min": pack_temp - 0.6 - 0.1 * rise,
        "cell_temp_max": pack_temp + 0.8 + 0.3 * rise,
        "cell_temp_avg": pack_temp.copy(),
        "internal_resistance": resistance_ohm * 1000.0,
        "insulation_resistance": profile.insulation_kohm * np.exp(-0.015 * (pack_temp - 25.0)),
        "coolant_temp_in": coolant_in,
        "coolant_temp_out": coolant_in + coolant_delta,
        "coolant_flow": flow,
        "pump_speed": pump_rpm,
        "hvac_power": power["hvac"] * driving / 1000.0,
        "motor_speed": motor_rpm,
        "motor_torque": torque,
        "motor_temp": motor_temp,
        "inverter_temp": inverter_temp,
        "speed": speed.copy(),
        "odometer": odometer,
        **tyres,
        "brake_pad_wear": np.minimum(wear, 100.0),
        "brake_temp": brake_temp,
        "aux_battery_voltage": aux_v,
        "dcdc_current": dcdc,
        "charger_state": charger_state.astype(np.float64),
        "charge_power": charge_kw,
        "ambient_temp": ambient,
        "latitude": profile.home_lat + 0.08 * np.sin(path / 7.3 + profile.index),
        "longitude": profile.home_lon + 0.12 * np.sin(path / 11.1 + 2.0 * profile.index),
    }
    return columns


def _reset_after_repairs(events: list[FailureEvent], ts: np.ndarray, columns: dict[str, np.ndarray],
                         state: _State) -> None:
    """A brake repair fits new pads: the wear counter restarts from the repair on."""
    for event in events:
        if event.mode == "brake_wear" and ts[0] <= event.failure_ms <= ts[-1]:
            after = ts >= event.failure_ms
            first = int(np.argmax(after))
            drop = columns["brake_pad_wear"][first] - 2.0
            columns["brake_pad_wear"][after] -= drop
            columns["brake_pad_wear"][after] = np.maximum(columns["brake_pad_wear"][after], 0.0)
            state.brake_wear_base -= drop


def _add_noise(columns: dict[str, np.ndarray], noise: list[np.ndarray], driving: np.ndarray, charging: np.ndarray,
               awake: np.ndarray, pumping: np.ndarray) -> None:
    masks = {"drive": driving, "charging": charging, "awake": awake, "pumping": pumping}
    for i, name in enumerate(_NOISY):
        when = _NOISE_ONLY_WHEN.get(name)
        scaled = noise[i] * NOISE_SD[name]
        columns[name] += scaled * masks[when] if when else scaled


def _apply_sensor_faults(faults: list[SensorFault], ts: np.ndarray, columns: dict[str, np.ndarray],
                         state: _State, rng: np.random.Generator) -> None:
    """Corrupt the measured values: stuck (held), drift (growing offset), dropout (NaN), spikes."""
    spike_draws: np.ndarray | None = None
    for number, fault in enumerate(faults):
        if fault.end_ms <= ts[0] or fault.start_ms > ts[-1]:
            continue
        inside = (ts >= fault.start_ms) & (ts < fault.end_ms)
        if not inside.any():
            continue
        values = columns[fault.field]
        if fault.kind == "stuck":
            if number not in state.stuck_values:
                state.stuck_values[number] = float(values[int(np.argmax(inside))])
            values[inside] = state.stuck_values[number]
        elif fault.kind == "drift":
            values[inside] += fault.magnitude * (ts[inside] - fault.start_ms) / MS_PER_DAY
        elif fault.kind == "dropout":
            values[inside] = np.nan
        elif fault.kind == "spike":
            if spike_draws is None:
                spike_draws = rng.random(ts.shape[0])
            values[inside & (spike_draws < SPIKE_FRAME_SHARE)] += fault.magnitude


def stream_vehicle_batches(profile: VehicleProfile, sim_cfg: SimulationConfig, seed: int,
                           batch_seconds: float = 3600, events: list[FailureEvent] | None = None,
                           faults: list[SensorFault] | None = None) -> Iterator[pa.RecordBatch]:
    """Frames of one vehicle in time order, as record batches of ``batch_seconds`` of data each.

    Batch boundaries are aligned to the window start (batch ``k`` holds the frames in
    ``[start + k*batch_seconds, start + (k+1)*batch_seconds)``); a batch never mixes vehicles.
    ``events``/``faults`` override the sampled ones (see ``simulate_vehicle``).
    """
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be > 0 (got {batch_seconds})")
    start_ms, _ = observation_window(sim_cfg)
    batch_ms = int(round(batch_seconds * 1000))
    pending: list[pa.RecordBatch] = []
    pending_id: int | None = None
    for chunk in simulate_vehicle(profile, sim_cfg, seed, events, faults):
        batch = chunk.to_record_batch()
        ids = (chunk.ts_ms - start_ms) // batch_ms
        cuts = np.flatnonzero(np.diff(ids)) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), chunk.num_rows], strict=False):
            if pending and ids[a] != pending_id:
                yield _combine(pending)
                pending = []
            pending.append(batch.slice(a, b - a))
            pending_id = int(ids[a])
    if pending:
        yield _combine(pending)


def _combine(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
