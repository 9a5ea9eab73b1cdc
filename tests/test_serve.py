"""Ray Serve model services on a real local Ray: a plain gRPC client and a DeploymentHandle both get answers."""
from __future__ import annotations

import socket

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    from ray import serve

    from configs.settings import load_config
    from serving.deployments import demo_models, deploy_models

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, namespace="evtwin-serve-test")
    from training.features import FEATURE_NAMES

    failure, severity = demo_models(rows=600, feature_names=FEATURE_NAMES)  # the twins' feature width
    grpc_port, http_port = free_port(), free_port()
    config = load_config(overrides=[f"serving.serve_grpc_port={grpc_port}", f"serving.serve_http_port={http_port}"])
    try:
        handle = deploy_models(config, None, failure_model=failure, severity_model=severity)
        yield {"handle": handle, "port": grpc_port, "failure": failure, "severity": severity}
    finally:
        serve.shutdown()
        ray.shutdown()


def rows(n: int, seed: int = 0) -> np.ndarray:
    from training.features import FEATURE_NAMES

    return np.random.default_rng(seed).normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)


def test_a_plain_grpc_client_gets_risk_and_severity(served) -> None:
    import grpc

    from protos.evtwin.v1 import prediction_pb2, prediction_pb2_grpc
    from serving.deployments import APP_NAME, predict_risk, predict_severity

    X = rows(5)
    request = prediction_pb2.PredictRequest(feature_names=served["failure"].feature_names,
                                            vehicle_ids=[f"v{i}" for i in range(5)], values=X.ravel().tolist(), top_k=2)
    metadata = (("application", APP_NAME),)
    with grpc.insecure_channel(f"127.0.0.1:{served['port']}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        risk = stub.Predict(request, metadata=metadata, timeout=30)
        severity = stub.Severity(request, metadata=metadata, timeout=30)
        bad = prediction_pb2.PredictRequest(values=[1.0, 2.0, 3.0])
        with pytest.raises(grpc.RpcError):
            stub.Predict(bad, metadata=metadata, timeout=30)
    expected = predict_risk(served["failure"], X, 2)
    np.testing.assert_allclose(np.array(risk.risk).reshape(5, 3), expected["risk"], rtol=1e-5)
    assert list(risk.horizons_days) == [7, 14, 30] and len(risk.contributions) == 10
    assert list(severity.severity) == predict_severity(served["severity"], X)["severity"].tolist()


def test_a_handle_gets_the_same_answers(served) -> None:
    from ray import serve

    from serving.deployments import APP_NAME, predict_risk

    handle = serve.get_deployment_handle("FailurePredictor", app_name=APP_NAME)
    X = rows(7, seed=3)
    responses = [handle.predict_rows.remote(X[i:i + 1], 1) for i in range(7)]  # batched by @serve.batch
    answers = [r.result(timeout_s=30) for r in responses]
    expected = predict_risk(served["failure"], X, 1)
    np.testing.assert_allclose(np.concatenate([a["risk"] for a in answers]), expected["risk"], rtol=1e-5)
    assert [a["contributions"][0] for a in answers] == expected["contributions"]
    severity = serve.get_deployment_handle("SeverityClassifier", app_name=APP_NAME)
    assert severity.severity_rows.remote(X).result(timeout_s=30)["probabilities"].shape == (7, 3)


def test_twin_hosts_get_predictions_through_handles(served, tmp_path) -> None:
    from configs.settings import load_config
    from serving.predictor import ServePredictor
    from twins.hosting import TwinFleet
    from twins.synthetic import synthetic_frames

    config = load_config(overrides=["dataset.window_minutes=10", "dataset.stride_minutes=10",
                                    "twins.prediction_interval_minutes=10", "twins.twins_per_actor=4",
                                    "twins.risk_alert_threshold=0.0001", f"twins.checkpoint_uri={tmp_path / 'ckpt'}"])
    fleet = TwinFleet.create(config, expected_vehicles=2, predictor_factory=ServePredictor)
    frames = synthetic_frames("veh-p", 400)
    frames["vehicle_id"] = np.full(400, "veh-p", dtype=object)
    alerts = []
    for lo in range(0, 400, 100):
        result = fleet.ingest({k: v[lo:lo + 100] for k, v in frames.items()})
        assert result.applied == 100  # never waits for the model service
        alerts += result.alerts
    alerts += fleet.drain(timeout_s=20)
    summary = fleet.summary("veh-p")
    assert set(summary["risk"]) == {"7", "14", "30"}
    risk_alerts = [a for a in alerts if a.rule == "failure_risk"]
    assert len(risk_alerts) == 1 and risk_alerts[0].severity in (1, 2, 3) and len(risk_alerts[0].signals) == 3
    assert fleet.stats()["predictions_failed"] == 0
    fleet.close()
