"""The batched feature path (``raw_features_many``, ``update_many``) against a frozen copy of the per-window one.

The oracle below is the per-window implementation of training/features.py as it stood before the
batch path replaced it (feature set v3), updated for v4 (plant-free accumulated terms, operating states
from whatever signals exist, missing inputs stay NaN) in the same per-window style: the batch maths must reproduce it on any
window (NaN, inf, 0-2 rows, no driving, sleeping only, ...), and ``update_many`` must leave every
state exactly where a loop of ``update_values`` would.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import training.features as features_module
from configs.schema import SCHEMA
from training.features import (
    _COL,
    _NOISY,
    _RANGE,
    _RAW_IDX,
    _STAT_IDX,
    _STAT_POS,
    _TREND_IDX,
    _TYRES,
    ACCUM_KEYS,
    BASELINE_LEARN_Z,
    BASELINE_WARMUP_WINDOWS,
    CHARGING_KW,
    DCDC_OFF_A,
    DRIVING_KMH,
    DRIVING_RPM,
    FEATURE_NAMES,
    FEATURES_HASH,
    LOAD_CURRENT_A,
    LONG_HALF_LIFE_MS,
    PUMP_ON_RPM,
    RAW_NAMES,
    REQUIRED_COLUMNS,
    SHORT_HALF_LIFE_MS,
    SLEEP_CURRENT_A,
    SLOW_HALF_LIFE_MS,
    STAT_SIGNALS,
    TREND_KEYS,
    Z_CLIP,
    FeatureState,
    raw_features_many,
    update_many,
    vehicle_feature_matrix,
    window_accumulators,
    window_raw_features,
)
from training.windows import in_order_mask, window_index

# The frozen oracle warns on NaN/inf arithmetic (its values are right); the batch path suppresses those warnings.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

HOUR = 3_600_000
WIDTH = len(REQUIRED_COLUMNS)
RAW_TOL = dict(rtol=1e-9, atol=1e-9)  # float64 raw values: the batch sums in another order than numpy's 1-D pairwise
# Final float32 features: a float64 difference of an ulp may round to the neighbouring float32, and a
# quantity that is exactly 0 in one path can be 1e-17 in the other (the 12 V slope of a flat trace).
FEATURE_TOL = dict(rtol=1e-6, atol=1e-6)


# ================================ frozen oracle (per-window implementation, v4) ===========================
# fmt: off
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


def oracle_states(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: driving, charging, asleep, any state signal present (see features._operating_states)."""
    driving, charging, asleep, known = (np.zeros(values.shape[0], dtype=bool) for _ in range(4))
    col = lambda name: values[:, _COL[name]]  # noqa: E731 - local shorthand
    for i in range(values.shape[0]):
        speed, rpm, current = col("speed")[i], col("motor_speed")[i], col("pack_current")[i]
        charger, power, dcdc = col("charger_state")[i], col("charge_power")[i], col("dcdc_current")[i]
        if np.isfinite(charger):
            charging[i] = charger > 0
        elif np.isfinite(power):
            charging[i] = power > CHARGING_KW
        if np.isfinite(speed):
            driving[i] = speed > DRIVING_KMH
        elif np.isfinite(rpm):
            driving[i] = abs(rpm) > DRIVING_RPM
        elif np.isfinite(current):
            driving[i] = abs(current) > LOAD_CURRENT_A and not charging[i]
        if np.isfinite(dcdc):
            asleep[i] = abs(dcdc) < DCDC_OFF_A
        elif np.isfinite(current):
            asleep[i] = abs(current) < SLEEP_CURRENT_A and not driving[i] and not charging[i]
        known[i] = any(np.isfinite(x) for x in (speed, rpm, current, charger, power))
    return driving, charging, asleep, known


def oracle_raw_features(values: np.ndarray) -> np.ndarray:
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
        driving, charging, _, known = oracle_states(values)
        flow_per_pump = np.where(pumping, col("coolant_flow") / (pump / 1000.0), np.nan)
        power_kw = np.abs(col("pack_voltage") * current) / 1000.0
        inverter_per_kw = np.where(driving, (col("inverter_temp") - coolant_in) / (1.0 + power_kw / 10.0), np.nan)
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
        "driving_share": float(driving[known].mean()) if known.any() else float("nan"),
        "charging_share": float(charging[known].mean()) if known.any() else float("nan"),
        "distance_km": _span(col("odometer")),
        "abs_current_mean": pm[abs_current],
        **_quality(values),
        "n_frames": float(n),
    }
    for name, value in derived.items():
        out[_RAW_IDX[name]] = value
    return out


def oracle_accumulators(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(numerator, weight) per ``ACCUM_KEYS`` entry for one window's frames; weight 0 where undefined."""
    num, den = np.zeros(len(ACCUM_KEYS)), np.zeros(len(ACCUM_KEYS))
    n = values.shape[0]
    if n == 0:
        return num, den
    v = values.T  # one row per column: cheap views
    key = {name: k for k, name in enumerate(ACCUM_KEYS)}
    driving, _, asleep, _ = oracle_states(values)
    col = lambda name: v[_COL[name]]  # noqa: E731 - local shorthand
    with np.errstate(invalid="ignore"):
        ambient = col("ambient_temp")
        power_kw = np.abs(col("pack_voltage") * col("pack_current")) / 1000.0
        coolant_in = col("coolant_temp_in")
        current = col("pack_current")
        load = np.abs(current) > LOAD_CURRENT_A

        def terms(mask: np.ndarray, least: int, **quantities: np.ndarray) -> None:
            ok = mask.copy()
            for q in quantities.values():
                ok &= np.isfinite(q)
            if ok.sum() >= least:
                for name, q in quantities.items():
                    num[key[name]], den[key[name]] = q[ok].sum(), float(ok.sum())

        terms(driving, 3, drive_inverter_rise=col("inverter_temp") - coolant_in, drive_power_kw=power_kw)
        terms(driving, 3, drive_motor_rise=col("motor_temp") - coolant_in,
              drive_torque_sq=(col("motor_torque") / 100.0) ** 2, drive_krpm=np.abs(col("motor_speed")) / 1000.0)
        terms(driving & np.isfinite(ambient), 3, energy_power_kw=power_kw, energy_speed=col("speed"),
              energy_ambient=ambient)
        pump_k = col("pump_speed") / 1000.0
        flow = col("coolant_flow")
        ok = (pump_k > PUMP_ON_RPM / 1000.0) & np.isfinite(flow)
        if ok.sum() >= 3:
            num[key["flow_per_krpm"]], den[key["flow_per_krpm"]] = flow[ok].sum(), pump_k[ok].sum()
        aux = col("aux_battery_voltage")
        ok = asleep & np.isfinite(aux) & np.isfinite((ambient / 10.0) ** 2)
        m = int(ok.sum())
        if m >= 10:
            t = np.flatnonzero(ok).astype(np.float64)
            y = aux[ok]
            t -= t.mean()
            var_t = float(t @ t)
            if var_t > 0:
                num[key["aux_sleep_slope"]], den[key["aux_sleep_slope"]] = float(t @ (y - y.mean())) / var_t * n * m, m
            terms(ok, 10, sleep_aux_v=aux, sleep_ambient=ambient, sleep_ambient_sq=(ambient / 10.0) ** 2)
        if n >= 2:
            wake = np.zeros(n, dtype=bool)
            wake[1:] = asleep[:-1] & ~asleep[1:]
            terms(wake, 1, wake_dcdc=col("dcdc_current"), wake_hvac=col("hvac_power"))
        terms(load, 3, load_cell_spread_mv=(col("cell_voltage_max") - col("cell_voltage_min")) * 1000.0,
              load_abs_current=np.abs(current))
        terms(load, 3, load_pack_rise=col("cell_temp_avg") - ambient, load_current_sq=(current / 100.0) ** 2)
        ok = np.isfinite(ambient)
        num[key["ambient"]], den[key["ambient"]] = float(ambient[ok].sum()), float(ok.sum())
        charge = col("charge_power")
        ok = np.isfinite(charge)
        num[key["dc_charge_share"]], den[key["dc_charge_share"]] = float((charge[ok] > 50.0).sum()), float(ok.sum())
        odo = col("odometer")
        odo = odo[np.isfinite(odo)]
        if odo.size >= 2:
            num[key["km_per_window"]], den[key["km_per_window"]] = float(odo.max() - odo.min()), 1.0
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


class OracleState:
    """The per-window FeatureState context (fill, EMAs, Welford baseline, accumulators) as it was."""

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
        self.accum_last = np.full(len(ACCUM_KEYS), np.nan)  # last defined short ratio (fill rule)

    def update_values(self, end_ms: int, values: np.ndarray) -> np.ndarray:
        """As :meth:`update`, with the window's frames already stacked (rows x ``REQUIRED_COLUMNS``)."""
        raw = oracle_raw_features(values)
        raw = self._fill(raw)
        keys = raw[_TREND_IDX]
        acc = self._advance_accumulators(end_ms, values)
        self._advance_averages(end_ms, keys)
        std = np.sqrt(self.base_m2 / np.maximum(self.base_n - 1, 1))
        floor = 1e-3 + 0.01 * np.abs(self.base_mean)
        present = np.isfinite(keys)
        z = np.where(present, np.where(self.base_n >= 2, (keys - self.base_mean) / np.maximum(std, floor), 0.0), np.nan)
        z = np.clip(z, -Z_CLIP, Z_CLIP)
        context = np.stack([self.ema_short, self.ema_short - self.ema_long, z], axis=1).ravel()
        # After a warm-up the baseline learns only from windows it finds normal (|z| <= 3), so a
        # slowly failing part does not become the vehicle's new normal and hide its own drift.
        learn = present & ((self.base_n < BASELINE_WARMUP_WINDOWS) | (np.abs(z) <= BASELINE_LEARN_Z))
        self._advance_baseline(keys, learn)
        self.n_windows += 1
        out = np.concatenate([raw, context, acc])
        out[np.isinf(out)] = np.nan
        return out.astype(np.float32)

    def _fill(self, raw: np.ndarray) -> np.ndarray:
        valid = np.isfinite(raw)
        self.last_valid[valid] = raw[valid]
        filled = np.where(valid, raw, self.last_valid)
        return filled

    def _advance_accumulators(self, end_ms: int, values: np.ndarray) -> np.ndarray:
        """Decay the ratio-of-sums accumulators to ``end_ms``, add this window, return their features."""
        num, den = oracle_accumulators(values)
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
        return np.stack([short, long, slow, short - slow], axis=1).ravel()[features_module._ACC_KEEP]

    def _advance_averages(self, end_ms: int, keys: np.ndarray) -> None:
        present = np.isfinite(keys)
        if self.last_end_ms is None:
            self.ema_short[present] = keys[present]
            self.ema_long[present] = keys[present]
        else:
            dt = max(end_ms - self.last_end_ms, 0)
            a_short = 1.0 - 0.5 ** (dt / SHORT_HALF_LIFE_MS)
            a_long = 1.0 - 0.5 ** (dt / LONG_HALF_LIFE_MS)
            start = present & ~np.isfinite(self.ema_short)
            step = present & ~start
            self.ema_short[step] += a_short * (keys[step] - self.ema_short[step])
            self.ema_long[step] += a_long * (keys[step] - self.ema_long[step])
            self.ema_short[start] = keys[start]
            self.ema_long[start] = keys[start]
        self.last_end_ms = end_ms

    def _advance_baseline(self, keys: np.ndarray, learn: np.ndarray) -> None:
        n = self.base_n + learn
        delta = np.where(learn, keys - self.base_mean, 0.0)
        self.base_mean += delta / np.maximum(n, 1)
        self.base_m2 += delta * np.where(learn, keys - self.base_mean, 0.0)
        self.base_n = n


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


# fmt: on
# ================================ end of oracle ============================================================


STATE_ARRAYS = ("last_valid", "ema_short", "ema_long", "base_n", "base_mean", "base_m2", "accum", "accum_last")


def random_window(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Frames of one window: plausible values in one of a few regimes, often dirtied (NaN, inf, flat, out of range)."""
    lo, hi = SCHEMA.lower_bounds, SCHEMA.upper_bounds
    v = lo + rng.uniform(0.1, 0.7, (rows, WIDTH)) * (hi - lo)
    c = _COL
    regime = rng.integers(0, 5)
    if regime == 0:  # driving, partly under load
        v[:, c["speed"]] = rng.uniform(0, 120, rows)
        v[:, c["pack_current"]] = rng.normal(60, 80, rows)
    elif regime == 1:  # parked and asleep (DC-DC exactly off), maybe waking up, pump off
        v[:, c["speed"]] = 0.0
        v[:, c["pack_current"]] = rng.normal(0, 3, rows)
        v[:, c["dcdc_current"]] = 0.0
        v[:, c["pump_speed"]] = 0.0
        if rows and rng.random() < 0.5:
            v[rng.integers(0, rows):, c["dcdc_current"]] = rng.uniform(0.05, 40)
    elif regime == 2:  # charging, some of it DC fast charging
        v[:, c["speed"]] = 0.0
        v[:, c["charger_state"]] = rng.integers(0, 3, rows)
        v[:, c["charge_power"]] = rng.uniform(0, 150, rows)
    elif regime == 3 and rows:  # noisy sensors stuck flat
        v[:, _NOISY] = v[0, _NOISY]
    if rng.random() < 0.5:  # sensor dropouts and garbage
        bad = rng.random((rows, WIDTH)) < rng.uniform(0, 0.4)
        v[bad] = rng.choice([np.nan, np.inf, -np.inf], int(bad.sum()))
    if rng.random() < 0.3:  # a sensor that never reports
        v[:, rng.integers(WIDTH)] = np.nan
    if rng.random() < 0.1:  # out of its physical range
        j = rng.integers(WIDTH)
        v[:, j] = hi[j] + rng.uniform(1, 100, rows)
    if rng.random() < 0.04:
        v[:] = np.nan
    return v


def random_windows(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 2, 3, 4, 5, 6, 6, 6, 9, 10, 11, 12, 30, 60, 61]
    return [random_window(rng, int(rng.choice(sizes))) for _ in range(count)]


def assert_same_state(a, b, exact: bool) -> None:
    assert a.last_end_ms == b.last_end_ms and a.n_windows == b.n_windows
    for name in STATE_ARRAYS:
        if exact:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        else:
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), **RAW_TOL, err_msg=name)


# --- context-free half: batch == oracle --------------------------------------------------------------

def test_batch_raw_features_and_accumulators_equal_the_per_window_oracle() -> None:
    windows = random_windows(seed=1, count=500)
    raw, num, den = raw_features_many(windows)
    assert raw.shape == (len(windows), len(RAW_NAMES)) and num.shape == den.shape == (len(windows), len(ACCUM_KEYS))
    for i, w in enumerate(windows):
        np.testing.assert_allclose(raw[i], oracle_raw_features(w), **RAW_TOL, err_msg=f"window {i} ({w.shape[0]} rows)")
        onum, oden = oracle_accumulators(w)
        np.testing.assert_allclose(num[i], onum, **RAW_TOL, err_msg=f"window {i} numerators")
        np.testing.assert_allclose(den[i], oden, **RAW_TOL, err_msg=f"window {i} weights")


def test_the_random_windows_reach_every_branch() -> None:
    """Guard on the test data: the comparison above is only as good as the cases it covers."""
    windows = random_windows(seed=1, count=500)
    raw, _, den = raw_features_many(windows)
    assert (raw[:, _RAW_IDX["n_frames"]] == 0).any()
    assert np.isfinite(raw[:, _RAW_IDX["resistance_est_mohm"]]).sum() > 20
    assert np.isfinite(raw[:, _RAW_IDX["stuck_share"]]).any() and (raw[:, _RAW_IDX["stuck_share"]] > 0).any()
    for k in range(len(ACCUM_KEYS)):
        assert (den[:, k] > 0).sum() > 5 and (den[:, k] == 0).sum() > 5, ACCUM_KEYS[k]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 12), st.lists(st.tuples(st.integers(0, 11), st.integers(0, WIDTH - 1),
                                               st.floats(allow_nan=True, allow_infinity=True)), max_size=30),
       st.sampled_from(["plain", "asleep", "driving"]))
def test_any_values_give_the_oracle_features(rows, overrides, regime) -> None:
    v = np.tile(np.linspace(0.2, 0.6, WIDTH) * (SCHEMA.upper_bounds - SCHEMA.lower_bounds) + SCHEMA.lower_bounds,
                (rows, 1))
    if regime == "asleep":
        v[:, _COL["dcdc_current"]] = 0.0
    elif regime == "driving":
        v[:, _COL["speed"]] = 50.0
        v[:, _COL["pack_current"]] = np.linspace(-100, 200, rows)
    for r, j, x in overrides:
        if r < rows:
            v[r, j] = x
    np.testing.assert_allclose(window_raw_features(v), oracle_raw_features(v), **RAW_TOL)
    for got, want in zip(window_accumulators(v), oracle_accumulators(v), strict=False):
        np.testing.assert_allclose(got, want, **RAW_TOL)


def test_a_window_has_the_same_features_in_any_batch() -> None:
    """Bit for bit: alone, among others, behind longer windows (padding) or shorter ones."""
    windows = random_windows(seed=2, count=60)
    together = raw_features_many(windows)
    backwards = raw_features_many(windows[::-1])
    for i, w in enumerate(windows):
        alone = raw_features_many([w])
        padded = raw_features_many([w, np.full((w.shape[0] + 13, WIDTH), 1.0)])
        for k in range(3):
            np.testing.assert_array_equal(together[k][i], alone[k][0])
            np.testing.assert_array_equal(backwards[k][len(windows) - 1 - i], alone[k][0])
            np.testing.assert_array_equal(padded[k][0], alone[k][0])


def test_signed_zeros_give_the_same_state_bytes_in_any_batch() -> None:
    """0.0 == -0.0 for assert_array_equal, not for checkpoints: the state bytes must not depend on the batch."""
    rng = np.random.default_rng(5)
    windows = []
    for rows in rng.integers(1, 9, size=48):
        w = rng.normal(size=(int(rows), WIDTH))
        w[:, _COL["motor_speed"]] = rng.choice([0.0, -0.0], size=int(rows))  # a parked vehicle's motor
        windows.append(w)
    alone = []
    for w in windows:
        state = FeatureState()
        state.update_values(3_600_000, w)
        alone.append(state.to_bytes())
    together = [FeatureState() for _ in windows]
    update_many(together, [3_600_000] * len(windows), windows)
    assert [s.to_bytes() for s in together] == alone


def test_bad_window_shape_is_refused_with_its_position() -> None:
    with pytest.raises(ValueError, match=r"window 1 of the batch"):
        raw_features_many([np.zeros((3, WIDTH)), np.zeros((3, WIDTH - 1))])
    with pytest.raises(ValueError, match=r"window values must be"):
        window_raw_features(np.zeros(WIDTH))


# --- context: update_many == loop of update_values == oracle ---------------------------------------

def warmed_states(rng: np.random.Generator, count: int) -> tuple[list[FeatureState], list[OracleState]]:
    """States at different stages: fresh (last_end_ms None), in the baseline warm-up, past it."""
    states, oracles = [], []
    for v in range(count):
        state, oracle = FeatureState(), OracleState()
        for k in range(int(rng.choice([0, 1, 2, 5, 23, 24, 25, 40]))):
            w = random_window(rng, int(rng.choice([0, 3, 6, 12])))
            end = (k + 1) * HOUR + v * 60_000
            state.update_values(end, w)
            oracle.update_values(end, w)
        states.append(state)
        oracles.append(oracle)
    return states, oracles


@pytest.mark.parametrize("small_batches", [False, True])
def test_update_many_equals_update_values_one_by_one_and_the_oracle(small_batches, monkeypatch) -> None:
    if small_batches:  # the maths runs in pieces of a few windows / vehicles: results must not change
        monkeypatch.setattr(features_module, "_BATCH_FRAMES", 50)
        monkeypatch.setattr(features_module, "_CONTEXT_BATCH", 7)
    rng = np.random.default_rng(3)
    states, oracles = warmed_states(rng, 40)
    assert any(s.last_end_ms is None for s in states) and any(s.n_windows > BASELINE_WARMUP_WINDOWS for s in states)
    singles = [FeatureState.from_bytes(s.to_bytes()) for s in states]
    for step in range(6):
        chosen = rng.permutation(len(states))[: int(rng.integers(1, len(states) + 1))]
        # Gaps of any size, none, or backwards (a late window: dt clips at 0).
        gaps = [-2 * HOUR, 0, 1, HOUR, 7 * HOUR, 30 * 86_400_000]
        ends = [(60 + step) * HOUR + int(rng.choice(gaps)) for _ in chosen]
        windows = [random_window(rng, int(rng.choice([0, 1, 2, 5, 6, 6, 12, 60]))) for _ in chosen]
        X = update_many([states[i] for i in chosen], np.array(ends), windows)
        assert X.dtype == np.float32 and X.shape == (len(chosen), len(FEATURE_NAMES))
        one_by_one = np.stack([singles[i].update_values(e, w) for i, e, w in zip(chosen, ends, windows, strict=False)])
        np.testing.assert_array_equal(X, one_by_one)
        want = np.stack([oracles[i].update_values(e, w) for i, e, w in zip(chosen, ends, windows, strict=False)])
        np.testing.assert_allclose(X, want, **FEATURE_TOL)
        for i in range(len(states)):
            assert_same_state(states[i], singles[i], exact=True)
            assert_same_state(states[i], oracles[i], exact=False)
    assert all(FeatureState.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes() for s in states)


def test_update_many_refuses_the_same_vehicle_twice() -> None:
    a, b = FeatureState(), FeatureState()
    w = np.zeros((3, WIDTH))
    with pytest.raises(ValueError, match=r"same FeatureState at positions 0 and 2"):
        update_many([a, b, a], [HOUR, HOUR, 2 * HOUR], [w, w, w])
    assert a.n_windows == 0 and b.n_windows == 0  # refused before touching any state


def test_update_many_checks_its_arguments_line_up() -> None:
    with pytest.raises(ValueError, match=r"2 states, 1 end_ms, 2 windows"):
        update_many([FeatureState(), FeatureState()], [HOUR], [np.zeros((1, WIDTH))] * 2)
    assert update_many([], [], []).shape == (0, len(FEATURE_NAMES))


def test_state_arrays_keep_their_shapes() -> None:
    state = FeatureState()
    state.accum = np.ones((6, len(ACCUM_KEYS)))
    assert state.accum.sum() == 6 * len(ACCUM_KEYS) and np.isnan(state.accum_last).all()  # never defined: missing
    with pytest.raises(ValueError, match=r"FeatureState.base_n must have shape \(26,\)"):
        state.base_n = np.zeros(25)


def test_states_advanced_together_stay_independent() -> None:
    states = [FeatureState() for _ in range(3)]
    windows = random_windows(seed=4, count=3)
    update_many(states, [HOUR] * 3, windows)
    before = [s.to_bytes() for s in states]
    update_many(states[:1], [2 * HOUR], windows[:1])
    assert [s.to_bytes() for s in states[1:]] == before[1:] and states[0].to_bytes() != before[0]
    assert not np.shares_memory(states[1].last_valid, states[2].last_valid)  # no state pins the batch's arrays


# --- offline ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("window_h, stride_h, min_frames", [(1, 1, 1), (2, 1, 1), (1, 1, 8)])
def test_offline_matrix_equals_the_oracle_loop(window_h, stride_h, min_frames) -> None:
    rng = np.random.default_rng(5)
    n = 3000
    ts = np.sort(rng.integers(0, 80 * HOUR, n)).astype(np.int64)
    ts[1000:1100] = ts[1000:1100][::-1]  # some frames out of order (dropped)
    cols = {name: random_window(rng, n)[:, j] for j, name in enumerate(REQUIRED_COLUMNS)}
    cols["ts"] = ts
    ends, X = vehicle_feature_matrix(cols, window_h * HOUR, stride_h * HOUR, min_frames)
    keep = in_order_mask(ts)
    values = np.column_stack([cols[c] for c in REQUIRED_COLUMNS])[keep]
    want_ends, lo, hi = window_index(ts[keep], window_h * HOUR, stride_h * HOUR, min_frames)
    oracle = OracleState()
    want = np.stack([oracle.update_values(int(e), values[a:b]) for e, a, b in zip(want_ends, lo, hi, strict=False)])
    np.testing.assert_array_equal(ends, want_ends)
    np.testing.assert_allclose(X, want, **FEATURE_TOL)


def test_feature_definition_and_checkpoint_format_are_unchanged() -> None:
    assert FEATURES_HASH == "0a46128e93d5546a"  # v4: plant-free accumulated terms, missing stays NaN
    rng = np.random.default_rng(6)
    oracle = OracleState()
    for k in range(30):
        oracle.update_values(k * HOUR, random_window(rng, 6))
    old_checkpoint = oracle.to_bytes()  # written by the per-window implementation
    state = FeatureState.from_bytes(old_checkpoint)
    assert_same_state(state, oracle, exact=True)
    assert state.to_bytes() == old_checkpoint  # and written back byte for byte the same
    w = random_window(rng, 6)
    np.testing.assert_allclose(state.update_values(31 * HOUR, w), oracle.update_values(31 * HOUR, w), **FEATURE_TOL)
    with np.load(io.BytesIO(FeatureState().to_bytes())) as npz:
        assert sorted(npz.files) == sorted(["features_hash", "scalars", *STATE_ARRAYS])
