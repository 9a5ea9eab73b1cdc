"""Model services on Ray Serve: ``FailurePredictor`` and ``SeverityClassifier``.

    from ray import serve
    from serving.deployments import deploy_models
    deploy_models(config, "runs/default")          # gRPC ingress on serving.serve_grpc_port + handles
    handle = serve.get_deployment_handle("FailurePredictor", app_name="evtwin-models")
    handle.predict_rows.remote(X, 3).result()      # {"horizons", "risk", "modes", "mode_risk", "contributions"}

Both deployments load the trained artefacts of a run (``training.artifacts``) in ``__init__``, batch
concurrent requests with ``@serve.batch`` (one LightGBM call for many requests), and answer health
checks with a probe prediction. They are reachable two ways:

* over Serve's gRPC ingress with ``protos/evtwin/v1/prediction.proto`` (``PredictionService``; metadata
  ``application: evtwin-models``). ``FailurePredictor`` is the app's ingress: its methods ``Predict`` and
  ``Severity`` are named after the RPCs (``Severity`` forwards to the ``SeverityClassifier`` handle);
* through ``DeploymentHandle``s inside the cluster (the twins): ``predict_rows(X, top_k)`` and
  ``severity_rows(X)`` take and return numpy arrays, no proto in between.

Decoding, encoding and the prediction itself are plain functions below; the classes only wire them.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from protos.evtwin.v1 import prediction_pb2
from serving.auth import AuthError, KeySet, authorize_prediction, load_keys, load_or_create_keys
from training import predictions
from training.artifacts import load_failure_model, load_severity_model
from training.features import FEATURE_NAMES

APP_NAME = "evtwin-models"
SERVICER_FUNCTION = "protos.evtwin.v1.prediction_pb2_grpc.add_PredictionServiceServicer_to_server"
SEVERITY_LEVELS = (1, 2, 3)
MAX_BATCH_SIZE = 64
BATCH_WAIT_S = 0.002


class FailureModel(Protocol):
    feature_names: Sequence[str]

    def predict(self, X: np.ndarray) -> dict[int, np.ndarray]: ...
    def contributions(self, X: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]: ...


class SeverityModel(Protocol):
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------- pure logic
class RequestError(ValueError):
    """A request that cannot be answered (wrong feature list, ragged rows): the client's fault."""


def decode_rows(request: Any, feature_names: Sequence[str]) -> np.ndarray:
    """(rows x features) float32 from a ``PredictRequest`` (packed row-major values)."""
    names = list(request.feature_names)
    if names and names != list(feature_names):
        mismatch = next((i for i, (a, b) in enumerate(zip(names, feature_names, strict=False)) if a != b),
                        min(len(names), len(feature_names)))
        raise RequestError(f"feature_names differ from the model's ({len(names)} given, {len(feature_names)} expected; "
                           f"first mismatch at {mismatch})")
    values = np.asarray(request.values, dtype=np.float32)
    width = len(feature_names)
    if width == 0 or values.size % width:
        raise RequestError(f"values has {values.size} entries, not a multiple of {width} features")
    rows = values.size // width
    if request.vehicle_ids and len(request.vehicle_ids) != rows:
        raise RequestError(f"vehicle_ids has {len(request.vehicle_ids)} entries for {rows} rows")
    return values.reshape(rows, width)


def predict_risk(model: FailureModel, X: np.ndarray, top_k: int) -> dict[str, Any]:
    """Risk per horizon (rows x horizons), per mode where the model has mode heads, top contributions."""
    X = np.asarray(X, dtype=np.float32)
    by_horizon = model.predict(X)
    horizons = sorted(int(h) for h in by_horizon)
    risk = np.stack([np.asarray(by_horizon[h], dtype=np.float32) for h in horizons], axis=1) if X.shape[0] \
        else np.zeros((0, len(horizons)), dtype=np.float32)
    modes, mode_risk = predictions.mode_risk(model, X)
    mode_risk = mode_risk.astype(np.float32)
    contributions = model.contributions(X, top_k) if top_k > 0 and X.shape[0] else [[] for _ in range(X.shape[0])]
    return {"horizons": horizons, "risk": risk, "modes": modes, "mode_risk": mode_risk,
            "contributions": contributions, "version": str(getattr(model, "version", ""))}


def predict_severity(model: SeverityModel, X: np.ndarray) -> dict[str, Any]:
    proba = np.asarray(model.predict_proba(np.asarray(X, dtype=np.float32)), dtype=np.float32)
    proba = proba.reshape(X.shape[0], len(SEVERITY_LEVELS))
    severity = np.asarray(SEVERITY_LEVELS)[np.argmax(proba, axis=1)] if X.shape[0] else np.zeros(0, dtype=np.int64)
    return {"levels": list(SEVERITY_LEVELS), "probabilities": proba, "severity": severity,
            "version": str(getattr(model, "version", ""))}


def split_answer(answer: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    """Cut one batched answer back into the answers of the requests that made it (``@serve.batch``)."""
    out, start = [], 0
    for size in sizes:
        part = {}
        for key, value in answer.items():
            if isinstance(value, np.ndarray) or (key == "contributions"):
                part[key] = value[start:start + size]
            else:
                part[key] = value
        out.append(part)
        start += size
    return out


def concat_rows(requests: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(r, dtype=np.float32) for r in requests], axis=0)


def risk_response(answer: dict[str, Any]) -> Any:
    response = prediction_pb2.PredictResponse(horizons_days=answer["horizons"], modes=answer["modes"],
                                              model_version=answer["version"])
    response.risk.extend(answer["risk"].ravel().tolist())
    response.mode_risk.extend(answer["mode_risk"].ravel().tolist())
    for row, pairs in enumerate(answer["contributions"]):
        for feature, value in pairs:
            response.contributions.add(row=row, feature=feature, value=float(value))
    return response


def severity_response(answer: dict[str, Any]) -> Any:
    response = prediction_pb2.SeverityResponse(levels=answer["levels"], model_version=answer["version"])
    response.probabilities.extend(answer["probabilities"].ravel().tolist())
    response.severity.extend(answer["severity"].tolist())
    return response


def row_answers(risk: dict[str, Any], severity: dict[str, Any] | None) -> tuple[list[dict[int, float]], list[str | None],
                                                                                 list[list[tuple[str, float]]], list[int | None]]:
    """Per-row plain values for the twins: risk by horizon, most likely mode, contributions, severity
    (``training.predictions``, the twins' one prediction path, from the batched answers)."""
    rows = predictions.answers_from_arrays(risk["horizons"], risk["risk"], risk["modes"], risk["mode_risk"],
                                           risk["contributions"], None if severity is None else severity["severity"])
    return rows.risk, rows.mode, rows.contributions, rows.severity


class PredictionRefused(Exception):
    """A PredictionService call refused before any work; ``status`` is the gRPC status name."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Serve pickles the exception from the replica to the proxy; the default would call cls(message).
        return (type(self), (self.status, self.message))


def check_prediction_call(keys: KeySet | None, metadata: Sequence[tuple[str, Any]], vehicle_ids: Sequence[str],
                          now_s: float) -> None:
    """The front door's rule on Serve's gRPC ingress: no keys (auth off) lets every call through."""
    if keys is None:
        return
    try:
        authorize_prediction(keys, metadata, vehicle_ids, now_s)
    except AuthError as error:
        raise PredictionRefused("UNAUTHENTICATED", str(error)) from None
    except PermissionError as error:
        raise PredictionRefused("PERMISSION_DENIED", str(error)) from None


def _refuse_grpc(grpc_context: Any, status: str, message: str) -> None:
    """Set the status Serve returns for a call that raises next (it keeps a code set on the context)."""
    import grpc

    if grpc_context is not None:
        grpc_context.set_code(getattr(grpc.StatusCode, status))
        grpc_context.set_details(message)


# ---------------------------------------------------------------------------- loading
def load_models(run_dir: str) -> tuple[FailureModel, SeverityModel]:
    return load_failure_model(run_dir), load_severity_model(run_dir)


@dataclass
class BoosterFailureModel:
    """LightGBM boosters per horizon behind the ``FailureModel`` contract (tests, benchmarks)."""

    boosters: dict[int, Any]
    feature_names: tuple[str, ...]
    version: str = "demo"

    def predict(self, X: np.ndarray) -> dict[int, np.ndarray]:
        return {h: b.predict(X) for h, b in self.boosters.items()}

    def contributions(self, X: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
        first = self.boosters[min(self.boosters)]
        contrib = first.predict(X, pred_contrib=True)[:, :-1]
        top = np.argsort(-np.abs(contrib), axis=1)[:, :top_k]
        return [[(self.feature_names[j], float(contrib[i, j])) for j in top[i]] for i in range(X.shape[0])]


@dataclass
class BoosterSeverityModel:
    booster: Any
    version: str = "demo"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X)


def demo_models(n_features: int = 32, rows: int = 2000, seed: int = 0, horizons: Sequence[int] = (7, 14, 30),
                feature_names: Sequence[str] | None = None) -> tuple[BoosterFailureModel, BoosterSeverityModel]:
    """Small LightGBM models on synthetic features: for tests and benchmarks when no run has been trained."""
    import lightgbm as lgb

    names = tuple(feature_names) if feature_names is not None else tuple(f"f{i}" for i in range(n_features))
    n_features = len(names)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, n_features)).astype(np.float32)
    params = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1, "num_threads": 1,
              "seed": seed}
    boosters = {}
    for k, h in enumerate(horizons):
        logit = X[:, 0] + 0.5 * X[:, 1] * (k + 1) - 1.0 + rng.normal(scale=0.5, size=rows)
        boosters[int(h)] = lgb.train(params, lgb.Dataset(X, (logit > 0).astype(int)), num_boost_round=30)
    severity = np.digitize(X[:, 2] + 0.3 * X[:, 0], [-0.5, 0.7])
    sev = lgb.train({**params, "objective": "multiclass", "num_class": 3}, lgb.Dataset(X, severity),
                    num_boost_round=20)
    return BoosterFailureModel(boosters, names), BoosterSeverityModel(sev)


# ---------------------------------------------------------------------------- Serve shells
def _deployment_classes() -> tuple[Any, Any]:
    """Build the deployment classes on first use (module import stays free of Ray Serve)."""
    from ray import serve

    @serve.deployment(name="SeverityClassifier", ray_actor_options={"num_cpus": 0.5},
                      health_check_period_s=10, health_check_timeout_s=30)
    class SeverityClassifier:
        def __init__(self, run_dir: str | None = None, model: Any = None) -> None:
            self.model = model if model is not None else load_models(run_dir)[1]  # type: ignore[arg-type]
            self.width = len(getattr(self.model, "feature_names", ())) or None

        @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
        async def severity_rows(self, requests: list[np.ndarray]) -> list[dict[str, Any]]:
            answer = predict_severity(self.model, concat_rows(requests))
            return split_answer(answer, [len(r) for r in requests])

        async def severity_unbatched(self, X: np.ndarray) -> dict[str, Any]:
            return predict_severity(self.model, X)

        def check_health(self) -> None:
            if self.model is None:
                raise RuntimeError("severity model not loaded")

    @serve.deployment(name="FailurePredictor", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16,
                      health_check_period_s=10, health_check_timeout_s=30)
    class FailurePredictor:
        def __init__(self, severity: Any, run_dir: str | None = None, model: Any = None,
                     auth_secret_path: str | None = None) -> None:
            self.model = model if model is not None else load_models(run_dir)[0]  # type: ignore[arg-type]
            self.severity = severity
            # The gRPC ingress checks the front door's tokens (Ray 2.60 binds it on every interface).
            self.keys = load_keys(auth_secret_path) if auth_secret_path else None
            # Callers send window features (FEATURE_NAMES); the boosters' own columns (``feature_names``, which
            # may add derived inputs such as plant residuals) only name contributions.
            self.input_names = list(FEATURE_NAMES)
            self._probe = np.zeros((1, len(self.input_names)), dtype=np.float32)

        # --- handles (inside the cluster) --------------------------------------------------------
        @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
        async def predict_rows(self, X: list[np.ndarray], top_k: list[int]) -> list[dict[str, Any]]:
            answer = predict_risk(self.model, concat_rows(X), max(top_k))
            parts = split_answer(answer, [len(x) for x in X])
            for part, k in zip(parts, top_k, strict=False):
                part["contributions"] = [c[:k] for c in part["contributions"]]
            return parts

        async def predict_unbatched(self, X: np.ndarray, top_k: int = 0) -> dict[str, Any]:
            return predict_risk(self.model, X, top_k)

        # --- gRPC ingress: methods named after the RPCs of PredictionService ----------------------
        def _checked_rows(self, request: Any, grpc_context: Any) -> np.ndarray:
            metadata = list(grpc_context.invocation_metadata()) if grpc_context is not None else []
            try:
                check_prediction_call(self.keys, metadata, list(request.vehicle_ids), time.time())
                return decode_rows(request, self.input_names)
            except PredictionRefused as refused:
                _refuse_grpc(grpc_context, refused.status, str(refused))
                raise
            except RequestError as error:
                _refuse_grpc(grpc_context, "INVALID_ARGUMENT", str(error))
                raise

        async def Predict(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - the RPC's name
            X = self._checked_rows(request, grpc_context)
            return risk_response(await self.predict_rows(X, int(request.top_k)))

        async def Severity(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - the RPC's name
            X = self._checked_rows(request, grpc_context)
            return severity_response(await self.severity.severity_rows.remote(X))

        def check_health(self) -> None:
            # A probe prediction: a replica whose model cannot predict is replaced by Serve.
            predict_risk(self.model, self._probe, 0)

    return FailurePredictor, SeverityClassifier


def build_app(run_dir: str | None = None, failure_model: Any = None, severity_model: Any = None,
              replicas: int | None = None, auth_secret_path: str | None = None) -> Any:
    """The Serve application: ``FailurePredictor`` (ingress) composed with ``SeverityClassifier``.

    ``replicas`` of ``FailurePredictor`` (default: one per CPU of the cluster): a replica is one
    process, and LightGBM scoring with contributions is CPU-bound, so one replica per core is what
    lets Serve use the machine (a plain grpcio server gets there with threads).
    """
    import ray

    failure_cls, severity_cls = _deployment_classes()
    if replicas is None:
        replicas = max(1, int(ray.cluster_resources().get("CPU", 1))) if ray.is_initialized() else 1
    severity = severity_cls.bind(run_dir=run_dir, model=severity_model)
    return failure_cls.options(num_replicas=replicas).bind(severity, run_dir=run_dir, model=failure_model,
                                                           auth_secret_path=auth_secret_path)


def start_serve(grpc_port: int, http_port: int = 8000, host: str = "127.0.0.1") -> None:
    """Start Serve (cluster-wide; once per cluster): its HTTP proxy on ``host``, and the gRPC ingress for
    ``PredictionService`` when ``grpc_port`` > 0.

    Ray 2.60's gRPC proxy has no host option: it listens on ``[::]`` (every interface) whatever ``host``
    is, hence off by default (``serving.serve_grpc_port=0``) and, when on, checking the front door's tokens.
    """
    from ray import serve
    from ray.serve.config import HTTPOptions, gRPCOptions

    grpc_options = gRPCOptions(port=grpc_port, grpc_servicer_functions=[SERVICER_FUNCTION] if grpc_port else [])
    serve.start(http_options=HTTPOptions(host=host, port=http_port), grpc_options=grpc_options)


def deploy_models(config: Any, run_dir: str | None, failure_model: Any = None, severity_model: Any = None,
                  replicas: int | None = None) -> Any:
    """Start Serve (gRPC ingress on ``serving.serve_grpc_port``) and run the model app; returns its handle."""
    from ray import serve

    cfg = config.serving
    start_serve(cfg.serve_grpc_port, cfg.serve_http_port, cfg.host)
    auth_secret_path = cfg.auth_secret_path if cfg.require_auth and cfg.serve_grpc_port else None
    if auth_secret_path:
        load_or_create_keys(auth_secret_path)  # the replicas read it; the front door reads the same file
    return serve.run(build_app(run_dir, failure_model, severity_model, replicas, auth_secret_path), name=APP_NAME,
                     route_prefix="/models")
