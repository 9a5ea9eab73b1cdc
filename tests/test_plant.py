"""Plant relations fitted from data (training.plant) and the masked anomaly model (training.anomaly)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from training.anomaly import fit_scaler, normalise, reconstruction_errors, train_autoencoder
from training.features import FEATURE_NAMES, REQUIRED_COLUMNS, vehicle_feature_matrix
from training.plant import (
    MODEL_FEATURE_NAMES,
    PLANT_FEATURE_NAMES,
    RELATIONS,
    PlantModel,
    fit_plant,
    model_inputs,
)

HOUR = 3_600_000
ROOT = Path(__file__).resolve().parents[1]


def _windows(n: int, seed: int = 0) -> np.ndarray:
    """Window features where the inverter rise follows 2 + 0.3 kW and the cell spread 8 + 0.05 A."""
    rng = np.random.default_rng(seed)
    X = np.full((n, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    kw, amps = rng.uniform(5, 80, n), rng.uniform(40, 300, n)
    for ctx in ("acc1d", "acc7d", "acc30d"):
        X[:, FEATURE_NAMES.index(f"drive_power_kw_{ctx}")] = kw
        X[:, FEATURE_NAMES.index(f"drive_inverter_rise_{ctx}")] = 2.0 + 0.3 * kw + rng.normal(0, 0.1, n)
        X[:, FEATURE_NAMES.index(f"load_abs_current_{ctx}")] = amps
        X[:, FEATURE_NAMES.index(f"load_cell_spread_mv_{ctx}")] = 8.0 + 0.05 * amps + rng.normal(0, 0.2, n)
    return X


def test_no_generator_constant_is_written_in_the_feature_function() -> None:
    """Issue 12 item 4: the inverse of simulation/generator.py's plant model is not in the features."""
    source = (ROOT / "training" / "features.py").read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())
    for constant in ("0.0008", "0.0004", "0.006", "2.9", "4.0 + 0.8", "/ 200.0"):
        assert constant not in code, constant
    assert not re.search(r"10\.0 - ambient", code)


def test_fit_recovers_the_relation_and_ignores_a_failing_minority() -> None:
    X = _windows(600)
    kw_1d = X[:, FEATURE_NAMES.index("drive_power_kw_acc1d")]
    healthy = np.ones(600, dtype=bool)
    X[:60, FEATURE_NAMES.index("drive_inverter_rise_acc1d")] += 15.0  # failing inverters among the "healthy"
    plant = fit_plant(X, healthy)
    intercept, slope = plant.coefficients["inverter_rise"]
    assert abs(intercept - 2.0) < 0.1 and abs(slope - 0.3) < 0.005  # robust: the outliers do not pull it
    assert plant.coefficients["motor_rise"] is None and plant.rows["motor_rise"] == 0
    residual = model_inputs(X, plant)[:, MODEL_FEATURE_NAMES.index("plant_inverter_rise_res1d")]
    assert residual[:60].min() > 20 and np.abs(np.median(residual[60:])) < 1.0
    assert np.corrcoef(residual[60:], kw_1d[60:])[0, 1] ** 2 < 0.05  # the load is explained away


def test_unfitted_relations_give_missing_residuals_not_zeros() -> None:
    X = _windows(300)
    plant = fit_plant(X, np.ones(300, dtype=bool))
    inputs = model_inputs(X, plant)
    assert inputs.shape == (300, len(MODEL_FEATURE_NAMES)) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[:, :len(FEATURE_NAMES)], X)
    motor = [MODEL_FEATURE_NAMES.index(f"plant_motor_rise_{o}") for o in ("res1d", "res7d", "res30d", "resdiff")]
    assert np.isnan(inputs[:, motor]).all()
    cell = MODEL_FEATURE_NAMES.index("plant_cell_spread_res7d")
    assert np.isfinite(inputs[:, cell]).all()


def test_too_few_healthy_windows_leave_a_relation_unfitted() -> None:
    X = _windows(300)
    healthy = np.zeros(300, dtype=bool)
    healthy[:10] = True  # 30 samples over the three horizons: under MIN_FIT_ROWS
    plant = fit_plant(X, healthy)
    assert all(c is None for c in plant.coefficients.values())


def test_plant_json_round_trip_and_refusals() -> None:
    plant = fit_plant(_windows(300), np.ones(300, dtype=bool))
    assert PlantModel.from_json(plant.to_json()) == plant
    assert len(PLANT_FEATURE_NAMES) == 4 * len(RELATIONS)
    text = plant.to_json()
    broken = json.loads(text)
    broken["relations"]["cell_spread"]["coefficients"].append(1.0)
    with pytest.raises(ValueError, match="cell_spread.*coefficients"):
        PlantModel.from_json(json.dumps(broken))
    with pytest.raises(ValueError, match="plant_version"):
        PlantModel.from_json(text.replace('"plant_version": "1"', '"plant_version": "0"'))
    with pytest.raises(ValueError, match="inverter_rise.*terms"):
        PlantModel.from_json(text.replace('"response": "drive_inverter_rise"', '"response": "x"'))
    with pytest.raises(ValueError, match="window features"):
        model_inputs(np.zeros((2, 5)), plant)
    with pytest.raises(ValueError, match="healthy"):
        fit_plant(np.zeros((3, len(FEATURE_NAMES))), np.ones(2, dtype=bool))


def test_relations_are_linear_in_window_means_so_a_fit_on_frames_transfers() -> None:
    """The terms of a relation share their frames: a frame-by-frame relation holds between the accumulated means."""
    rng = np.random.default_rng(3)
    ts = np.arange(0, 96 * HOUR, 60_000, dtype=np.int64)
    cols = {"ts": ts, **{c: np.full(ts.size, np.nan) for c in REQUIRED_COLUMNS}}
    speed = np.where((ts // (20 * 60_000)) % 3 == 0, rng.uniform(20, 110, ts.size), 0.0)
    current = np.where(speed > 0, rng.uniform(20, 250, ts.size), 1.0)
    cols.update(speed=speed, pack_current=current, pack_voltage=np.full(ts.size, 400.0), coolant_temp_in=25.0 + 0 * speed,
                inverter_temp=25.0 + 3.0 + 0.05 * np.abs(400.0 * current) / 1000.0)
    _, X = vehicle_feature_matrix(cols, HOUR, HOUR)
    plant = fit_plant(X, np.ones(X.shape[0], dtype=bool))
    intercept, slope = plant.coefficients["inverter_rise"]
    assert abs(intercept - 3.0) < 1e-3 and abs(slope - 0.05) < 1e-4
    assert plant.coefficients["motor_rise"] is None  # no motor sensors sent


def test_anomaly_error_masks_missing_signals() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(400, 6, 4)).astype(np.float32)
    normal[:, :, 3] = normal[:, :, 0]  # a correlated pair the network can learn
    center, scale = fit_scaler(normal.reshape(-1, 4))
    model, losses = train_autoencoder(normalise(normal, center, scale), hidden_size=8, epochs=3, batch_size=64,
                                      learning_rate=1e-2, seed=0)
    assert all(np.isfinite(losses))
    seq = normalise(normal[:5], center, scale)
    full_err, full_shares = reconstruction_errors(model, seq)
    missing = seq.copy()
    missing[:, :, 2] = np.nan  # the vehicle does not send signal 2
    err, shares = reconstruction_errors(model, missing)
    assert np.isfinite(err).all() and np.isfinite(shares).all()
    assert (shares[:, 2] == 0).all() and np.allclose(shares.sum(axis=1), 1.0, atol=1e-5)
    # Scored on the present values only: the missing signal enters at its normal centre and is left out.
    x = torch.from_numpy(np.nan_to_num(missing, nan=0.0))
    with torch.inference_mode():
        squared = ((model(x) - x) ** 2).numpy()
    np.testing.assert_allclose(err, squared[:, :, [0, 1, 3]].mean(axis=(1, 2)), rtol=1e-5)
    assert not np.allclose(err, full_err)  # and it is not the full-sensor score
    nothing = np.full_like(seq, np.nan)
    assert (reconstruction_errors(model, nothing)[0] == 0).all()
    assert np.isnan(fit_scaler(np.full((10, 2), np.nan))[0]).sum() == 0
