"""The one feature function: per-window features, offline (training) and online (twins) alike.

A twin keeps a :class:`FeatureState` per vehicle and calls ``update(window)`` once per closed window
(see :mod:`training.windows` for which frames make a window). The offline pipeline
(:func:`vehicle_feature_matrix`) runs the very same ``FeatureState`` over a vehicle's recording, so the
two agree by construction.

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
4. *Accumulated physical estimates* for each of ``ACCUM_KEYS`` (inverter thermal factor, bearing drag,
   flow per pump speed, 12 V sleep discharge and level, DC-DC recharge at wake-up, load-normalised
   cell spread) and usage that raises some modes' hazard (ambient, DC fast charging, distance): ratio
   of a 1-day (7-day, 30-day) time-decayed sum of the response over the same sum of its load, and the
   1-day minus the 30-day value (how far it has moved).

Fill rules (features are never NaN): a window quantity with no valid sample (sensor dropout, no
frame under load) takes the vehicle's last valid value of that quantity, or ``0.0`` when the vehicle
never had one. Averages are in time (half-lives in ms), so gaps between windows are handled.

>>> ts = np.arange(0, 3_600_000, 10_000, dtype=np.int64)
>>> cols = {name: np.full(ts.size, 1.0) for name in REQUIRED_COLUMNS}
>>> state = FeatureState()
>>> x = state.update({"ts": ts, **cols})
>>> x.shape == (len(FEATURE_NAMES),) and x.dtype == np.float32 and bool(np.isfinite(x).all())
True
>>> FeatureState.from_bytes(state.to_bytes()).update({"ts": ts + 3_600_000, **cols}).tolist() == \\
...     state.update({"ts": ts + 3_600_000, **cols}).tolist()
True
"""
from __future__ import annotations

import hashlib
import io
from typing import Mapping

import numpy as np

from configs.schema import SCHEMA
from training.windows import in_order_mask, window_index

__all__ = [
    "FEATURE_NAMES", "FEATURES_VERSION", "FEATURES_HASH", "STAT_SIGNALS", "DERIVED_NAMES", "TREND_KEYS",
    "REQUIRED_COLUMNS", "ACCUM_KEYS", "FeatureState", "window_accumulators", "window_raw_features", "vehicle_feature_matrix",
]

FEATURES_VERSION = "3"

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

# Physical health estimates accumulated over many windows as ratios of sums (sum of a response over
# sum of the load that drives it, each an exponential average in time): a window with one frame of
# driving weighs one frame, not a whole window, so the estimate is far less noisy than an average of
# per-window ratios. Each inverts the plant model of one failure mode's precursor (labelling spec, 1):
ACCUM_KEYS: tuple[str, ...] = (
    "inverter_factor",  # (inverter - coolant in) / (4 + 0.8 kW) while driving: 1 healthy, grows with the fault
    "motor_drag",  # (motor - coolant in - 0.0004 torque^2) per krpm while driving: rises with bearing drag
    "flow_per_krpm",  # coolant flow per pump krpm while pumping: falls with a failing pump
    "aux_sleep_slope",  # 12 V voltage change per window while asleep (cold-compensated): faster when weak
    "aux_sleep_level",  # 12 V voltage while asleep (cold-compensated): lower when weak
    "dcdc_wake_excess",  # DC-DC current at wake-up beyond the 12 V loads: recharge of a weak battery
    "cell_spread_per_c",  # cell spread (mV) over (1 + |I| / 200 A) under load: imbalance without the load
    # Usage that raises the hazard of some modes (labelling spec, 1): heat and cold, DC fast charging, mileage.
    "ambient",  # mean ambient temperature
    "dc_charge_share",  # share of frames charging above 50 kW
    "km_per_window",  # distance per window
)
# Short (1 day), long (7 day) and slow (30 day) estimates, and short minus slow (how far it has moved).
_ACCUM_CONTEXT = ("acc1d", "acc7d", "acc30d", "accdiff")
SLOW_HALF_LIFE_MS = 30 * 86_400_000

RAW_NAMES: tuple[str, ...] = tuple(f"{s}_{st}" for s in STAT_SIGNALS for st in _STATS) + DERIVED_NAMES
FEATURE_NAMES: tuple[str, ...] = RAW_NAMES + tuple(f"{k}_{c}" for k in TREND_KEYS for c in _CONTEXT) \
    + tuple(f"{k}_{c}" for k in ACCUM_KEYS for c in _ACCUM_CONTEXT)
FEATURES_HASH: str = hashlib.sha256(("v" + FEATURES_VERSION + "|" + ",".join(FEATURE_NAMES)).encode()).hexdigest()[:16]

# Every sensor column a window must carry (missing sensors can be passed as all-NaN arrays).
REQUIRED_COLUMNS: tuple[str, ...] = SCHEMA.sensor_names

_COL = {name: i for i, name in enumerate(REQUIRED_COLUMNS)}
_STAT_IDX = np.array([_COL[s] for s in STAT_SIGNALS])
_STAT_POS = {s: i for i, s in enumerate(STAT_SIGNALS)}
_RAW_IDX = {name: i for i, name in enumerate(RAW_NAMES)}
_TREND_IDX = np.array([_RAW_IDX[k] for k in TREND_KEYS])
_TYRES = np.array([_COL[f"tyre_pressure_{p}"] for p in ("fl", "fr", "rl", "rr")])
# Signals that carry measurement noise even when the vehicle rests: an exactly flat trace is stuck.
_NOISY = np.array([_COL[s] for s in (
    "pack_voltage", "cell_voltage_min", "cell_voltage_max", "cell_temp_avg", "coolant_temp_in",
    "coolant_temp_out", "motor_temp", "inverter_temp", "tyre_pressure_fl", "tyre_pressure_fr",
    "tyre_pressure_rl", "tyre_pressure_rr", "aux_battery_voltage", "ambient_temp", "brake_temp",
)])
_RANGE = SCHEMA.upper_bounds - SCHEMA.lower_bounds

LOAD_CURRENT_A = 30.0  # |pack current| above this counts as "under load"
PUMP_ON_RPM = 100.0  # coolant pump counts as running above this
DRIVING_KMH = 5.0  # frames above this speed count as driving for drivetrain ratios
SHORT_HALF_LIFE_MS = 86_400_000  # 1 day
LONG_HALF_LIFE_MS = 7 * 86_400_000  # 7 days
Z_CLIP = 50.0
BASELINE_WARMUP_WINDOWS = 24  # windows learned unconditionally before winsorising starts
BASELINE_LEARN_Z = 3.0


def _nan_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise (count, mean, std, min, max) ignoring NaN/inf; NaN where a column has no sample."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    zeroed = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = zeroed.sum(axis=0) / count
        sq = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0) / count
    std = np.sqrt(sq)
    vmin = np.where(finite, values, np.inf).min(axis=0, initial=np.inf)
    vmax = np.where(finite, values, -np.inf).max(axis=0, initial=-np.inf)
    none = count == 0
    vmin[none] = np.nan
    vmax[none] = np.nan
    return count, mean, std, vmin, vmax


def window_raw_features(values: np.ndarray) -> np.ndarray:
    """Features of one window from its frames alone (rows x ``REQUIRED_COLUMNS``); NaN where undefined.

    Context-free half of the feature function; :class:`FeatureState` fills NaN and adds context.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(REQUIRED_COLUMNS):
        raise ValueError(f"window values must be (rows, {len(REQUIRED_COLUMNS)}), got {values.shape}")
    out = np.full(len(RAW_NAMES), np.nan)
    n = values.shape[0]
    if n == 0:
        out[_RAW_IDX["n_frames"]] = 0.0
        return out
    stat_vals = values[:, _STAT_IDX]
    _, mean, std, vmin, vmax = _nan_stats(stat_vals)
    out[: 4 * len(STAT_SIGNALS)] = np.stack([mean, std, vmin, vmax], axis=1).ravel()

    col = lambda name: values[:, _COL[name]]  # noqa: E731 - local shorthand
    current, ambient = col("pack_current"), col("ambient_temp")
    with np.errstate(invalid="ignore"):
        under_load = np.abs(current) > LOAD_CURRENT_A
        at_rest = np.abs(current) <= LOAD_CURRENT_A
    cv_spread = col("cell_voltage_max") - col("cell_voltage_min")
    coolant_in, pump = col("coolant_temp_in"), col("pump_speed")
    with np.errstate(invalid="ignore", divide="ignore"):
        pumping = pump > PUMP_ON_RPM
        driving = col("speed") > DRIVING_KMH
        power_kw = np.abs(col("pack_voltage") * current) / 1000.0
        flow_per_pump = np.where(pumping, col("coolant_flow") / (pump / 1000.0), np.nan)
        # Inverter losses grow with electrical power: its rise over the coolant per unit of load.
        inverter_per_kw = np.where(driving, (col("inverter_temp") - coolant_in) / (4.0 + 0.8 * power_kw), np.nan)
        motor_per_krpm = np.where(driving, (col("motor_temp") - coolant_in) / (1.0 + np.abs(col("motor_speed")) / 1000.0),
                                  np.nan)
    tyres = values[:, _TYRES]
    tyre_min, tyre_max = tyres.min(axis=1), tyres.max(axis=1)  # NaN if any tyre is NaN
    # One NaN-aware pass over every per-frame quantity instead of many small reductions.
    per_frame = np.column_stack([
        cv_spread,
        np.where(under_load, cv_spread, np.nan),
        np.where(at_rest, cv_spread, np.nan),
        col("cell_temp_max") - col("cell_temp_min"),
        col("cell_temp_avg") - ambient,
        col("coolant_temp_out") - col("coolant_temp_in"),
        col("motor_temp") - ambient,
        col("inverter_temp") - ambient,
        tyre_min,
        tyre_max - tyre_min,
        tyre_min * 293.15 / (ambient + 273.15),
        col("brake_temp") - ambient,
        np.where(at_rest, col("aux_battery_voltage"), np.nan),
        np.abs(current),
        np.abs(col("motor_torque")),
        flow_per_pump,
        inverter_per_kw,
        motor_per_krpm,
    ])
    _, pm, _, _, px = _nan_stats(per_frame)
    (cv, cv_load, cv_rest, ct, pack_rise, coolant_dt, motor_rise, inverter_rise, tyre_lo, tyre_spread,
     tyre_comp, brake_rise, aux_rest, abs_current, abs_torque, flow_pump, inv_kw, motor_krpm) = range(per_frame.shape[1])
    load_factor = 1.0 + pm[abs_current] / 100.0
    flow, pump_mean = mean[_STAT_POS["coolant_flow"]], mean[_STAT_POS["pump_speed"]]

    derived = {
        "cell_v_spread_mean": pm[cv],
        "cell_v_spread_max": px[cv],
        "cell_v_spread_load_mean": pm[cv_load],
        "cell_v_spread_rest_mean": pm[cv_rest],
        "cell_t_spread_mean": pm[ct],
        "cell_t_spread_max": px[ct],
        "pack_rise_mean": pm[pack_rise],
        "pack_rise_max": px[pack_rise],
        "pack_rise_per_load": pm[pack_rise] / load_factor,
        "coolant_dt_mean": pm[coolant_dt],
        "coolant_dt_per_flow": pm[coolant_dt] / max(flow, 0.5) if np.isfinite(flow) else np.nan,
        "flow_per_pump_krpm": flow / max(pump_mean / 1000.0, 0.1) if np.isfinite(pump_mean) else np.nan,
        "motor_rise_mean": pm[motor_rise],
        "motor_rise_max": px[motor_rise],
        "motor_rise_per_torque": pm[motor_rise] / (1.0 + pm[abs_torque] / 100.0),
        "inverter_rise_mean": pm[inverter_rise],
        "inverter_rise_max": px[inverter_rise],
        "inverter_rise_per_current": pm[inverter_rise] / load_factor,
        "resistance_est_mohm": _resistance_estimate(col("pack_voltage"), current),
        "flow_per_pump_active": pm[flow_pump],
        "inverter_rise_per_kw": pm[inv_kw],
        "motor_rise_per_krpm": pm[motor_krpm],
        "tyre_min_mean": pm[tyre_lo],
        "tyre_spread_mean": pm[tyre_spread],
        "tyre_comp_min_mean": pm[tyre_comp],
        "brake_rise_max": px[brake_rise],
        "aux_v_rest_mean": pm[aux_rest],
        "driving_share": _share(col("speed") > 1.0, col("speed")),
        "charging_share": _share(col("charger_state") > 0, col("charger_state")),
        "distance_km": _span(col("odometer")),
        "abs_current_mean": pm[abs_current],
        **_quality(values),
        "n_frames": float(n),
    }
    for name, value in derived.items():
        out[_RAW_IDX[name]] = value
    return out


def window_accumulators(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(numerator, weight) per ``ACCUM_KEYS`` entry for one window's frames; weight 0 where undefined."""
    num, den = np.zeros(len(ACCUM_KEYS)), np.zeros(len(ACCUM_KEYS))
    n = values.shape[0]
    if n == 0:
        return num, den
    v = values.T  # one row per column: cheap views
    current = v[_COL["pack_current"]]
    dcdc = v[_COL["dcdc_current"]]
    with np.errstate(invalid="ignore"):
        driving = v[_COL["speed"]] > DRIVING_KMH
        if driving.sum() >= 3:
            d = v[:, driving]
            coolant_in = d[_COL["coolant_temp_in"]]
            inv = d[_COL["inverter_temp"]] - coolant_in
            load = 4.0 + 0.0008 * np.abs(d[_COL["pack_voltage"]] * d[_COL["pack_current"]])
            ok = np.isfinite(inv) & np.isfinite(load)
            num[0], den[0] = inv[ok].sum(), load[ok].sum()
            motor = d[_COL["motor_temp"]] - coolant_in - 0.0004 * d[_COL["motor_torque"]] ** 2
            rpm_k = np.abs(d[_COL["motor_speed"]]) / 1000.0
            ok = np.isfinite(motor) & np.isfinite(rpm_k)
            num[1], den[1] = motor[ok].sum(), rpm_k[ok].sum()
        pump_k = v[_COL["pump_speed"]] / 1000.0
        flow = v[_COL["coolant_flow"]]
        ok = (pump_k > PUMP_ON_RPM / 1000.0) & np.isfinite(flow)
        if ok.sum() >= 3:
            num[2], den[2] = flow[ok].sum(), pump_k[ok].sum()
        # The DC-DC converter is off (exactly 0 A) while the vehicle sleeps.
        asleep = np.abs(dcdc) < 0.05
        aux = v[_COL["aux_battery_voltage"]] + 0.006 * np.maximum(10.0 - v[_COL["ambient_temp"]], 0.0)
        ok = asleep & np.isfinite(aux)
        m = int(ok.sum())
        if m >= 10:
            t = np.flatnonzero(ok).astype(np.float64)
            y = aux[ok]
            t -= t.mean()
            var_t = float(t @ t)
            if var_t > 0:
                num[3], den[3] = float(t @ (y - y.mean())) / var_t * n * m, float(m)  # volts per window
            num[4], den[4] = float(y.sum()), float(m)
        if n >= 2:
            wake = np.flatnonzero(asleep[:-1] & (dcdc[1:] >= 0.05)) + 1
            if wake.size:
                excess = dcdc[wake] - 2.9 * np.nan_to_num(v[_COL["hvac_power"], wake])
                excess = excess[np.isfinite(excess)]
                num[5], den[5] = float(excess.sum()), float(excess.size)
        load_c = np.abs(current)
        ok = load_c > LOAD_CURRENT_A
        if ok.sum() >= 3:
            ratio = (v[_COL["cell_voltage_max"], ok] - v[_COL["cell_voltage_min"], ok]) * 1000.0 / (1.0 + load_c[ok] / 200.0)
            ratio = ratio[np.isfinite(ratio)]
            num[6], den[6] = float(ratio.sum()), float(ratio.size)
        ambient = v[_COL["ambient_temp"]]
        ok = np.isfinite(ambient)
        num[7], den[7] = float(ambient[ok].sum()), float(ok.sum())
        charge = v[_COL["charge_power"]]
        ok = np.isfinite(charge)
        num[8], den[8] = float((charge[ok] > 50.0).sum()), float(ok.sum())
        odo = v[_COL["odometer"]]
        odo = odo[np.isfinite(odo)]
        if odo.size >= 2:
            num[9], den[9] = float(odo.max() - odo.min()), 1.0
    return num, den


def _resistance_estimate(voltage: np.ndarray, current: np.ndarray) -> float:
    """-dV/dI (mOhm) by least squares over the window; NaN when current hardly varies."""
    ok = np.isfinite(voltage) & np.isfinite(current)
    if ok.sum() < 5:
        return float("nan")
    v, i = voltage[ok], current[ok]
    var_i = float(np.var(i))
    if var_i < 25.0:  # under 5 A of spread the slope is noise
        return float("nan")
    cov = float(np.mean((v - v.mean()) * (i - i.mean())))
    return abs(cov / var_i) * 1000.0


def _share(mask: np.ndarray, source: np.ndarray) -> float:
    valid = np.isfinite(source)
    return float(mask[valid].mean()) if valid.any() else float("nan")


def _span(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.max() - x.min()) if x.size else float("nan")


def _quality(values: np.ndarray) -> dict[str, float]:
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        outside = finite & ((values < SCHEMA.lower_bounds) | (values > SCHEMA.upper_bounds))
    noisy = values[:, _NOISY]
    noisy_ok = np.isfinite(noisy)
    enough = noisy_ok.sum(axis=0) >= 5
    flat = np.zeros(noisy.shape[1], dtype=bool)
    if enough.any():
        lo = np.where(noisy_ok, noisy, np.inf).min(axis=0)
        hi = np.where(noisy_ok, noisy, -np.inf).max(axis=0)
        flat = enough & (hi - lo == 0.0)
    spike = float("nan")
    if values.shape[0] >= 2:
        steps = np.abs(np.diff(values, axis=0)) / _RANGE
        steps = steps[np.isfinite(steps)]
        spike = float(steps.max()) if steps.size else float("nan")
    return {
        "nan_share": float(1.0 - finite.mean()),
        "out_of_range_share": float(outside.mean()),
        "stuck_share": float(flat.sum() / max(enough.sum(), 1)) if enough.any() else float("nan"),
        "spike_score": spike,
    }


class FeatureState:
    """Per-vehicle feature context; ``update(window)`` returns the feature vector of one window.

    Holds, per raw feature, the last valid value (fill rule) and, per ``TREND_KEYS`` entry, the short
    and long exponential averages and the running baseline (count, mean, M2: Welford). The baseline
    is updated *after* the window's z-score is computed, so a window is never compared with itself.
    """

    def __init__(self) -> None:
        self.last_end_ms: int | None = None
        self.n_windows = 0
        self.last_valid = np.full(len(RAW_NAMES), np.nan)
        self.ema_short = np.full(len(TREND_KEYS), np.nan)
        self.ema_long = np.full(len(TREND_KEYS), np.nan)
        self.base_n = np.zeros(len(TREND_KEYS))
        self.base_mean = np.zeros(len(TREND_KEYS))
        self.base_m2 = np.zeros(len(TREND_KEYS))
        # Ratio-of-sums accumulators: rows (numerator, weight) for the short, long and slow half-lives.
        self.accum = np.zeros((6, len(ACCUM_KEYS)))
        self.accum_last = np.zeros(len(ACCUM_KEYS))  # last defined short ratio (fill rule)

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
        raw = window_raw_features(values)
        raw = self._fill(raw)
        keys = raw[_TREND_IDX]
        acc = self._advance_accumulators(end_ms, values)
        self._advance_averages(end_ms, keys)
        std = np.sqrt(self.base_m2 / np.maximum(self.base_n - 1, 1))
        floor = 1e-3 + 0.01 * np.abs(self.base_mean)
        z = np.where(self.base_n >= 2, (keys - self.base_mean) / np.maximum(std, floor), 0.0)
        z = np.clip(z, -Z_CLIP, Z_CLIP)
        context = np.stack([self.ema_short, self.ema_short - self.ema_long, z], axis=1).ravel()
        # After a warm-up the baseline learns only from windows it finds normal (|z| <= 3), so a
        # slowly failing part does not become the vehicle's new normal and hide its own drift.
        learn = (self.base_n < BASELINE_WARMUP_WINDOWS) | (np.abs(z) <= BASELINE_LEARN_Z)
        self._advance_baseline(keys, learn)
        self.n_windows += 1
        out = np.concatenate([raw, context, acc])
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def _fill(self, raw: np.ndarray) -> np.ndarray:
        valid = np.isfinite(raw)
        self.last_valid[valid] = raw[valid]
        filled = np.where(valid, raw, self.last_valid)
        return np.where(np.isfinite(filled), filled, 0.0)

    def _advance_accumulators(self, end_ms: int, values: np.ndarray) -> np.ndarray:
        """Decay the ratio-of-sums accumulators to ``end_ms``, add this window, return their features."""
        num, den = window_accumulators(values)
        if self.last_end_ms is not None:
            dt = max(end_ms - self.last_end_ms, 0)
            for row, half_life in ((0, SHORT_HALF_LIFE_MS), (2, LONG_HALF_LIFE_MS), (4, SLOW_HALF_LIFE_MS)):
                self.accum[row:row + 2] *= 0.5 ** (dt / half_life)
        self.accum[0::2] += num
        self.accum[1::2] += den
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = np.where(self.accum[1::2] > 1e-9, self.accum[0::2] / self.accum[1::2], np.nan)
        short = np.where(np.isfinite(ratios[0]), ratios[0], self.accum_last)
        self.accum_last = short
        long = np.where(np.isfinite(ratios[1]), ratios[1], short)
        slow = np.where(np.isfinite(ratios[2]), ratios[2], long)
        return np.stack([short, long, slow, short - slow], axis=1).ravel()

    def _advance_averages(self, end_ms: int, keys: np.ndarray) -> None:
        if self.last_end_ms is None:
            self.ema_short[:] = keys
            self.ema_long[:] = keys
        else:
            dt = max(end_ms - self.last_end_ms, 0)
            a_short = 1.0 - 0.5 ** (dt / SHORT_HALF_LIFE_MS)
            a_long = 1.0 - 0.5 ** (dt / LONG_HALF_LIFE_MS)
            self.ema_short += a_short * (keys - self.ema_short)
            self.ema_long += a_long * (keys - self.ema_long)
        self.last_end_ms = end_ms

    def _advance_baseline(self, keys: np.ndarray, learn: np.ndarray) -> None:
        n = self.base_n + learn
        delta = np.where(learn, keys - self.base_mean, 0.0)
        self.base_mean += delta / np.maximum(n, 1)
        self.base_m2 += delta * np.where(learn, keys - self.base_mean, 0.0)
        self.base_n = n

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
    def from_bytes(cls, data: bytes) -> "FeatureState":
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


def stack_columns(columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
    """(rows x REQUIRED_COLUMNS) float64 matrix; a sensor absent from ``columns`` becomes NaN."""
    out = np.full((rows, len(REQUIRED_COLUMNS)), np.nan)
    for j, name in enumerate(REQUIRED_COLUMNS):
        if name in columns:
            out[:, j] = np.asarray(columns[name], dtype=np.float64)
    return out


def vehicle_feature_matrix(
    columns: Mapping[str, np.ndarray], window_ms: int, stride_ms: int, min_frames: int = 1,
    state: FeatureState | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Offline: (window_end_ms int64 (n,), X float32 (n, len(FEATURE_NAMES))) for one vehicle.

    ``columns`` holds 'ts' (int64 ms) and the sensor columns of the vehicle's frames in ``seq`` order.
    Frames out of time order are dropped (``in_order_mask``), windows come from ``window_index`` and
    each goes through ``FeatureState.update_values``: the same path the twin takes.
    """
    ts = np.asarray(columns["ts"], dtype=np.int64)
    keep = in_order_mask(ts)
    values = stack_columns(columns, ts.size)
    if not keep.all():
        ts, values = ts[keep], values[keep]
    ends, lo, hi = window_index(ts, window_ms, stride_ms, min_frames)
    state = state if state is not None else FeatureState()
    X = np.empty((ends.size, len(FEATURE_NAMES)), dtype=np.float32)
    for i in range(ends.size):
        X[i] = state.update_values(int(ends[i]), values[lo[i]:hi[i]])
    return ends, X
