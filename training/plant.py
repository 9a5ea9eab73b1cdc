"""Plant relations fitted from a fleet's own healthy data: what the feature function does not hard-code.

The feature function (:mod:`training.features`) accumulates plant-free *operating terms*: time-decayed
means of a response (a temperature rise, a power, a voltage, a current) and of the loads that drive it,
over the frames of one operating state. How the response depends on its loads differs between vehicle
models, so it is not written in code: :func:`fit_plant` fits each relation of ``RELATIONS`` (robust
linear least squares, Huber weights) on the healthy windows of the train split at ``evtwin train``, the
result is stored in the model artefact (``plant.json``, its sha256 checked at load like every model
file), and :func:`model_inputs` (the ONE function, used by training and by the loaded models that the
twins, Serve and the offline evaluation call) appends each relation's standardised residual to the window
features: how far the vehicle's response is above what the fleet's healthy vehicles show at the same
load, over 1, 7 and 30 days, and the 1-day minus the 30-day residual (the vehicle against its own recent
normal: a per-vehicle residual baseline that adapts online with the vehicle's own history).

A relation is linear in the *means* of its terms because every term of a relation is averaged over the
same frames (see ``ACCUM_KEYS``), so a relation that holds frame by frame holds between the means. A
relation the fleet cannot fit (its sensors are not sent, too few healthy windows) is stored without
coefficients and its residuals are NaN: missing, never made up.

>>> rng = np.random.default_rng(0)
>>> X = np.full((400, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
>>> kw = rng.uniform(5, 80, 400)
>>> for ctx in ("acc1d", "acc7d", "acc30d"):
...     X[:, FEATURE_NAMES.index(f"drive_power_kw_{ctx}")] = kw
...     X[:, FEATURE_NAMES.index(f"drive_inverter_rise_{ctx}")] = 3.0 + 0.5 * kw + rng.normal(0, 0.2, 400)
>>> plant = fit_plant(X, np.ones(400, dtype=bool))
>>> [round(c, 1) for c in plant.coefficients["inverter_rise"]]
[3.0, 0.5]
>>> plant.coefficients["motor_rise"] is None  # no motor sensors in this fleet
True
>>> PlantModel.from_json(plant.to_json()) == plant
True
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.features import FEATURE_NAMES

__all__ = ["Relation", "RELATIONS", "PLANT_FEATURE_NAMES", "MODEL_FEATURE_NAMES", "PLANT_FILE", "PlantModel",
           "fit_plant", "model_inputs"]

PLANT_FILE = "plant.json"
PLANT_VERSION = "1"


@dataclass(frozen=True)
class Relation:
    """response = intercept + sum(coefficient_k * load_k), all ``ACCUM_KEYS`` terms over the same frames."""

    name: str
    response: str
    loads: tuple[str, ...]
    meaning: str


RELATIONS: tuple[Relation, ...] = (
    Relation("inverter_rise", "drive_inverter_rise", ("drive_power_kw",),
             "inverter temperature over the coolant against electrical power while driving"),
    Relation("motor_rise", "drive_motor_rise", ("drive_torque_sq", "drive_krpm"),
             "motor temperature over the coolant against torque squared and speed while driving"),
    Relation("traction_power", "energy_power_kw", ("energy_speed", "energy_ambient"),
             "battery power against speed and ambient while driving (energy per km)"),
    Relation("aux_rest_voltage", "sleep_aux_v", ("sleep_ambient", "sleep_ambient_sq"),
             "12 V rest voltage against ambient while asleep"),
    Relation("dcdc_wake_current", "wake_dcdc", ("wake_hvac",),
             "DC-DC current at wake-up against the HVAC load (the rest recharges the 12 V battery)"),
    Relation("cell_spread", "load_cell_spread_mv", ("load_abs_current",),
             "cell-voltage spread against pack current under load"),
    Relation("pack_rise", "load_pack_rise", ("load_current_sq",),
             "pack temperature over ambient against current squared (cooling effort against heat) under load"),
)
_HORIZONS = ("acc1d", "acc7d", "acc30d")
_OUTPUTS = ("res1d", "res7d", "res30d", "resdiff")
PLANT_FEATURE_NAMES: tuple[str, ...] = tuple(f"plant_{r.name}_{o}" for r in RELATIONS for o in _OUTPUTS)
# What the failure and severity models read: the window features, then the plant residuals.
MODEL_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + PLANT_FEATURE_NAMES

_FEATURE_POS = {name: i for i, name in enumerate(FEATURE_NAMES)}
MIN_FIT_ROWS = 50  # healthy windows a relation needs to be fitted
MAX_FIT_ROWS = 200_000  # a random sample of this many is plenty for a handful of coefficients
_HUBER_K = 1.345  # Huber's constant: 95 % efficiency on normal residuals, robust to a failing minority
_SCALE_FLOOR = 1e-6


@dataclass(frozen=True)
class PlantModel:
    """Fitted relations: per relation name, [intercept, load coefficients...] (None: not fitted), the robust
    scale of its healthy residuals and the number of windows it was fitted on."""

    coefficients: dict[str, list[float] | None]
    residual_scale: dict[str, float | None]
    rows: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        relations = {r.name: {"response": r.response, "loads": list(r.loads), "coefficients": self.coefficients[r.name],
                              "residual_scale": self.residual_scale[r.name], "rows": self.rows.get(r.name, 0),
                              "meaning": r.meaning} for r in RELATIONS}
        return json.dumps({"plant_version": PLANT_VERSION, "relations": relations}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PlantModel:
        """Parse and check a stored plant: every relation of this code, with its terms and coefficient count."""
        data: dict[str, Any] = json.loads(text)
        if data.get("plant_version") != PLANT_VERSION:
            raise ValueError(f"plant_version {data.get('plant_version')!r}: this code reads {PLANT_VERSION!r}; retrain")
        stored = data.get("relations")
        if not isinstance(stored, dict):
            raise ValueError("plant: 'relations' must be an object of relation name -> fit")
        coefficients: dict[str, list[float] | None] = {}
        scales: dict[str, float | None] = {}
        rows: dict[str, int] = {}
        for relation in RELATIONS:
            entry = stored.get(relation.name)
            if not isinstance(entry, dict):
                raise ValueError(f"plant: relation {relation.name!r} missing; retrain")
            if entry.get("response") != relation.response or list(entry.get("loads", [])) != list(relation.loads):
                raise ValueError(f"plant: relation {relation.name!r} has terms {entry.get('response')!r} ~ "
                                 f"{entry.get('loads')!r}, this code {relation.response!r} ~ {list(relation.loads)!r}")
            coef, scale = entry.get("coefficients"), entry.get("residual_scale")
            if coef is not None:
                if len(coef) != len(relation.loads) + 1 or not all(np.isfinite(float(c)) for c in coef):
                    raise ValueError(f"plant: relation {relation.name!r} coefficients={coef!r}: need "
                                     f"{len(relation.loads) + 1} finite numbers (intercept, then one per load)")
                if scale is None or not float(scale) > 0:
                    raise ValueError(f"plant: relation {relation.name!r} residual_scale={scale!r} must be > 0")
                coef, scale = [float(c) for c in coef], float(scale)
            coefficients[relation.name], scales[relation.name] = coef, (None if coef is None else scale)
            rows[relation.name] = int(entry.get("rows", 0))
        return cls(coefficients, scales, rows)

    def features(self, X: np.ndarray) -> np.ndarray:
        """(n, len(PLANT_FEATURE_NAMES)) float32 standardised residuals of window features ``X`` (n, FEATURE_NAMES)."""
        X = np.asarray(X)
        out = np.full((X.shape[0], len(PLANT_FEATURE_NAMES)), np.nan, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            for k, relation in enumerate(RELATIONS):
                coef, scale = self.coefficients[relation.name], self.residual_scale[relation.name]
                if coef is None or scale is None:
                    continue
                residuals = [(_term(X, relation.response, h) - _predict(X, relation, coef, h)) / scale
                             for h in _HORIZONS]
                base = k * len(_OUTPUTS)
                out[:, base:base + 3] = np.stack(residuals, axis=1)
                out[:, base + 3] = residuals[0] - residuals[2]
        out[np.isinf(out)] = np.nan
        return out.astype(np.float32)


def _term(X: np.ndarray, key: str, horizon: str) -> np.ndarray:
    return np.asarray(X[:, _FEATURE_POS[f"{key}_{horizon}"]], dtype=np.float64)


def _predict(X: np.ndarray, relation: Relation, coef: list[float], horizon: str) -> np.ndarray:
    value = np.full(X.shape[0], coef[0])
    for c, load in zip(coef[1:], relation.loads, strict=True):
        value = value + c * _term(X, load, horizon)
    return value


def _huber_fit(A: np.ndarray, y: np.ndarray, iterations: int = 20) -> tuple[np.ndarray, float]:
    """Robust least squares (iteratively reweighted, Huber): (coefficients, robust residual scale)."""
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    scale = _SCALE_FLOOR
    for _ in range(iterations):
        residual = y - A @ coef
        scale = max(1.4826 * float(np.median(np.abs(residual - np.median(residual)))), _SCALE_FLOOR)
        weight = np.sqrt(np.minimum(1.0, _HUBER_K * scale / np.maximum(np.abs(residual), 1e-12)))
        new = np.linalg.lstsq(A * weight[:, None], y * weight, rcond=None)[0]
        if np.allclose(new, coef, rtol=1e-9, atol=1e-12):
            coef = new
            break
        coef = new
    residual = y - A @ coef
    return coef, max(1.4826 * float(np.median(np.abs(residual - np.median(residual)))), _SCALE_FLOOR)


def fit_plant(X: np.ndarray, healthy: np.ndarray, *, min_rows: int = MIN_FIT_ROWS, max_rows: int = MAX_FIT_ROWS,
              seed: int = 0) -> PlantModel:
    """Fit every relation on the ``healthy`` rows of window features ``X`` (n, FEATURE_NAMES).

    Each healthy window gives one sample per horizon (1, 7, 30 days) where the response and every load
    are present; a relation with fewer than ``min_rows`` such samples is left unfitted (None).
    """
    X = np.asarray(X)
    healthy = np.asarray(healthy, dtype=bool)
    if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"X must be (windows, {len(FEATURE_NAMES)}) window features, got shape {X.shape}")
    if healthy.shape != (X.shape[0],):
        raise ValueError(f"healthy must mark each of the {X.shape[0]} windows, got shape {healthy.shape}")
    rng = np.random.default_rng(seed)
    coefficients: dict[str, list[float] | None] = {}
    scales: dict[str, float | None] = {}
    rows: dict[str, int] = {}
    for relation in RELATIONS:
        ys, As = [], []
        for h in _HORIZONS:
            y = _term(X, relation.response, h)[healthy]
            A = np.column_stack([np.ones(y.size)] + [_term(X, load, h)[healthy] for load in relation.loads])
            ok = np.isfinite(y) & np.isfinite(A).all(axis=1)
            ys.append(y[ok])
            As.append(A[ok])
        y, A = np.concatenate(ys), np.concatenate(As)
        if y.size > max_rows:
            pick = rng.choice(y.size, size=max_rows, replace=False)
            y, A = y[pick], A[pick]
        rows[relation.name] = int(y.size)
        if y.size < min_rows:
            coefficients[relation.name], scales[relation.name] = None, None
            continue
        coef, scale = _huber_fit(A, y)
        coefficients[relation.name], scales[relation.name] = [float(c) for c in coef], scale
    return PlantModel(coefficients, scales, rows)


def model_inputs(X: np.ndarray, plant: PlantModel) -> np.ndarray:
    """The failure and severity models' input (n, ``MODEL_FEATURE_NAMES``): window features, then plant residuals.

    The one function from window features to model input: ``evtwin train`` and the loaded models
    (``training.artifacts``, which the twins, Serve and the evaluation call) both go through it.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None, :]
    if X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"X has {X.shape[1]} columns, window features have {len(FEATURE_NAMES)} (FEATURE_NAMES)")
    return np.concatenate([X, plant.features(X)], axis=1)
