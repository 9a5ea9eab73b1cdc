"""The one feature function: per-window features, offline (training) and online (twins) alike.

A twin keeps a :class:`FeatureState` per vehicle and calls ``update(window)`` once per closed window
(see :mod:`training.windows` for which frames make a window). The offline pipeline
(:func:`vehicle_feature_matrix`) runs the very same ``FeatureState`` over a vehicle's recording, so the
two agree by construction.

The maths is written once, for a batch: :func:`raw_features_many` computes the context-free half of B
windows at once (frames NaN-padded to (columns, T, B)) and :func:`update_many` advances B vehicles'
states by one window each. The per-window calls (``window_raw_features``, ``update_values``) are
these with B = 1, and a window's features do not depend on the batch it is computed in, bit for bit.

Features, in ``FEATURE_NAMES`` order:

1. *Window statistics*: mean, std, min, max of each signal in ``STAT_SIGNALS`` (NaN-aware).
2. *Derived physics*: cell-voltage and cell-temperature spreads (also under load), pack / motor /
   inverter temperature rise against ambient and per unit of load, coolant delta-T per flow, flow per
   pump speed, a resistance estimate from dV/dI, temperature-compensated tyre pressure, activity
   (driving / charging share, distance) and data quality (NaN share, out-of-range share, stuck and
   spike scores).
3. *Context across windows* for each signal in ``TREND_KEYS``: a short (1 day) exponential average,
   the trend (short minus long, 7 day, average) and the z-score of this window against the vehicle's
   own running baseline (mean and std of its earlier windows; after a warm-up of 24 windows it learns
   only from windows within 3 std, so a slowly failing part does not become the new normal).
4. *Accumulated operating terms* for each of ``ACCUM_KEYS`` (drivetrain temperature rises and their
   loads while driving, power against speed and ambient, 12 V rest voltage and its slope while asleep,
   DC-DC current at wake-up, cell spread and pack rise under load, coolant flow per pump speed) and usage
   that raises some modes' hazard (ambient, DC fast charging, distance): time-decayed means over the
   frames of their operating state, 1-day (7-day, 30-day), and the 1-day minus the 30-day value. No plant
   constant is written here: the relations between the terms are fitted from data (``training.plant``).
   Operating states (driving, charging, asleep) come from whatever signals exist (``_operating_states``).

Fill rules (missing is NaN, never made up): a window quantity with no valid sample (sensor dropout, no
frame under load) takes the vehicle's last valid value of that quantity, and stays NaN when the vehicle
never had one (a sensor it does not send); LightGBM takes NaN natively, the anomaly model masks it.
Averages are in time (half-lives in ms), so gaps between windows are handled.

>>> ts = np.arange(0, 3_600_000, 10_000, dtype=np.int64)
>>> cols = {name: np.full(ts.size, 1.0) for name in REQUIRED_COLUMNS}
>>> state = FeatureState()
>>> x = state.update({"ts": ts, **cols})
>>> x.shape == (len(FEATURE_NAMES),) and x.dtype == np.float32 and bool(np.isfinite(x[:4]).all())
True
>>> np.array_equal(FeatureState.from_bytes(state.to_bytes()).update({"ts": ts + 3_600_000, **cols}),
...                state.update({"ts": ts + 3_600_000, **cols}), equal_nan=True)
True
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence

import numpy as np

from configs.schema import SCHEMA
from training.windows import in_order_mask, window_index

__all__ = [
    "FEATURE_NAMES", "FEATURES_VERSION", "FEATURES_HASH", "STAT_SIGNALS", "DERIVED_NAMES", "TREND_KEYS",
    "REQUIRED_COLUMNS", "ACCUM_KEYS", "FeatureState", "window_accumulators", "window_raw_features",
    "raw_features_many", "update_many", "vehicle_feature_matrix", "RELATION_TERMS", "RELATION_TERM_INDEX",
]

FEATURES_VERSION = "4"

# Signals summarised by mean/std/min/max in every window. Position, odometer (see distance) and the
# charger enum (see activity shares) are left out: their raw level says nothing about health.
STAT_SIGNALS: tuple[str, ...] = (
    "pack_voltage", "pack_current", "soc", "soh", "cell_voltage_min", "cell_voltage_max",
    "cell_temp_max", "cell_temp_avg", "internal_resistance", "insulation_resistance",
    "coolant_temp_in", "coolant_temp_out", "coolant_flow", "pump_speed", "hvac_power",
    "motor_speed", "motor_torque", "motor_temp", "inverter_temp", "speed",
    "tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr",
    "brake_pad_wear", "brake_temp", "aux_battery_voltage", "dcdc_current", "charge_power", "ambient_temp",
)
_STATS = ("mean", "std", "min", "max")

DERIVED_NAMES: tuple[str, ...] = (
    "cell_v_spread_mean", "cell_v_spread_max", "cell_v_spread_load_mean", "cell_v_spread_rest_mean",
    "cell_t_spread_mean", "cell_t_spread_max",
    "pack_rise_mean", "pack_rise_max", "pack_rise_per_load",
    "coolant_dt_mean", "coolant_dt_per_flow", "flow_per_pump_krpm",
    "motor_rise_mean", "motor_rise_max", "motor_rise_per_torque",
    "inverter_rise_mean", "inverter_rise_max", "inverter_rise_per_current",
    "resistance_est_mohm",
    # Ratios over the frames where they mean something (pump running, driving), referred to the coolant:
    "flow_per_pump_active", "inverter_rise_per_kw", "motor_rise_per_krpm",
    "tyre_min_mean", "tyre_spread_mean", "tyre_comp_min_mean",
    "brake_rise_max", "aux_v_rest_mean",
    "driving_share", "charging_share", "distance_km", "abs_current_mean",
    "nan_share", "out_of_range_share", "stuck_share", "spike_score", "n_frames",
)

# Quantities followed across windows (trend and per-vehicle delta): the precursors of the failure
# modes in configs/labeling_spec.md plus the data-quality scores that reveal sensor faults.
TREND_KEYS: tuple[str, ...] = (
    "cell_v_spread_load_mean", "cell_v_spread_mean", "cell_t_spread_mean", "pack_rise_per_load",
    "coolant_dt_per_flow", "flow_per_pump_krpm", "motor_rise_per_torque", "inverter_rise_per_current",
    "flow_per_pump_active", "inverter_rise_per_kw", "motor_rise_per_krpm",
    "resistance_est_mohm", "internal_resistance_mean", "insulation_resistance_min", "tyre_comp_min_mean",
    "tyre_spread_mean", "aux_battery_voltage_min", "aux_v_rest_mean", "brake_pad_wear_mean",
    "brake_rise_max", "soh_mean", "motor_temp_max", "inverter_temp_max",
    "nan_share", "stuck_share", "spike_score",
)
_CONTEXT = ("ema1d", "trend", "z")

# Operating terms accumulated over many windows, each the time-decayed mean of one per-frame quantity over
# the frames where its operating state holds (driving, asleep, waking, under load, pumping): a ratio of
# sums (sum of the quantity over the sum of the frame count, each an exponential average in time), so a
# window with one frame of driving weighs one frame, not a whole window. They are *plant-free*: the
# relations between them (temperature rise per load, energy per km, 12 V rest voltage, cooling effort per
# heat) are not written here but FITTED on the fleet's healthy training windows (``training.plant``,
# stored in the model artefact), so the features measure the vehicle, not how well they invert our
# simulator. The terms of one relation share one frame mask (every term present), so a linear relation
# that holds frame by frame holds between their means exactly. A vehicle that does not send a term's
# inputs has no frame in its mask: the term is NaN (missing, never made up).
ACCUM_KEYS: tuple[str, ...] = (
    "drive_inverter_rise",  # inverter - coolant in, while driving (relation: against drive_power_kw)
    "drive_power_kw",  # |pack voltage x current| in kW, same frames
    "drive_motor_rise",  # motor - coolant in, while driving (relation: against torque^2 and speed)
    "drive_torque_sq",  # (motor torque / 100 Nm)^2, same frames
    "drive_krpm",  # |motor speed| in krpm, same frames
    "energy_power_kw",  # |pack voltage x current| in kW while driving (relation: against speed and ambient)
    "energy_speed",  # speed in km/h, same frames
    "energy_ambient",  # ambient temperature, same frames
    "flow_per_krpm",  # coolant flow per pump krpm while pumping (a ratio of sums of flow and pump speed)
    "sleep_aux_v",  # 12 V voltage while asleep (relation: against ambient)
    "sleep_ambient",  # ambient temperature, same frames
    "sleep_ambient_sq",  # (ambient / 10 C)^2, same frames
    "aux_sleep_slope",  # 12 V voltage change per window while asleep: faster when the battery is weak
    "wake_dcdc",  # DC-DC current at the first awake frame after sleep (relation: against wake_hvac)
    "wake_hvac",  # HVAC power (kW) at the same frames
    "load_cell_spread_mv",  # cell-voltage spread (mV) under load (relation: against load_abs_current)
    "load_abs_current",  # |pack current| (A), same frames
    "load_pack_rise",  # cell temperature - ambient under load (relation: against load_current_sq)
    "load_current_sq",  # (pack current / 100 A)^2, same frames
    # Usage that raises the hazard of some modes (labelling spec, 1): heat and cold, DC fast charging, mileage.
    "ambient",  # mean ambient temperature
    "dc_charge_share",  # share of frames charging above 50 kW
    "km_per_window",  # distance per window
)
# Short (1 day), long (7 day) and slow (30 day) estimates, and short minus slow (how far it has moved).
_ACCUM_CONTEXT = ("acc1d", "acc7d", "acc30d", "accdiff")
# Keys whose 1-day minus 30-day movement is a feature: the usage covariates and the plant-free ratio. The
# other operating terms move with how the vehicle is used; how far their *relation* moved is the plant's
# residual drift (training.plant), so their own drift is left out.
_DRIFT_KEYS = frozenset({"flow_per_krpm", "aux_sleep_slope", "ambient", "dc_charge_share", "km_per_window"})
_ACC_KEEP = np.array([i * len(_ACCUM_CONTEXT) + j for i, k in enumerate(ACCUM_KEYS)
                      for j, c in enumerate(_ACCUM_CONTEXT) if c != "accdiff" or k in _DRIFT_KEYS])
SLOW_HALF_LIFE_MS = 30 * 86_400_000

# The operating terms that enter a plant relation (training.plant): alone they describe how the vehicle was
# used as much as its health, so statistics over single features (a twin's own baseline) leave them out.
RELATION_TERMS: frozenset[str] = frozenset(ACCUM_KEYS) - _DRIFT_KEYS

RAW_NAMES: tuple[str, ...] = tuple(f"{s}_{st}" for s in STAT_SIGNALS for st in _STATS) + DERIVED_NAMES
FEATURE_NAMES: tuple[str, ...] = RAW_NAMES + tuple(f"{k}_{c}" for k in TREND_KEYS for c in _CONTEXT) \
    + tuple(f"{k}_{c}" for k in ACCUM_KEYS for c in _ACCUM_CONTEXT if c != "accdiff" or k in _DRIFT_KEYS)
# Positions of the relation terms' features (``RELATION_TERMS``) among FEATURE_NAMES.
RELATION_TERM_INDEX = np.array([i for i, name in enumerate(FEATURE_NAMES) if name.rsplit("_", 1)[0] in RELATION_TERMS],
                               dtype=np.int64)
FEATURES_HASH: str = hashlib.sha256(("v" + FEATURES_VERSION + "|" + ",".join(FEATURE_NAMES)).encode()).hexdigest()[:16]

# Every sensor column a window must carry (missing sensors can be passed as all-NaN arrays).
REQUIRED_COLUMNS: tuple[str, ...] = SCHEMA.sensor_names

_COL = {name: i for i, name in enumerate(REQUIRED_COLUMNS)}
_STAT_IDX = np.array([_COL[s] for s in STAT_SIGNALS])
_STAT_POS = {s: i for i, s in enumerate(STAT_SIGNALS)}
_RAW_IDX = {name: i for i, name in enumerate(RAW_NAMES)}
_TREND_IDX = np.array([_RAW_IDX[k] for k in TREND_KEYS])
_ACCUM_IDX = {name: i for i, name in enumerate(ACCUM_KEYS)}
# The rows of the derived features among the raw ones (RAW_NAMES places them together, after the statistics).
_DERIVED_ROWS = slice(_RAW_IDX[DERIVED_NAMES[0]], _RAW_IDX[DERIVED_NAMES[-1]] + 1)
if RAW_NAMES[_DERIVED_ROWS] != DERIVED_NAMES:
    raise ImportError("RAW_NAMES must hold DERIVED_NAMES together, in their order")
_STAT_COLUMN = {st: i for i, st in enumerate(_STATS)}  # a statistic's place among a signal's four
_TYRES = np.array([_COL[f"tyre_pressure_{p}"] for p in ("fl", "fr", "rl", "rr")])
# Signals that carry measurement noise even when the vehicle rests: an exactly flat trace is stuck.
_NOISY = np.array([_COL[s] for s in (
    "pack_voltage", "cell_voltage_min", "cell_voltage_max", "cell_temp_avg", "coolant_temp_in",
    "coolant_temp_out", "motor_temp", "inverter_temp", "tyre_pressure_fl", "tyre_pressure_fr",
    "tyre_pressure_rl", "tyre_pressure_rr", "aux_battery_voltage", "ambient_temp", "brake_temp",
)])
_RANGE = SCHEMA.upper_bounds - SCHEMA.lower_bounds
_FLOAT_MAX = np.finfo(np.float64).max
_LOWER, _UPPER = SCHEMA.lower_bounds[:, None, None], SCHEMA.upper_bounds[:, None, None]

LOAD_CURRENT_A = 30.0  # |pack current| above this counts as "under load"
PUMP_ON_RPM = 100.0  # coolant pump counts as running above this
DRIVING_KMH = 5.0  # frames above this speed count as driving for drivetrain ratios
DRIVING_RPM = 300.0  # without a speed signal: motor speed above this counts as driving
CHARGING_KW = 0.5  # without a charger state: charge power above this counts as charging
DCDC_OFF_A = 0.05  # the DC-DC converter is off (the vehicle asleep) below this current
SLEEP_CURRENT_A = 2.0  # without DC-DC current: a parked pack current below this counts as asleep
SHORT_HALF_LIFE_MS = 86_400_000  # 1 day
LONG_HALF_LIFE_MS = 7 * 86_400_000  # 7 days
Z_CLIP = 50.0
BASELINE_WARMUP_WINDOWS = 24  # windows learned unconditionally before winsorising starts
BASELINE_LEARN_Z = 3.0
# Frames (padded) per batch the window maths runs on: small enough that its arrays stay in a core's
# cache, large enough that numpy's per-call cost spreads over many windows (measured: bench_features.py).
_BATCH_FRAMES = 3_072
_CONTEXT_BATCH = 256  # vehicles per batch of the context step, for the same reason


def _frame_sums(x: np.ndarray) -> np.ndarray:
    """Sums over the frame axis of a contiguous (k, frames, windows) array, adding each window's frames in order.

    A window's features must not depend on the batch it is computed in (how much NaN padding follows
    it, which windows sit beside it), or the twins (many vehicles at once) and the offline matrix (one
    vehicle's windows) would differ by rounding. numpy reduces a contiguous axis pairwise, grouping
    terms by position, so reduce only where the windows axis is innermost (two or more windows) and
    otherwise accumulate, which always adds in order. Callers zero the padding: ``x + 0.0 == x``.
    """
    if x.shape[2] >= 2:
        return np.add.reduce(x, axis=1)
    return np.add.accumulate(x, axis=1)[:, -1]


def _window_arrays(windows: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The windows as float64 (rows, ``REQUIRED_COLUMNS``) arrays, checked, and their (B,) row counts."""
    arrays = [np.asarray(w, dtype=np.float64) for w in windows]
    width = len(REQUIRED_COLUMNS)
    for k, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != width:
            raise ValueError(f"window values must be (rows, {width}), got {a.shape} (window {k} of the batch)")
    return arrays, np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))


def _windows_per_batch(n: np.ndarray) -> int:
    """How many windows the maths takes at once: about ``_BATCH_FRAMES`` padded frames (cache-sized arrays)."""
    return max(1, _BATCH_FRAMES // max(int(n.max(initial=0)), 1))


def _slice_windows(by_column: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Frames of the windows ``[lo[i], hi[i])`` (they may overlap) of frames given column-major,
    (len(REQUIRED_COLUMNS), frames), as (len(REQUIRED_COLUMNS), T, B): each window's rows first, then NaN.

    Column-major and windows innermost: each signal is one contiguous (T, B) block, cheap to compute on.
    """
    rows = max(int((hi - lo).max(initial=0)), 1)
    inside = np.arange(rows)[:, None] < (hi - lo)
    if by_column.shape[1] == 0:
        return np.full((len(REQUIRED_COLUMNS), rows, lo.size), np.nan)
    cols = by_column[:, np.where(inside, lo + np.arange(rows)[:, None], 0)]
    cols[:, ~inside] = np.nan
    return cols


def raw_features_many(windows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Context-free features of B windows at once: raw (B, len(RAW_NAMES)), numerators and weights (B, len(ACCUM_KEYS)).

    Row ``i`` is ``window_raw_features(windows[i])`` and ``window_accumulators(windows[i])``, which are
    this function with B = 1. Windows may have different row counts (0 included).
    """
    arrays, n = _window_arrays(windows)
    if not arrays:
        return np.empty((0, len(RAW_NAMES))), np.empty((0, len(ACCUM_KEYS))), np.empty((0, len(ACCUM_KEYS)))
    step = _windows_per_batch(n)
    by_column = np.concatenate(arrays).T  # the windows end to end, column-major
    lo = np.cumsum(n) - n
    parts = [_window_batch(_slice_windows(by_column, lo[s:s + step], lo[s:s + step] + n[s:s + step]), n[s:s + step])
             for s in range(0, len(arrays), step)]
    if len(parts) == 1:
        return parts[0]
    raw, num, den = (np.concatenate(p) for p in zip(*parts, strict=False))
    return raw, num, den


def window_raw_features(values: np.ndarray) -> np.ndarray:
    """Features of one window from its frames alone (rows x ``REQUIRED_COLUMNS``); NaN where undefined.

    Context-free half of the feature function; :class:`FeatureState` fills NaN and adds context.
    """
    return raw_features_many([values])[0][0]


def window_accumulators(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(numerator, weight) per ``ACCUM_KEYS`` entry for one window's frames; weight 0 where undefined."""
    _, num, den = raw_features_many([values])
    return num[0], den[0]


_RISE_COLS = np.array([_COL[s] for s in ("cell_temp_avg", "motor_temp", "inverter_temp", "brake_temp")])
_ABS_COLS = np.array([_COL[s] for s in ("pack_current", "motor_torque", "motor_speed")])


def _window_batch(cols: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The feature maths on NaN-padded frames (columns, T, B) with ``n`` real rows each; see :func:`raw_features_many`.

    Padding rows are NaN in every column, so every "valid sample" test (finite, above a threshold)
    leaves them out, and quantities over consecutive rows see NaN past a window's last row.
    """
    _, rows, batch = cols.shape
    col = lambda name: cols[_COL[name]]  # noqa: E731 - local shorthand, (T, B) blocks
    n_stat = len(STAT_SIGNALS)
    with np.errstate(all="ignore"):
        current, ambient, speed = col("pack_current"), col("ambient_temp"), col("speed")
        voltage, coolant_in, pump = col("pack_voltage"), col("coolant_temp_in"), col("pump_speed")
        abs_current, abs_torque, abs_motor_speed = np.abs(cols[_ABS_COLS])
        under_load = abs_current > LOAD_CURRENT_A
        at_rest = abs_current <= LOAD_CURRENT_A
        driving, charging, asleep, state_known = _operating_states(cols)
        cv_spread = col("cell_voltage_max") - col("cell_voltage_min")
        pack_rise, motor_rise, inverter_rise, brake_rise = cols[_RISE_COLS] - ambient
        power_kw = np.abs(voltage * current) / 1000.0
        tyres = cols[_TYRES]
        tyre_min, tyre_max = tyres.min(axis=0), tyres.max(axis=0)  # NaN if any tyre is NaN
        # Everything summarised NaN-aware per window in one pass: the STAT_SIGNALS, then per-frame quantities
        # (rows of ``summarised`` after the statistics, in this dict's order: ``at`` names them).
        per_frame = {
            "cv_spread": cv_spread,
            "cv_spread_load": np.where(under_load, cv_spread, np.nan),
            "cv_spread_rest": np.where(at_rest, cv_spread, np.nan),
            "ct_spread": col("cell_temp_max") - col("cell_temp_min"),
            "pack_rise": pack_rise,
            "coolant_dt": col("coolant_temp_out") - coolant_in,
            "motor_rise": motor_rise,
            "inverter_rise": inverter_rise,
            "tyre_min": tyre_min,
            "tyre_spread": tyre_max - tyre_min,
            "tyre_comp_min": tyre_min * 293.15 / (ambient + 273.15),
            "brake_rise": brake_rise,
            "aux_rest": np.where(at_rest, col("aux_battery_voltage"), np.nan),
            "abs_current": abs_current,
            "abs_torque": abs_torque,
            "flow_per_pump": np.where(pump > PUMP_ON_RPM, col("coolant_flow") / (pump / 1000.0), np.nan),
            # Drivetrain temperatures over the coolant while driving, per unit of a generic load scale (1 + kW / 10,
            # 1 + krpm) so that the level moves less with how hard the vehicle is driven; the fitted relation
            # of each rise to its load is training.plant's.
            "inverter_over_coolant": np.where(driving, (col("inverter_temp") - coolant_in) / (1.0 + power_kw / 10.0),
                                              np.nan),
            "motor_over_coolant": np.where(driving, (col("motor_temp") - coolant_in) / (1.0 + abs_motor_speed / 1000.0),
                                           np.nan),
            "odometer": col("odometer"),
        }
        at = {**_STAT_POS, **{name: n_stat + i for i, name in enumerate(per_frame)}}
        if len(at) != n_stat + len(per_frame):
            raise AssertionError("a per-frame quantity is named like a STAT_SIGNALS entry")
        summarised = np.empty((n_stat + len(per_frame), rows, batch))
        summarised[:n_stat] = cols[_STAT_IDX]
        for name, quantity in per_frame.items():
            summarised[at[name]] = quantity
        counted = np.isfinite(summarised)
        summarised += 0.0 * summarised  # +-inf -> NaN: from here on NaN marks every value left out
        count = _count(counted, axis=1)
        n_summ = summarised.shape[0]

        # Accumulator terms (see ACCUM_KEYS): per-frame quantities over the frames their mask picks; the
        # terms of one relation share a mask that needs every one of them present.
        ambient_ok = np.isfinite(ambient)
        inverter = col("inverter_temp") - coolant_in
        ok_inverter = driving & np.isfinite(inverter) & np.isfinite(power_kw)
        motor = col("motor_temp") - coolant_in
        torque_sq = (col("motor_torque") / 100.0) ** 2
        rpm_k = abs_motor_speed / 1000.0
        ok_motor = driving & np.isfinite(motor) & np.isfinite(torque_sq) & np.isfinite(rpm_k)
        ok_energy = driving & np.isfinite(power_kw) & np.isfinite(speed) & ambient_ok
        pump_k = pump / 1000.0
        flow = col("coolant_flow")
        ok_pump = (pump_k > PUMP_ON_RPM / 1000.0) & np.isfinite(flow)
        aux = col("aux_battery_voltage")
        ambient_sq = (ambient / 10.0) ** 2
        ok_sleep = asleep & np.isfinite(aux) & np.isfinite(ambient_sq)
        position = np.arange(rows, dtype=np.float64)[:, None]  # row number in the window, for the 12 V slope
        dcdc, hvac = col("dcdc_current"), col("hvac_power")
        wake = np.zeros((rows, batch), dtype=bool)
        real = np.arange(rows)[:, None] < n  # rows of the window (not padding)
        wake[1:] = asleep[:-1] & ~asleep[1:] & real[1:]  # first awake row after a sleeping one
        ok_wake = wake & np.isfinite(dcdc) & np.isfinite(hvac)
        spread_mv = cv_spread * 1000.0
        ok_spread = under_load & np.isfinite(spread_mv) & np.isfinite(abs_current)
        current_sq = (current / 100.0) ** 2
        ok_pack = under_load & np.isfinite(pack_rise) & np.isfinite(current_sq)
        ok_resistance = np.isfinite(voltage) & np.isfinite(current)
        masked = {"drive_inverter_rise": (inverter, ok_inverter), "drive_power_kw": (power_kw, ok_inverter),
                  "drive_motor_rise": (motor, ok_motor), "drive_torque_sq": (torque_sq, ok_motor),
                  "drive_krpm": (rpm_k, ok_motor), "energy_power_kw": (power_kw, ok_energy),
                  "energy_speed": (speed, ok_energy), "energy_ambient": (ambient, ok_energy),
                  "flow": (flow, ok_pump), "pump": (pump_k, ok_pump),
                  "sleep_aux_v": (aux, ok_sleep), "sleep_ambient": (ambient, ok_sleep),
                  "sleep_ambient_sq": (ambient_sq, ok_sleep), "position": (position, ok_sleep),
                  "wake_dcdc": (dcdc, ok_wake), "wake_hvac": (hvac, ok_wake),
                  "load_cell_spread_mv": (spread_mv, ok_spread), "load_abs_current": (abs_current, ok_spread),
                  "load_pack_rise": (pack_rise, ok_pack), "load_current_sq": (current_sq, ok_pack),
                  "voltage": (voltage, ok_resistance), "current": (current, ok_resistance)}
        first_pass = np.zeros((n_summ + len(masked), rows, batch))
        np.copyto(first_pass[:n_summ], summarised, where=counted)
        for k, (quantity, ok) in enumerate(masked.values()):
            np.copyto(first_pass[n_summ + k], quantity, where=ok)
        sums = _frame_sums(first_pass)
        mean = sums[:n_summ] / count
        masked_sum = dict(zip(masked, sums[n_summ:], strict=False))  # per name: the sum over the rows its mask picks
        n_sleep, n_res = _count(ok_sleep, axis=0), _count(ok_resistance, axis=0)
        # Second pass: squared deviations from the window means (std, dV/dI, 12 V sleep slope).
        pos_dev = position - masked_sum["position"] / n_sleep
        i_dev = current - masked_sum["current"] / n_res
        second = {"var_i": (i_dev ** 2, ok_resistance),
                  "cov_vi": ((voltage - masked_sum["voltage"] / n_res) * i_dev, ok_resistance),
                  "var_t": (pos_dev ** 2, ok_sleep),
                  "cov_ty": (pos_dev * (aux - masked_sum["sleep_aux_v"] / n_sleep), ok_sleep)}
        second_pass = np.zeros((n_stat + len(second), rows, batch))
        np.copyto(second_pass[:n_stat], (summarised[:n_stat] - mean[:n_stat, None, :]) ** 2, where=counted[:n_stat])
        for k, (quantity, ok) in enumerate(second.values()):
            np.copyto(second_pass[n_stat + k], quantity, where=ok)
        deviations = _frame_sums(second_pass)
        std = np.sqrt(deviations[:n_stat] / count[:n_stat])
        deviation_sum = dict(zip(second, deviations[n_stat:], strict=False))
        var_t, cov_ty = deviation_sum["var_t"], deviation_sum["cov_ty"]
        vmin, vmax = np.fmin.reduce(summarised, axis=1), np.fmax.reduce(summarised, axis=1)  # NaN: no value

        out = np.empty((len(RAW_NAMES), batch))
        by_stat = out[: 4 * n_stat].reshape(n_stat, 4, batch)  # per signal (STAT_SIGNALS order): the _STATS
        for statistic, values in (("mean", mean[:n_stat]), ("std", std), ("min", vmin[:n_stat]),
                                  ("max", vmax[:n_stat])):
            by_stat[:, _STAT_COLUMN[statistic]] = values
        pm = lambda name: mean[at[name]]  # noqa: E731 - a summarised quantity's window mean, (B,)
        px = lambda name: vmax[at[name]]  # noqa: E731 - and its window maximum
        odo_span = px("odometer") - vmin[at["odometer"]]
        load_factor = 1.0 + pm("abs_current") / 100.0
        flow_mean, pump_mean = pm("coolant_flow"), pm("pump_speed")
        var_i, cov_vi = deviation_sum["var_i"] / n_res, deviation_sum["cov_vi"] / n_res
        derived = {
            "cell_v_spread_mean": pm("cv_spread"),
            "cell_v_spread_max": px("cv_spread"),
            "cell_v_spread_load_mean": pm("cv_spread_load"),
            "cell_v_spread_rest_mean": pm("cv_spread_rest"),
            "cell_t_spread_mean": pm("ct_spread"),
            "cell_t_spread_max": px("ct_spread"),
            "pack_rise_mean": pm("pack_rise"),
            "pack_rise_max": px("pack_rise"),
            "pack_rise_per_load": pm("pack_rise") / load_factor,
            "coolant_dt_mean": pm("coolant_dt"),
            "coolant_dt_per_flow": np.where(np.isfinite(flow_mean), pm("coolant_dt") / np.maximum(flow_mean, 0.5),
                                            np.nan),
            "flow_per_pump_krpm": np.where(np.isfinite(pump_mean), flow_mean / np.maximum(pump_mean / 1000.0, 0.1),
                                           np.nan),
            "motor_rise_mean": pm("motor_rise"),
            "motor_rise_max": px("motor_rise"),
            "motor_rise_per_torque": pm("motor_rise") / (1.0 + pm("abs_torque") / 100.0),
            "inverter_rise_mean": pm("inverter_rise"),
            "inverter_rise_max": px("inverter_rise"),
            "inverter_rise_per_current": pm("inverter_rise") / load_factor,
            # -dV/dI (mOhm) by least squares; undefined under 5 samples or 5 A of spread (the slope is noise).
            "resistance_est_mohm": np.where((n_res >= 5) & (var_i >= 25.0), np.abs(cov_vi / var_i) * 1000.0, np.nan),
            "flow_per_pump_active": pm("flow_per_pump"),
            "inverter_rise_per_kw": pm("inverter_over_coolant"),
            "motor_rise_per_krpm": pm("motor_over_coolant"),
            "tyre_min_mean": pm("tyre_min"),
            "tyre_spread_mean": pm("tyre_spread"),
            "tyre_comp_min_mean": pm("tyre_comp_min"),
            "brake_rise_max": px("brake_rise"),
            "aux_v_rest_mean": pm("aux_rest"),
            "driving_share": _share(driving, np.where(state_known, 0.0, np.nan)),
            "charging_share": _share(charging, np.where(state_known, 0.0, np.nan)),
            "distance_km": odo_span,
            "abs_current_mean": pm("abs_current"),
            **_quality(cols, n),
            "n_frames": n,
        }
        if len(derived) != len(DERIVED_NAMES):  # every name below is looked up, so none is left unset
            raise AssertionError(f"derived features: {len(derived)} computed, {len(DERIVED_NAMES)} named")
        out[_DERIVED_ROWS] = [derived[name] for name in DERIVED_NAMES]
        # Whether a zero comes out as 0.0 or -0.0 depends on the batch (padding adds +0.0, SIMD min/max
        # pick either); + 0.0 makes every zero +0.0, so a window's raw features are bit-identical in any batch.
        out += 0.0

        # Accumulators: (numerator, weight) per ACCUM_KEYS entry, 0 where the window has too few samples.
        enough = {"drive_inverter": _count(ok_inverter, axis=0) >= 3, "drive_motor": _count(ok_motor, axis=0) >= 3,
                  "energy": _count(ok_energy, axis=0) >= 3, "pump": _count(ok_pump, axis=0) >= 3,
                  "sleep": n_sleep >= 10, "wake": _count(ok_wake, axis=0) >= 1,
                  "load_cell": _count(ok_spread, axis=0) >= 3, "load_pack": _count(ok_pack, axis=0) >= 3}
        counts = {"drive_inverter": _count(ok_inverter, axis=0), "drive_motor": _count(ok_motor, axis=0),
                  "energy": _count(ok_energy, axis=0), "sleep": n_sleep, "wake": _count(ok_wake, axis=0),
                  "load_cell": _count(ok_spread, axis=0), "load_pack": _count(ok_pack, axis=0)}
        sloped = enough["sleep"] & (var_t > 0)
        charge = col("charge_power")
        charge_ok = np.isfinite(charge)
        enough_odo = count[at["odometer"]] >= 2

        def mean_term(name: str, group: str) -> tuple[np.ndarray, np.ndarray]:
            return (np.where(enough[group], masked_sum[name], 0.0), np.where(enough[group], counts[group], 0.0))

        accumulated = {
            "drive_inverter_rise": mean_term("drive_inverter_rise", "drive_inverter"),
            "drive_power_kw": mean_term("drive_power_kw", "drive_inverter"),
            "drive_motor_rise": mean_term("drive_motor_rise", "drive_motor"),
            "drive_torque_sq": mean_term("drive_torque_sq", "drive_motor"),
            "drive_krpm": mean_term("drive_krpm", "drive_motor"),
            "energy_power_kw": mean_term("energy_power_kw", "energy"),
            "energy_speed": mean_term("energy_speed", "energy"),
            "energy_ambient": mean_term("energy_ambient", "energy"),
            "flow_per_krpm": (np.where(enough["pump"], masked_sum["flow"], 0.0),
                              np.where(enough["pump"], masked_sum["pump"], 0.0)),
            "sleep_aux_v": mean_term("sleep_aux_v", "sleep"),
            "sleep_ambient": mean_term("sleep_ambient", "sleep"),
            "sleep_ambient_sq": mean_term("sleep_ambient_sq", "sleep"),
            "aux_sleep_slope": (np.where(sloped, cov_ty / var_t * n * n_sleep, 0.0),  # volts per window
                                np.where(sloped, n_sleep, 0.0)),
            "wake_dcdc": mean_term("wake_dcdc", "wake"),
            "wake_hvac": mean_term("wake_hvac", "wake"),
            "load_cell_spread_mv": mean_term("load_cell_spread_mv", "load_cell"),
            "load_abs_current": mean_term("load_abs_current", "load_cell"),
            "load_pack_rise": mean_term("load_pack_rise", "load_pack"),
            "load_current_sq": mean_term("load_current_sq", "load_pack"),
            "ambient": (sums[at["ambient_temp"]], count[at["ambient_temp"]]),
            "dc_charge_share": ((charge_ok & (charge > 50.0)).sum(axis=0), charge_ok.sum(axis=0)),
            "km_per_window": (np.where(enough_odo, odo_span, 0.0), enough_odo),
        }
        if len(accumulated) != len(ACCUM_KEYS):
            raise AssertionError(f"accumulators: {len(accumulated)} computed, {len(ACCUM_KEYS)} named")
        num, den = np.zeros((len(ACCUM_KEYS), batch)), np.zeros((len(ACCUM_KEYS), batch))
        for name, (numerator, weight) in accumulated.items():
            num[_ACCUM_IDX[name]], den[_ACCUM_IDX[name]] = numerator, weight
    return out.T, num.T, den.T


def _operating_states(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame (T, B): driving, charging, asleep, and whether any state signal was sent at all.

    From whatever the vehicle sends, in order of directness: driving is speed above ``DRIVING_KMH``,
    else motor speed above ``DRIVING_RPM``, else pack current above ``LOAD_CURRENT_A`` while not charging;
    charging is the charger state, else charge power above ``CHARGING_KW``; asleep is the DC-DC converter
    off, else a pack current under ``SLEEP_CURRENT_A`` while neither driving nor charging. A frame without
    any of the signals a state needs is in none of them.
    """
    speed, motor_speed, current = cols[_COL["speed"]], cols[_COL["motor_speed"]], cols[_COL["pack_current"]]
    charger, charge_power, dcdc = cols[_COL["charger_state"]], cols[_COL["charge_power"]], cols[_COL["dcdc_current"]]
    has_speed, has_rpm, has_current = np.isfinite(speed), np.isfinite(motor_speed), np.isfinite(current)
    has_charger, has_power = np.isfinite(charger), np.isfinite(charge_power)
    charging = np.where(has_charger, charger > 0, has_power & (charge_power > CHARGING_KW))
    driving = np.where(has_speed, speed > DRIVING_KMH,
                       np.where(has_rpm, np.abs(motor_speed) > DRIVING_RPM,
                                has_current & (np.abs(current) > LOAD_CURRENT_A) & ~charging))
    asleep = np.where(np.isfinite(dcdc), np.abs(dcdc) < DCDC_OFF_A,
                      has_current & (np.abs(current) < SLEEP_CURRENT_A) & ~driving & ~charging)
    known = has_speed | has_rpm | has_current | has_charger | has_power
    return driving, charging, asleep, known


def _count(mask: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Number of True along ``axis`` (as bytes: several times faster than summing booleans)."""
    return np.add.reduce(mask.view(np.uint8), axis=axis, dtype=np.int32)


def _share(mask: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per window, the share of rows with a finite ``source`` where ``mask`` holds; NaN without any."""
    valid = np.isfinite(source)
    return _count(mask & valid, axis=0) / _count(valid, axis=0)


def _quality(cols: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    """Per window: NaN share, out-of-range share, share of noisy signals stuck flat, largest step per range."""
    finite = np.isfinite(cols)
    cells = n * cols.shape[0]
    outside = finite & ((cols < _LOWER) | (cols > _UPPER))
    noisy = cols[_NOISY]
    noisy += 0.0 * noisy  # +-inf -> NaN, left out by fmin / fmax
    enough = _count(finite[_NOISY], axis=1) >= 5
    flat = enough & (np.fmax.reduce(noisy, axis=1) - np.fmin.reduce(noisy, axis=1) == 0.0)
    n_enough = _count(enough, axis=0)
    if cols.shape[1] >= 2:
        steps = np.abs(cols[:, 1:] - cols[:, :-1]) / _RANGE[:, None, None]  # NaN past a window's end (padding)
        steps += 0.0 * steps
        spike = np.fmax.reduce(steps, axis=(0, 1))
    else:
        spike = np.full(cols.shape[2], np.nan)
    return {
        "nan_share": 1.0 - _count(finite, axis=(0, 1)) / cells,
        "out_of_range_share": _count(outside, axis=(0, 1)) / cells,
        "stuck_share": np.where(n_enough > 0, _count(flat, axis=0) / np.maximum(n_enough, 1), np.nan),
        "spike_score": spike,
    }


# A vehicle's float state is one packed vector (so B states gather and scatter in one call each); the
# attributes of FeatureState are views of its parts: (name, shape, initial value, meaning).
_STATE_FIELDS: tuple[tuple[str, tuple[int, ...], float, str], ...] = (
    ("last_valid", (len(RAW_NAMES),), np.nan, "last valid value of each raw feature (fill rule)"),
    ("ema_short", (len(TREND_KEYS),), np.nan, "short (1 day) exponential average of each TREND_KEYS entry"),
    ("ema_long", (len(TREND_KEYS),), np.nan, "long (7 day) exponential average of each TREND_KEYS entry"),
    ("base_n", (len(TREND_KEYS),), 0.0, "windows learned by the baseline (Welford count)"),
    ("base_mean", (len(TREND_KEYS),), 0.0, "baseline mean (Welford)"),
    ("base_m2", (len(TREND_KEYS),), 0.0, "baseline sum of squared deviations (Welford M2)"),
    ("accum", (6, len(ACCUM_KEYS)), 0.0,
     "ratio-of-sums accumulators: rows (numerator, weight) for the short, long and slow half-lives"),
    ("accum_last", (len(ACCUM_KEYS),), np.nan, "last defined short ratio of each accumulator (fill rule)"),
)
_STATE_SIZES = [int(np.prod(shape)) for _, shape, _, _ in _STATE_FIELDS]
_STATE_SLICES: dict[str, slice] = {
    name: slice(start, start + size)
    for (name, _, _, _), size, start in zip(_STATE_FIELDS, _STATE_SIZES, np.cumsum([0] + _STATE_SIZES).tolist(), strict=False)
}
_STATE_INITIAL = np.concatenate([np.full(size, init) for (_, _, init, _), size in zip(_STATE_FIELDS, _STATE_SIZES, strict=False)])


def _state_field(name: str) -> property:
    """Attribute of FeatureState viewing one part of its packed state (assigning copies into it)."""
    part = _STATE_SLICES[name]
    shape, doc = next((shape, doc) for field, shape, _, doc in _STATE_FIELDS if field == name)

    def get(self: FeatureState) -> np.ndarray:
        return self._packed[part].reshape(shape)

    def set_(self: FeatureState, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"FeatureState.{name} must have shape {shape}, got {value.shape}")
        self._packed[part] = value.reshape(-1)

    return property(get, set_, doc=doc)


class FeatureState:
    """Per-vehicle feature context; ``update(window)`` returns the feature vector of one window.

    Holds, per raw feature, the last valid value (fill rule) and, per ``TREND_KEYS`` entry, the short
    and long exponential averages and the running baseline (count, mean, M2: Welford). The baseline
    is updated *after* the window's z-score is computed, so a window is never compared with itself.
    Many vehicles' states advance together with :func:`update_many`. The array attributes are views
    of one packed vector per vehicle (see ``_STATE_FIELDS``).
    """

    last_valid = _state_field("last_valid")
    ema_short = _state_field("ema_short")
    ema_long = _state_field("ema_long")
    base_n = _state_field("base_n")
    base_mean = _state_field("base_mean")
    base_m2 = _state_field("base_m2")
    accum = _state_field("accum")
    accum_last = _state_field("accum_last")

    def __init__(self) -> None:
        self.last_end_ms: int | None = None
        self.n_windows = 0
        self._packed = _STATE_INITIAL.copy()

    def update(self, window: Mapping[str, np.ndarray], end_ms: int | None = None) -> np.ndarray:
        """Feature vector (float32, ``len(FEATURE_NAMES)``) of one window and advance the context.

        ``window`` maps 'ts' (int64 ms, ascending) and every name in ``REQUIRED_COLUMNS`` to the
        column of the window's frames. ``end_ms`` is the window's end on the grid of
        :mod:`training.windows` (pass it: the offline path does; when omitted, ``window['end_ms']`` or
        else the last frame time is used).
        """
        ts = np.asarray(window["ts"], dtype=np.int64)
        missing = [c for c in REQUIRED_COLUMNS if c not in window]
        if missing:
            raise KeyError(f"window lacks columns {missing[:5]}{'...' if len(missing) > 5 else ''}")
        values = np.column_stack([np.asarray(window[c], dtype=np.float64) for c in REQUIRED_COLUMNS]) \
            if ts.size else np.zeros((0, len(REQUIRED_COLUMNS)))
        if end_ms is None:
            end_ms = int(window["end_ms"]) if "end_ms" in window else (int(ts[-1]) if ts.size else 0)
        return self.update_values(end_ms, values)

    def update_values(self, end_ms: int, values: np.ndarray) -> np.ndarray:
        """As :meth:`update`, with the window's frames already stacked (rows x ``REQUIRED_COLUMNS``)."""
        return update_many([self], [end_ms], [values])[0]

    # --- serialisation (npz bytes, no pickle) -------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf, features_hash=np.array(FEATURES_HASH),
            scalars=np.array([-1 if self.last_end_ms is None else self.last_end_ms,
                              int(self.last_end_ms is None), self.n_windows], dtype=np.int64),
            last_valid=self.last_valid, ema_short=self.ema_short, ema_long=self.ema_long,
            base_n=self.base_n, base_mean=self.base_mean, base_m2=self.base_m2,
            accum=self.accum, accum_last=self.accum_last,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureState:
        """Restore a state; refuses one written by a different feature definition."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if str(npz["features_hash"]) != FEATURES_HASH:
                raise ValueError(f"FeatureState was saved with feature set {npz['features_hash']}, "
                                 f"this code computes {FEATURES_HASH}")
            state = cls()
            scalars = npz["scalars"]
            state.last_end_ms = None if scalars[1] else int(scalars[0])
            state.n_windows = int(scalars[2])
            for name in ("last_valid", "ema_short", "ema_long", "base_n", "base_mean", "base_m2", "accum",
                         "accum_last"):
                setattr(state, name, npz[name].astype(np.float64).copy())
        return state


def update_many(states: Sequence[FeatureState], end_ms: Sequence[int] | np.ndarray,
                windows: Sequence[np.ndarray]) -> np.ndarray:
    """Feature vectors (float32, (B, ``len(FEATURE_NAMES)``)) of B windows of B different vehicles at once.

    Exactly ``np.stack([s.update_values(e, w) for s, e, w in zip(states, end_ms, windows)])``, states
    included (``update_values`` is this function with B = 1), at a fraction of the cost for large B:
    what a fleet of twins, or the what-if simulator, calls when many windows close together. A vehicle's
    windows are sequential, so a state may appear only once per call.
    """
    states = list(states)
    ends = np.asarray(end_ms, dtype=np.int64).reshape(-1)
    if ends.size != len(states) or len(windows) != len(states):
        raise ValueError(f"update_many needs one end_ms and one window per state: got {len(states)} states, "
                         f"{ends.size} end_ms, {len(windows)} windows")
    if len({id(s) for s in states}) != len(states):
        seen: dict[int, int] = {}
        for i, s in enumerate(states):
            if id(s) in seen:
                raise ValueError(f"update_many got the same FeatureState at positions {seen[id(s)]} and {i}: a "
                                 "vehicle's windows are sequential, pass them in separate calls")
            seen[id(s)] = i
    if not states:
        return np.empty((0, len(FEATURE_NAMES)), dtype=np.float32)
    raw, num, den = raw_features_many(windows)
    return _advance_states(states, ends, raw, num, den)


def _decay_factors(dt: np.ndarray) -> np.ndarray:
    """(B, 3) factors ``0.5 ** (dt / half_life)`` for the short, long and slow half-lives.

    Python's ``**`` (C ``pow``), not numpy's vectorised power, so a factor is the same bits whatever
    the batch; windows closing together mostly share a gap, so this is a handful of calls.
    """
    half_lives = (SHORT_HALF_LIFE_MS, LONG_HALF_LIFE_MS, SLOW_HALF_LIFE_MS)
    if (dt == dt[0]).all():
        gap = int(dt[0])
        return np.broadcast_to(np.array([0.5 ** (gap / h) for h in half_lives]), (dt.size, 3)).copy()
    gaps, inverse = np.unique(dt, return_inverse=True)
    factors = np.array([[0.5 ** (gap / h) for h in half_lives] for gap in gaps.tolist()])
    return factors[inverse.reshape(-1)]


def _advance_states(states: list[FeatureState], ends: np.ndarray, raw: np.ndarray, num: np.ndarray,
                    den: np.ndarray) -> np.ndarray:
    """Gather B states, advance them by one window each (:func:`_context_step`), scatter them back."""
    if len(states) > _CONTEXT_BATCH:  # cache-sized pieces (the states are independent)
        return np.concatenate([_advance_states(states[i:i + _CONTEXT_BATCH], ends[i:i + _CONTEXT_BATCH],
                                               raw[i:i + _CONTEXT_BATCH], num[i:i + _CONTEXT_BATCH],
                                               den[i:i + _CONTEXT_BATCH])
                               for i in range(0, len(states), _CONTEXT_BATCH)])
    batch = len(states)
    first = np.fromiter((s.last_end_ms is None for s in states), dtype=bool, count=batch)
    last_end = np.fromiter((0 if s.last_end_ms is None else s.last_end_ms for s in states), dtype=np.int64, count=batch)
    packed, features = _context_step(np.array([s._packed for s in states]), first, last_end, ends, raw, num, den)
    for state, row, end in zip(states, packed, ends.tolist(), strict=False):
        # A copy, not a view: a state that stops updating must not keep the whole batch's array alive.
        state._packed = row.copy()
        state.last_end_ms = end
        state.n_windows += 1
    return features


def _context_step(packed: np.ndarray, first: np.ndarray, last_end: np.ndarray, ends: np.ndarray, raw: np.ndarray,
                  num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One window for each of B vehicles: (their new packed states (B, state size), features float32 (B, n)).

    ``packed`` are the states before (rows as ``FeatureState._packed``), ``first`` marks vehicles
    without a window yet, ``last_end`` their previous window end, ``raw``/``num``/``den`` this window's
    context-free half (:func:`raw_features_many`). Pure: the arguments are not modified.
    """
    batch = packed.shape[0]
    field = lambda name: packed[:, _STATE_SLICES[name]]  # noqa: E731 - local shorthand
    with np.errstate(invalid="ignore", divide="ignore"):
        # Fill rule: a raw feature without a valid value takes the vehicle's last valid one, else stays NaN
        # (an input the vehicle never sent is missing, not a made-up 0).
        last_valid = np.where(np.isfinite(raw), raw, field("last_valid"))
        filled = last_valid
        keys = filled[:, _TREND_IDX]
        present = np.isfinite(keys)

        decay = _decay_factors(np.maximum(ends - last_end, 0))  # (B, 3): short, long, slow
        decay[first] = 1.0  # a vehicle's first window has nothing to decay
        # Ratio-of-sums accumulators: decay to this window's end, add this window, read the ratios.
        accum = field("accum").reshape(batch, 6, len(ACCUM_KEYS)) * np.repeat(decay, 2, axis=1)[:, :, None]
        accum[:, 0::2] += num[:, None, :]
        accum[:, 1::2] += den[:, None, :]
        weights = accum[:, 1::2]
        ratios = np.where(weights > 1e-9, accum[:, 0::2] / weights, np.nan)
        short = np.where(np.isfinite(ratios[:, 0]), ratios[:, 0], field("accum_last"))
        long = np.where(np.isfinite(ratios[:, 1]), ratios[:, 1], short)
        slow = np.where(np.isfinite(ratios[:, 2]), ratios[:, 2], long)
        acc = np.empty((batch, len(ACCUM_KEYS), len(_ACCUM_CONTEXT)))  # per key: 1 day, 7 day, 30 day, diff
        acc[:, :, 0], acc[:, :, 1], acc[:, :, 2], acc[:, :, 3] = short, long, slow, short - slow

        # Exponential averages in time; a vehicle's first window starts them at its own value.
        first_col = first[:, None]
        ema_short, ema_long = field("ema_short"), field("ema_long")
        # (or at its first value of a key it had none of); a key still missing leaves its averages as they were.
        start = first_col | ~np.isfinite(ema_short)
        ema_short = np.where(present, np.where(start, keys, ema_short + (1.0 - decay[:, 0:1]) * (keys - ema_short)),
                             ema_short)
        ema_long = np.where(present, np.where(start, keys, ema_long + (1.0 - decay[:, 1:2]) * (keys - ema_long)),
                            ema_long)

        # z against the baseline of earlier windows (this one is learned after it is scored).
        base_n, base_mean, base_m2 = field("base_n"), field("base_mean"), field("base_m2")
        std = np.sqrt(base_m2 / np.maximum(base_n - 1, 1))
        floor = 1e-3 + 0.01 * np.abs(base_mean)
        z = np.where(present, np.where(base_n >= 2, (keys - base_mean) / np.maximum(std, floor), 0.0), np.nan)
        z = np.minimum(np.maximum(z, -Z_CLIP), Z_CLIP)
        context = np.empty((batch, len(TREND_KEYS), len(_CONTEXT)))  # per key: short average, trend, z
        context[:, :, 0], context[:, :, 1], context[:, :, 2] = ema_short, ema_short - ema_long, z
        # After a warm-up the baseline learns only from windows it finds normal (|z| <= 3), so a
        # slowly failing part does not become the vehicle's new normal and hide its own drift (Welford).
        learn = present & ((base_n < BASELINE_WARMUP_WINDOWS) | (np.abs(z) <= BASELINE_LEARN_Z))
        learned_n = base_n + learn
        delta = np.where(learn, keys - base_mean, 0.0)
        learned_mean = base_mean + delta / np.maximum(learned_n, 1)
        learned_m2 = base_m2 + delta * np.where(learn, keys - learned_mean, 0.0)

    after = np.empty_like(packed)
    for name, value in (("last_valid", last_valid), ("ema_short", ema_short), ("ema_long", ema_long),
                        ("base_n", learned_n), ("base_mean", learned_mean), ("base_m2", learned_m2),
                        ("accum", accum.reshape(batch, -1)), ("accum_last", short)):
        after[:, _STATE_SLICES[name]] = value
    features = np.empty((batch, len(FEATURE_NAMES)), dtype=np.float32)
    tail = np.concatenate([context.reshape(batch, -1), acc.reshape(batch, -1)[:, _ACC_KEEP]], axis=1)
    tail[np.isinf(tail)] = np.nan  # only on overflow: a value that cannot be computed is missing
    with np.errstate(over="ignore"):  # saturated below
        features[:, :filled.shape[1]] = filled  # finite, or NaN for an input the vehicle never sent
        features[:, filled.shape[1]:] = tail
    # A finite float64 beyond float32's range (an impossible reading, e.g. an odometer of 1e38 km) casts to
    # inf: saturate it, so the contract "never inf" holds for any input. Checked only when it happens.
    if np.isinf(features).any():
        limit = np.finfo(np.float32).max
        np.clip(features, -limit, limit, out=features, where=np.isinf(features))
    return after, features


def vehicle_feature_matrix(
    columns: Mapping[str, np.ndarray], window_ms: int, stride_ms: int, min_frames: int = 1,
    state: FeatureState | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Offline: (window_end_ms int64 (n,), X float32 (n, len(FEATURE_NAMES))) for one vehicle.

    ``columns`` holds 'ts' (int64 ms) and the sensor columns of the vehicle's frames in ``seq`` order.
    Frames out of time order are dropped (``in_order_mask``), windows come from ``window_index`` and
    each goes through the same code as ``FeatureState.update_values`` (the twin's path): the context-free
    part for many windows at once, then the per-vehicle context window by window (it is sequential).
    """
    ts = np.asarray(columns["ts"], dtype=np.int64)
    keep = in_order_mask(ts)
    by_column = np.full((len(REQUIRED_COLUMNS), ts.size), np.nan)  # a sensor absent from columns is NaN
    for j, name in enumerate(REQUIRED_COLUMNS):
        if name in columns:
            by_column[j] = np.asarray(columns[name], dtype=np.float64)
    if not keep.all():
        ts, by_column = ts[keep], by_column[:, keep]
    ends, lo, hi = window_index(ts, window_ms, stride_ms, min_frames)
    state = state if state is not None else FeatureState()
    X = np.empty((ends.size, len(FEATURE_NAMES)), dtype=np.float32)
    packed = state._packed[None]
    first = np.array([state.last_end_ms is None])
    last_end = np.array([0 if state.last_end_ms is None else state.last_end_ms], dtype=np.int64)
    chunk = _windows_per_batch(hi - lo)
    for start in range(0, ends.size, chunk):
        part = slice(start, min(start + chunk, ends.size))
        rows = (hi[part] - lo[part]).astype(np.int64)
        raw, num, den = _window_batch(_slice_windows(by_column, lo[part], hi[part]), rows)
        for k, i in enumerate(range(part.start, part.stop)):  # the context is sequential: window by window
            packed, x = _context_step(packed, first, last_end, ends[i:i + 1], raw[k:k + 1], num[k:k + 1], den[k:k + 1])
            first, last_end = np.zeros(1, dtype=bool), ends[i:i + 1]
            X[i] = x[0]
    if ends.size:
        state._packed, state.last_end_ms, state.n_windows = packed[0], int(ends[-1]), state.n_windows + int(ends.size)
    return ends, X
