"""The alert lifecycle through the real gRPC server: acknowledge, assign, resolve; streamed to watchers, listed with
its state, refused for read-only credentials and bad input, durable across a restart, exported as labels."""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from configs.alert_states import AlertStateLog, read_outcome_labels
from configs.settings import load_config
from protos.evtwin.v1 import alerts_pb2, alerts_pb2_grpc
from serving.app import open_runtime
from serving.auth import Claims, issue_token
from serving.cli import build_parser
from serving.codec import encode_columns
from serving.commands import cmd_alerts, cmd_status
from training.commands import export_outcomes
from training.features import FEATURES_HASH

sys.path.insert(0, str(Path(__file__).parent))
from test_grpc_server import CFG, OPERATOR, SECRET, ServerThread, fleet_columns, md, stream_sync, token_for  # noqa: E402

pytestmark = pytest.mark.integration

READER = issue_token(SECRET, Claims(role="operator", sub="viewer"))


def start(checkpoints: Path) -> ServerThread:
    config = load_config(None, [f"twins.checkpoint_uri={checkpoints}"])
    runtime = open_runtime(config, "local")
    return ServerThread(runtime.backend, alert_states=AlertStateLog(str(checkpoints)))


def raise_fault_alert(target: str, vehicle: str) -> alerts_pb2.Alert:
    columns = fleet_columns([vehicle], 10)
    columns["speed"][4] = 999.0  # impossible: a sensor-fault alert
    with grpc.insecure_channel(target) as channel:
        replies = stream_sync(channel, [encode_columns(columns, batch_id=1)], token_for(vehicle))
    alerts = [r.alert for r in replies if r.HasField("alert")]
    assert len(alerts) == 1 and alerts[0].rule == "sensor_fault"
    return alerts[0]


def test_lifecycle_is_streamed_listed_refused_when_wrong_and_survives_a_restart(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    server = start(checkpoints)
    try:
        first = raise_fault_alert(server.target, "LC1")
        second = raise_fault_alert(server.target, "LC2")
        with grpc.insecure_channel(server.target) as channel:
            stub = alerts_pb2_grpc.AlertServiceStub(channel)
            listed = stub.ListAlerts(alerts_pb2.AlertFilter(vehicle_id="LC1"), metadata=md(OPERATOR)).alerts
            assert [a.lifecycle.state for a in listed] == ["open"]
            watch = stub.WatchAlerts(alerts_pb2.AlertFilter(vehicle_id="LC1"), metadata=md(OPERATOR), timeout=20)
            time.sleep(0.3)  # let the subscription register

            acked = stub.Acknowledge(alerts_pb2.AlertAction(alert_id=first.alert_id, note="looking"), metadata=md(OPERATOR))
            assert acked.lifecycle.state == "acknowledged" and acked.lifecycle.updated_by == "ops"
            assigned = stub.Assign(alerts_pb2.AlertAction(alert_id=first.alert_id, vehicle_id="LC1", assignee="carol"),
                                   metadata=md(OPERATOR))
            assert assigned.lifecycle.state == "assigned" and assigned.lifecycle.assignee == "carol"
            resolved = stub.Resolve(alerts_pb2.AlertAction(alert_id=first.alert_id, outcome="confirmed_failure",
                                                           mode="coolant_pump", note="pump seized"), metadata=md(OPERATOR))
            assert (resolved.lifecycle.state, resolved.lifecycle.outcome, resolved.lifecycle.mode) == (
                "resolved", "confirmed_failure", "coolant_pump")
            stub.Resolve(alerts_pb2.AlertAction(alert_id=second.alert_id, outcome="false_alarm"), metadata=md(OPERATOR))

            streamed = [next(watch) for _ in range(3)]  # only LC1's changes: the filter applies to state changes
            watch.cancel()
            assert [a.lifecycle.state for a in streamed] == ["acknowledged", "assigned", "resolved"]
            assert {a.alert_id for a in streamed} == {first.alert_id}

            refusals = [
                (READER, "Acknowledge", alerts_pb2.AlertAction(alert_id=second.alert_id), grpc.StatusCode.PERMISSION_DENIED),
                (OPERATOR, "Resolve", alerts_pb2.AlertAction(alert_id=first.alert_id, outcome="false_alarm"),
                 grpc.StatusCode.FAILED_PRECONDITION),  # resolved is final
                (OPERATOR, "Resolve", alerts_pb2.AlertAction(alert_id=second.alert_id, outcome="fixed"),
                 grpc.StatusCode.INVALID_ARGUMENT),
                (OPERATOR, "Resolve", alerts_pb2.AlertAction(alert_id=second.alert_id, outcome="confirmed_failure"),
                 grpc.StatusCode.INVALID_ARGUMENT),  # no mode
                (OPERATOR, "Assign", alerts_pb2.AlertAction(alert_id=second.alert_id, assignee=""),
                 grpc.StatusCode.INVALID_ARGUMENT),
                (OPERATOR, "Acknowledge", alerts_pb2.AlertAction(alert_id="0123456789abcdef"), grpc.StatusCode.NOT_FOUND),
                (None, "Acknowledge", alerts_pb2.AlertAction(alert_id=second.alert_id), grpc.StatusCode.UNAUTHENTICATED),
            ]
            for token, method, request, code in refusals:
                with pytest.raises(grpc.RpcError) as refused:
                    getattr(stub, method)(request, metadata=md(token))
                assert refused.value.code() == code, (method, request, refused.value.details())
            # a refusal names the field and value
            with pytest.raises(grpc.RpcError) as bad:
                stub.Resolve(alerts_pb2.AlertAction(alert_id=second.alert_id, outcome="fixed"), metadata=md(OPERATOR))
            assert "outcome='fixed'" in bad.value.details()
    finally:
        server.stop()

    restarted = start(checkpoints)  # same checkpoint URI: alerts and their lifecycle come back
    try:
        with grpc.insecure_channel(restarted.target) as channel:
            stub = alerts_pb2_grpc.AlertServiceStub(channel)
            states = {a.alert_id: a.lifecycle for a in stub.ListAlerts(alerts_pb2.AlertFilter(), metadata=md(OPERATOR)).alerts}
        assert states[first.alert_id].state == "resolved" and states[first.alert_id].note == "pump seized"
        assert states[second.alert_id].outcome == "false_alarm"
    finally:
        restarted.stop()

    labels_path = tmp_path / "labels.csv"
    config = load_config(None, [])
    assert export_outcomes(tmp_path / "run", config, labels_path) == 2  # default URI: <run>/checkpoints
    labels = {row["alert_id"]: row for row in read_outcome_labels(labels_path)}
    assert labels[first.alert_id]["label"] == 1 and labels[first.alert_id]["mode"] == "coolant_pump"
    assert labels[second.alert_id]["label"] == 0 and labels[second.alert_id]["vehicle_id"] == "LC2"


def test_cli_acknowledges_and_lists_through_the_server(tmp_path: Path, capsys: Any) -> None:
    checkpoints = tmp_path / "checkpoints"
    server = start(checkpoints)
    try:
        alert = raise_fault_alert(server.target, "CLI1")
        common = ["--target", server.target, "--token", OPERATOR, "--set", f"twins.checkpoint_uri={checkpoints}"]
        args = build_parser().parse_args(["alerts", "ack", alert.alert_id, "--note", "on it", *common])
        assert cmd_alerts(args) == 0
        args = build_parser().parse_args(["alerts", "resolve", alert.alert_id, "--outcome", "sensor_problem", *common])
        assert cmd_alerts(args) == 0
        args = build_parser().parse_args(["alerts", "--vehicle", "CLI1", *common])
        assert cmd_alerts(args) == 0
        printed = capsys.readouterr().out
        assert f"{alert.alert_id} acknowledged" in printed and f"{alert.alert_id} resolved sensor_problem" in printed
        args = build_parser().parse_args(["alerts", "resolve", *common])  # no id
        assert cmd_alerts(args) == 2
    finally:
        server.stop()


def test_list_alerts_filters_by_lifecycle_state_before_the_limit(tmp_path: Path, capsys: Any) -> None:
    checkpoints = tmp_path / "checkpoints"
    server = start(checkpoints)
    try:
        alerts = [raise_fault_alert(server.target, vehicle) for vehicle in ("ST1", "ST2", "ST3")]
        with grpc.insecure_channel(server.target) as channel:
            stub = alerts_pb2_grpc.AlertServiceStub(channel)
            stub.Acknowledge(alerts_pb2.AlertAction(alert_id=alerts[0].alert_id), metadata=md(OPERATOR))
            stub.Resolve(alerts_pb2.AlertAction(alert_id=alerts[2].alert_id, outcome="false_alarm"), metadata=md(OPERATOR))

            def listed(*states: str, limit: int = 0) -> list[tuple[str, str]]:
                reply = stub.ListAlerts(alerts_pb2.AlertFilter(states=states, limit=limit), metadata=md(OPERATOR))
                return [(a.vehicle_id, a.lifecycle.state) for a in reply.alerts]

            assert listed("open") == [("ST2", "open")]
            assert listed("acknowledged", "resolved") == [("ST1", "acknowledged"), ("ST3", "resolved")]
            assert listed("assigned") == []
            assert len(listed()) == 3  # no states: every alert
            # the newest alert (ST3) is resolved: a limit of 1 with states=open still finds the open one
            assert listed("open", limit=1) == [("ST2", "open")]
            with pytest.raises(grpc.RpcError) as bad:
                listed("closed")
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "states='closed'" in bad.value.details()

        common = ["--target", server.target, "--token", OPERATOR, "--set", f"twins.checkpoint_uri={checkpoints}"]
        capsys.readouterr()
        assert cmd_alerts(build_parser().parse_args(["alerts", "--state", "open", *common])) == 0
        printed = capsys.readouterr().out
        assert alerts[1].alert_id in printed and alerts[0].alert_id not in printed and alerts[2].alert_id not in printed
        with pytest.raises(SystemExit):  # argparse refuses an unknown state
            build_parser().parse_args(["alerts", "--state", "closed", *common])
    finally:
        server.stop()


def test_status_shows_twins_alerts_by_state_streams_models_and_drift(tmp_path: Path, capsys: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    run = tmp_path / "run"
    (run / "models" / "failure").mkdir(parents=True)
    (run / "models" / "failure" / "meta.json").write_text(json.dumps(
        {"data_hash": "d" * 16, "features_hash": FEATURES_HASH, "sha256": {"h7.txt": "ab" * 32}}))
    (run / "models" / "anomaly").mkdir()
    (run / "models" / "anomaly" / "meta.json").write_text(json.dumps({"data_hash": "e", "features_hash": "old"}))
    (run / "drift").mkdir()
    (run / "drift" / "drift.json").write_text(json.dumps(
        {"level": 0.4, "alert_level": 0.25, "features": [{"feature": "soc_mean", "psi": 0.4}], "computed_ms": 1}))
    checkpoints = run / "checkpoints"
    config = load_config(None, [f"twins.checkpoint_uri={checkpoints}"])
    server = ServerThread(open_runtime(config, "local").backend, cfg=CFG.model_copy(update={"metrics_port": metrics_port}),
                          alert_states=AlertStateLog(str(checkpoints)))
    try:
        alert = raise_fault_alert(server.target, "ST1")
        raise_fault_alert(server.target, "ST2")
        with grpc.insecure_channel(server.target) as channel:
            alerts_pb2_grpc.AlertServiceStub(channel).Acknowledge(alerts_pb2.AlertAction(alert_id=alert.alert_id),
                                                                  metadata=md(OPERATOR))
        args = build_parser().parse_args(["status", "--json", "--run", str(run), "--target", server.target,
                                          "--token", OPERATOR, "--metrics-url",
                                          f"http://127.0.0.1:{metrics_port}/metrics"])
        assert cmd_status(args) == 0
        status = json.loads(capsys.readouterr().out)
    finally:
        server.stop()
    assert status["twins"] == 2 and status["open_streams"] == 0.0
    assert status["alerts_by_state"] == {"acknowledged": 1, "open": 1} and status["alerts_by_rule"] == {"sensor_fault": 2}
    assert status["models"]["failure"]["digest"] == "ab" * 6 and status["models"]["failure"]["loadable"] is True
    assert status["models"]["anomaly"]["loadable"] is False  # trained with another feature set
    assert status["drift"]["level"] == 0.4 and status["drift"]["worst_feature"] == "soc_mean"
