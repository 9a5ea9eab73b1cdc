"""Trained model artefacts under ``runs/<name>/models/``: save with provenance, load with checks.

Layout (no pickle anywhere: LightGBM text models, a torch ``state_dict``, JSON metadata)::

    models/failure/h<H>.txt, mode.txt, meta.json     failure risk per horizon (+ P(mode | failure))
    models/failure/plant.json                        plant relations fitted on healthy train windows
    models/severity/model.txt, plant.json, meta.json severity 1..3 (the same plant.json)
    models/anomaly/weights.pt, meta.json             LSTM autoencoder
    models/baselines.json                            baseline detectors and their validation thresholds

Every ``meta.json`` carries the config, feature list and hash, telemetry schema version, data hash,
metrics, package versions and the sha256 of every model file beside it. Loaders refuse an artefact whose
feature list, feature hash or schema version differs from this code, a model file whose digest is not the
recorded one (a replaced file, even a valid model), and an artefact with no digests (``ArtifactMismatch``).
The LightGBM models read window features extended by the plant residuals (``training.plant.model_inputs``,
``MODEL_FEATURE_NAMES``): callers pass window features (``FEATURE_NAMES``), the loaded model adds the rest.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from configs.schema import SCHEMA
from training.anomaly import build_autoencoder, feature_sequences, normalise, reconstruction_errors
from training.calibration import Calibrator
from training.features import FEATURE_NAMES, FEATURES_HASH
from training.plant import MODEL_FEATURE_NAMES, PLANT_FILE, PlantModel, model_inputs

__all__ = [
    "ArtifactMismatch", "FailureModel", "SeverityModel", "AnomalyModel", "load_failure_model",
    "load_severity_model", "load_anomaly_model", "package_versions", "write_meta", "read_meta", "MODELS_DIR",
    "model_bytes", "file_sha256", "load_plant",
]

MODELS_DIR = "models"
ARTIFACT_VERSION = "1"
_log = logging.getLogger(__name__)


class ArtifactMismatch(ValueError):
    """The artefact was trained for other features or another telemetry schema than this code's."""


def package_versions() -> dict[str, str]:
    import lightgbm
    import pyarrow
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "lightgbm": lightgbm.__version__,
            "torch": torch.__version__, "pyarrow": pyarrow.__version__}


def provenance(feature_names: Sequence[str] = FEATURE_NAMES) -> dict[str, Any]:
    return {"artifact_version": ARTIFACT_VERSION, "feature_names": list(feature_names),
            "features_hash": FEATURES_HASH, "schema_version": SCHEMA.version, "versions": package_versions()}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_meta(folder: Path, meta: dict[str, Any], model_files: Sequence[str]) -> None:
    """Write ``meta.json`` with the sha256 of each of ``model_files`` (names in ``folder``, written already)."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {name: file_sha256(folder / name) for name in model_files}
    (folder / "meta.json").write_text(json.dumps({**meta, "sha256": digests}, indent=1, default=_json_default) + "\n")


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `evtwin train --run <run>` first")
    meta = json.loads(path.read_text())
    _check(meta, path)
    return meta


def model_bytes(folder: Path, meta: dict[str, Any], name: str) -> bytes:
    """The bytes of model file ``name``, refused unless their sha256 is the one recorded at training.

    The bytes returned are the bytes checked (parse them, do not reopen the file)."""
    path = folder / name
    recorded = (meta.get("sha256") or {}).get(name)
    if recorded is None:
        raise ArtifactMismatch(f"{path}: no sha256 recorded for it in {folder / 'meta.json'}; retrain "
                               "(`evtwin train --run <run>`)")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise ArtifactMismatch(f"{path}: sha256 {actual} is not the {recorded} recorded at training; the file was "
                               "replaced or corrupted: restore it or retrain")
    return data


def _first_difference(trained: Sequence[str], ours: Sequence[str]) -> str:
    """Where two feature lists part: '... position i: trained 'a', this code 'b''."""
    for i, (a, b) in enumerate(zip(trained, ours, strict=False)):
        if a != b:
            return f"first difference at position {i}: trained {a!r}, this code {b!r}"
    shorter, longer = (trained, ours) if len(trained) < len(ours) else (ours, trained)
    return (f"first difference at position {len(shorter)}: {'trained' if longer is trained else 'this code'} "
            f"has {longer[len(shorter)]!r}")


def _check(meta: dict[str, Any], path: Path) -> None:
    if meta.get("schema_version") != SCHEMA.version:
        raise ArtifactMismatch(f"{path}: trained for telemetry schema {meta.get('schema_version')!r}, "
                               f"this code reads {SCHEMA.version!r}; retrain")
    if not isinstance(meta.get("sha256"), dict) or not meta["sha256"]:
        raise ArtifactMismatch(f"{path}: no sha256 digests of the model files (trained before they were recorded, "
                               "or edited); model files cannot be checked: retrain (`evtwin train --run <run>`)")
    trained_names = [str(n) for n in meta.get("feature_names", [])]
    if (meta.get("features_hash") == FEATURES_HASH and trained_names != list(FEATURE_NAMES)
            and sorted(trained_names) == sorted(FEATURE_NAMES)):
        raise ArtifactMismatch(f"{path}: trained on the same features in another order (hash {FEATURES_HASH!r} "
                               f"equal); {_first_difference(trained_names, FEATURE_NAMES)}; retrain")
    if meta.get("features_hash") != FEATURES_HASH or trained_names != list(FEATURE_NAMES):
        raise ArtifactMismatch(f"{path}: trained on feature set {meta.get('features_hash')!r} "
                               f"({len(meta.get('feature_names', []))} features), this code computes "
                               f"{FEATURES_HASH!r} ({len(FEATURE_NAMES)}); "
                               f"{_first_difference(trained_names, FEATURE_NAMES)}; retrain")


def _booster(folder: Path, meta: dict[str, Any], name: str):  # -> lightgbm.Booster
    import lightgbm as lgb

    return lgb.Booster(model_str=model_bytes(folder, meta, name).decode())


def _as_matrix(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None, :]
    if X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"X has {X.shape[1]} columns, the model expects {len(FEATURE_NAMES)} (FEATURE_NAMES)")
    return X


def _plant(folder: Path, meta: dict[str, Any]) -> PlantModel:
    """The plant relations stored beside a LightGBM model (digest checked), for its input columns."""
    if [str(n) for n in meta.get("model_feature_names", [])] != list(MODEL_FEATURE_NAMES):
        raise ArtifactMismatch(f"{folder / 'meta.json'}: model_feature_names differ from this code's window features "
                               f"+ plant residuals ({len(MODEL_FEATURE_NAMES)} columns); retrain")
    try:
        return PlantModel.from_json(model_bytes(folder, meta, PLANT_FILE).decode())
    except ValueError as error:
        if isinstance(error, ArtifactMismatch):
            raise
        raise ArtifactMismatch(f"{folder / PLANT_FILE}: {error}") from None


def load_plant(run_dir: str | Path) -> PlantModel:
    """The plant relations of a trained run (the failure model's copy, digest checked)."""
    folder = Path(run_dir) / MODELS_DIR / "failure"
    return _plant(folder, read_meta(folder))


class FailureModel:
    """Calibrated failure probability per horizon, per-mode risk, LightGBM feature contributions."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.plant = _plant(folder, meta)
        self.feature_names: tuple[str, ...] = MODEL_FEATURE_NAMES  # the boosters' columns (contributions name them)
        self.horizons: tuple[int, ...] = tuple(int(h) for h in meta["horizons"])
        self.modes: tuple[str, ...] = tuple(meta.get("modes", ()))
        self._boosters = {h: _booster(folder, meta, f"h{h}.txt") for h in self.horizons}
        self._calibrators = {h: Calibrator.from_dict(meta["calibrators"][str(h)]) for h in self.horizons}
        self._mode_booster = _booster(folder, meta, "mode.txt") if self.modes else None

    def predict_raw(self, X: np.ndarray) -> dict[int, np.ndarray]:
        X = model_inputs(_as_matrix(X), self.plant)
        return {h: b.predict(X, num_threads=1 if X.shape[0] < 256 else 0) for h, b in self._boosters.items()}

    def predict(self, X: np.ndarray) -> dict[int, np.ndarray]:
        """Calibrated P(failure within h days) for each horizon, shape (n,) each."""
        raw = self.predict_raw(X)
        probs = {h: self._calibrators[h].apply(raw[h]) for h in self.horizons}
        # Risk cannot fall with a longer horizon: enforce monotonicity after separate calibration.
        running = np.zeros(next(iter(probs.values())).shape)
        for h in sorted(self.horizons):
            running = np.maximum(running, probs[h])
            probs[h] = running.copy()
        return probs

    def predict_modes(self, X: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """Per-mode risk: P(failure within h) x P(mode | failure). Empty when no mode model was trained."""
        if self._mode_booster is None:
            return {}
        inputs = model_inputs(_as_matrix(X), self.plant)
        share = self._mode_booster.predict(inputs).reshape(X.shape[0], len(self.modes))
        return {h: {m: p * share[:, k] for k, m in enumerate(self.modes)} for h, p in self.predict(X).items()}

    def contributions(self, X: np.ndarray, top_k: int = 5, horizon: int | None = None) -> list[list[tuple[str, float]]]:
        """Top-|value| LightGBM SHAP contributions (log-odds) per row for ``horizon`` (shortest by default)."""
        X = model_inputs(_as_matrix(X), self.plant)
        h = self.horizons[0] if horizon is None else horizon
        contrib = self._boosters[h].predict(X, pred_contrib=True)[:, :-1]  # last column: bias
        order = np.argsort(-np.abs(contrib), axis=1)[:, :top_k]
        return [[(self.feature_names[j], float(contrib[i, j])) for j in row] for i, row in enumerate(order)]


class SeverityModel:
    """P(severity = 1, 2, 3 | a failure is coming)."""

    levels = (1, 2, 3)

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.plant = _plant(folder, meta)
        self.feature_names: tuple[str, ...] = MODEL_FEATURE_NAMES
        self._booster = _booster(folder, meta, "model.txt")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = model_inputs(_as_matrix(X), self.plant)
        return self._booster.predict(X).reshape(X.shape[0], 3)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.levels)[self.predict_proba(X).argmax(axis=1)]


class AnomalyModel:
    """The LSTM-AE. Input: window *feature* sequences (see docs/CONTRACTS.md, not raw frames).

    ``score(sequences)``: ``sequences`` (n, sequence_length, len(signal_names)) raw feature values of
    the ``signal_names`` columns, oldest window first; or (n, L, len(FEATURE_NAMES)) full feature
    vectors, from which the signals are taken. Returns (errors (n,), per-signal shares (n, S)).
    ``threshold``: the configured percentile of validation errors (score = error / threshold);
    ``alert_threshold``: score at which alerts fire, chosen on validation under the alert budget.
    ``signal_error_reference``: the fleet's normal error per signal (None in models trained before it).
    """

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        import torch

        self.meta = meta
        self.signal_names: tuple[str, ...] = tuple(meta["signal_names"])
        self.signal_index = np.array([FEATURE_NAMES.index(s) for s in self.signal_names], dtype=np.int64)
        self.sequence_length = int(meta["sequence_length"])
        self.threshold = float(meta["threshold"])
        self.alert_threshold = float(meta.get("alert_threshold", 1.0))
        self.center = np.asarray(meta["center"], np.float32)
        self.scale = np.asarray(meta["scale"], np.float32)
        # Per-signal median error of normal validation windows (what personal heads measure excess
        # against); None for a model trained before it was recorded (twins then fall back, and say so).
        reference = meta.get("signal_error_reference")
        self.signal_error_reference: np.ndarray | None = (
            None if reference is None else np.asarray(reference, np.float64))
        if self.signal_error_reference is None:
            _log.warning("%s: no signal_error_reference (trained before it was recorded): personal heads use a "
                         "uniform fallback reference; retrain the anomaly model", folder / "meta.json")
        elif self.signal_error_reference.shape != (len(self.signal_names),):
            raise ArtifactMismatch(f"{folder / 'meta.json'}: signal_error_reference has "
                                   f"{self.signal_error_reference.size} values for {len(self.signal_names)} signals")
        # Scoring is small batches on a shared machine: one intra-op thread is ~10x faster than two
        # contending ones (measured), and twins/Serve replicas parallelise across processes anyway.
        torch.set_num_threads(1)
        self.net = build_autoencoder(len(self.signal_names), int(meta["hidden_size"]), self.sequence_length)
        state = torch.load(io.BytesIO(model_bytes(folder, meta, "weights.pt")), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.net.eval()

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seq = np.asarray(sequences, dtype=np.float32)
        if seq.ndim == 2:
            seq = seq[None]
        if seq.shape[2] == len(FEATURE_NAMES) and len(self.signal_names) != len(FEATURE_NAMES):
            seq = seq[:, :, self.signal_index]
        if seq.shape[1:] != (self.sequence_length, len(self.signal_names)):
            raise ValueError(f"sequences must be (n, {self.sequence_length}, {len(self.signal_names)}) "
                             f"or (n, {self.sequence_length}, {len(FEATURE_NAMES)}); got {seq.shape}")
        return reconstruction_errors(self.net, normalise(seq, self.center, self.scale))

    def score_vehicle(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (error / threshold) and shares of every window of one vehicle's feature matrix (time order)."""
        seq = feature_sequences(np.asarray(X, np.float32)[:, self.signal_index], self.sequence_length)
        errors, shares = self.score(seq)
        return errors / self.threshold, shares


class _Cache:
    """Loaded artefacts per (kind, folder, mtime): Serve replicas and twins load once."""

    items: dict[tuple[str, str, float], Any] = {}


def _load(kind: str, run_dir: str | Path, cls: type) -> Any:
    folder = Path(run_dir) / MODELS_DIR / kind
    meta_path = folder / "meta.json"
    key = (kind, str(folder.resolve()), meta_path.stat().st_mtime if meta_path.exists() else 0.0)
    if key not in _Cache.items:
        _Cache.items[key] = cls(folder, read_meta(folder))
    return _Cache.items[key]


def load_failure_model(run_dir: str | Path) -> FailureModel:
    return _load("failure", run_dir, FailureModel)


def load_severity_model(run_dir: str | Path) -> SeverityModel:
    return _load("severity", run_dir, SeverityModel)


def load_anomaly_model(run_dir: str | Path) -> AnomalyModel:
    return _load("anomaly", run_dir, AnomalyModel)
