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
def served(tmp_path_factory):
    from ray import serve

    from configs.settings import load_config
    from serving.auth import Claims, issue_token, load_or_create_keys
    from serving.deployments import demo_models, deploy_models

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, namespace="evtwin-serve-test")
    from training.features import FEATURE_NAMES

    failure, severity = demo_models(rows=600, feature_names=FEATURE_NAMES)  # the twins' feature width
    grpc_port, http_port = free_port(), free_port()
    secret_path = tmp_path_factory.mktemp("keys") / "auth.secret"
    keys = load_or_create_keys(secret_path)
    config = load_config(overrides=[f"serving.serve_grpc_port={grpc_port}", f"serving.serve_http_port={http_port}",
                                    f"serving.auth_secret_path={secret_path}", "serving.host=127.0.0.1"])
    try:
        handle = deploy_models(config, None, failure_model=failure, severity_model=severity)
        yield {"handle": handle, "port": grpc_port, "http_port": http_port, "failure": failure, "severity": severity,
               "keys": keys, "config": config,
               "operator": issue_token(keys, Claims(role="operator", sub="ops"), ttl_s=3600)}
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
    metadata = (("application", APP_NAME), ("authorization", f"Bearer {served['operator']}"))
    with grpc.insecure_channel(f"127.0.0.1:{served['port']}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        risk = stub.Predict(request, metadata=metadata, timeout=30)
        severity = stub.Severity(request, metadata=metadata, timeout=30)
        bad = prediction_pb2.PredictRequest(values=[1.0, 2.0, 3.0])
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(bad, metadata=metadata, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
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


def test_the_grpc_ingress_checks_the_front_doors_tokens(served) -> None:
    import grpc

    from protos.evtwin.v1 import prediction_pb2, prediction_pb2_grpc
    from serving.auth import Claims, KeySet, issue_token
    from serving.deployments import APP_NAME

    request = prediction_pb2.PredictRequest(feature_names=served["failure"].feature_names, vehicle_ids=["V1", "V1"],
                                            values=rows(2).ravel().tolist())
    own = issue_token(served["keys"], Claims(role="vehicle", sub="V1"), ttl_s=3600)
    other = issue_token(served["keys"], Claims(role="vehicle", sub="V2"), ttl_s=3600)
    forged = issue_token(KeySet.single(b"f" * 32, kid=served["keys"].current), Claims(role="operator", sub="x"))

    def call(token: str | None) -> grpc.StatusCode:
        metadata = (("application", APP_NAME),) + ((("authorization", f"Bearer {token}"),) if token else ())
        try:
            stub.Predict(request, metadata=metadata, timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            assert "Traceback" not in (error.details() or "")
            return error.code()

    with grpc.insecure_channel(f"127.0.0.1:{served['port']}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)
        assert call(None) == grpc.StatusCode.UNAUTHENTICATED
        assert call(forged) == grpc.StatusCode.UNAUTHENTICATED
        assert call(other) == grpc.StatusCode.PERMISSION_DENIED
        assert call(own) == grpc.StatusCode.OK
        assert call(served["operator"]) == grpc.StatusCode.OK


def _process_tree(root: int) -> set[int]:
    import os

    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    children.setdefault(int(stat.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return tree


def listening_sockets(root: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket listening in ``root``'s process tree (/proc)."""
    import ipaddress
    import os
    import struct

    owner: dict[str, int] = {}
    for pid in _process_tree(root):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        with open(f"/proc/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in owner:  # 0A: LISTEN
                    continue
                hex_ip, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_ip)
                if v6:
                    raw = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, 16, 4))
                    address = str(ipaddress.IPv6Address(raw))
                    mapped = ipaddress.IPv6Address(raw).ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
                    address = str(mapped) if mapped else address
                else:
                    address = str(ipaddress.IPv4Address(raw[::-1]))
                pid = owner[fields[9]]
                try:
                    with open(f"/proc/{pid}/comm") as comm:
                        name = comm.read().strip()
                except OSError:
                    name = "?"
                found.append((name, address, int(hex_port, 16)))
    return found


WILDCARDS = ("0.0.0.0", "::")


def test_the_ports_evtwin_configures_listen_on_the_configured_host_only(served) -> None:
    import asyncio
    import os

    from serving.backend import MemoryFleet
    from serving.server import start_front_door

    metrics_port = free_port()

    async def with_front_door() -> tuple[int, list[tuple[str, str, int]]]:
        cfg = served["config"].serving.model_copy(update={"metrics_port": metrics_port})
        door = await start_front_door(MemoryFleet(), cfg, secret=served["keys"], port=0)
        try:
            return door.port, listening_sockets(os.getpid())
        finally:
            await door.stop()

    port, sockets = asyncio.run(with_front_door())
    for wanted in (port, metrics_port, served["http_port"]):  # front door, /metrics, Serve's HTTP proxy
        bound = {address for _, address, p in sockets if p == wanted}
        assert bound == {"127.0.0.1"}, (wanted, bound, sockets)


@pytest.mark.xfail(strict=True, reason="Ray 2.60 binds the GCS, raylet, core-worker, dashboard-agent and Serve "
                   "gRPC-proxy ports on every interface whatever the node IP (no option to bind them to "
                   "127.0.0.1); README 'Security' says so. Strict: passes, and fails this mark, once Ray stops.")
def test_no_socket_of_the_server_process_tree_listens_on_a_wildcard_address(served) -> None:
    import os

    wildcard = [s for s in listening_sockets(os.getpid()) if s[1] in WILDCARDS]
    assert wildcard == []
