"""ExplainService through the real gRPC server (MemoryFleet backend, a LanceDB index in a temporary folder)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from configs.schema import SCHEMA
from configs.settings import ServingConfig
from protos.evtwin.v1 import explain_pb2, explain_pb2_grpc, telemetry_pb2_grpc
from serving.auth import Claims, issue_token
from serving.backend import MemoryFleet
from serving.cli import main as evtwin_main
from serving.codec import encode_columns
from serving.explain_service import INDEX_ENV, sent_fields_of
from serving.explanations import AlertEvidence, ExplanationIndex
from serving.server import start_front_door
from twins.types import Alert, AlertFilter, Rule, alert_id

pytestmark = pytest.mark.integration

SECRET = b"e" * 32
NOW_MS = int(time.time() * 1000)
OPERATOR = issue_token(SECRET, Claims(role="operator", sub="ops"))
CFG = ServingConfig(drain_timeout_s=1.0)


def _anomaly(vehicle: str, seq: int, signals: tuple[tuple[str, float], ...]) -> Alert:
    return Alert(alert_id=alert_id(vehicle, Rule.ANOMALY, seq), vehicle_id=vehicle, rule=Rule.ANOMALY,
                 ts_ms=NOW_MS, seq=seq, score=2.0, signals=signals, message="anomaly score above the alert level")


COOLANT = _anomaly("EXP2", 7, (("coolant_flow_mean", 0.5), ("coolant_temp_out_max", 0.3), ("soc_mean", 0.05)))
UNSENT = _anomaly("EXP1", 9, (("coolant_flow_mean", 0.6), ("tyre_pressure_rl_min", 0.4)))
UNCOVERED = _anomaly("EXP2", 11, (("soc_mean", 0.7), ("speed_max", 0.3)))


class FleetWithAnomalies(MemoryFleet):
    """The ingest-only fleet plus anomaly alerts as the model-backed twins would raise them."""

    def __init__(self, extra: list[Alert]) -> None:
        super().__init__()
        self.extra = extra

    async def alerts(self, alert_filter: AlertFilter) -> list[Alert]:
        return [a for a in self.extra if alert_filter.matches(a)] + await super().alerts(alert_filter)


def _frames(vehicle: str, n: int, missing: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    seq = np.arange(1, n + 1)
    columns = {"vehicle_id": np.array([vehicle] * n), "seq": seq, "ts": NOW_MS - 3_600_000 + seq * 10_000}
    for spec in SCHEMA.fields:
        value = (spec.min + spec.max) / 2 if spec.dtype != "int8" else 1.0
        columns[spec.name] = np.full(n, np.nan if spec.name in missing else value)
    return columns


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    index_dir = tmp_path_factory.mktemp("explain-index")
    history = ExplanationIndex(index_dir)
    history.remember(AlertEvidence("past-1", "OLD1", 0, "anomaly", {"coolant_flow_mean": 0.6, "coolant_temp_out": 0.4}),
                     "coolant_pump")
    previous = __import__("os").environ.get(INDEX_ENV)
    __import__("os").environ[INDEX_ENV] = str(index_dir)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    fleet = FleetWithAnomalies([COOLANT, UNSENT, UNCOVERED])
    door = call(start_front_door(fleet, CFG, secret=SECRET, host="127.0.0.1", port=0))
    target = f"127.0.0.1:{door.port}"
    with grpc.insecure_channel(target) as channel:
        stream = telemetry_pb2_grpc.TelemetryServiceStub(channel).Stream
        md = (("authorization", f"Bearer {issue_token(SECRET, Claims(role='operator', sub='w', write=True))}"),)
        # EXP1 does not send coolant_flow (NaN in every frame); EXP3 sends an impossible inverter temperature
        list(stream(iter([encode_columns(_frames("EXP1", 5, missing=("coolant_flow",)), batch_id=1)]), metadata=md))
        list(stream(iter([encode_columns(_frames("EXP2", 5), batch_id=1)]), metadata=md))
        impossible = _frames("EXP3", 5)
        impossible["inverter_temp"][2] = 10_000.0
        list(stream(iter([encode_columns(impossible, batch_id=1)]), metadata=md))
        yield {"target": target, "channel": channel, "fleet": fleet, "call": call}
    call(door.stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    if previous is None:
        __import__("os").environ.pop(INDEX_ENV, None)
    else:
        __import__("os").environ[INDEX_ENV] = previous


def explain(server: dict[str, Any], alert: str, token: str | None = OPERATOR, **kwargs: Any) -> explain_pb2.Explanation:
    stub = explain_pb2_grpc.ExplainServiceStub(server["channel"])
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return stub.Explain(explain_pb2.ExplainRequest(alert_id=alert, **kwargs), metadata=metadata, timeout=60)


def test_an_anomaly_is_explained_with_drivers_citations_history_and_a_check(server: dict[str, Any]) -> None:
    reply = explain(server, COOLANT.alert_id)
    assert reply.supported and reply.vehicle_id == "EXP2" and reply.rule == "anomaly"
    best = reply.causes[0]
    assert best.cause == "coolant_pump" and best.kind == "failure_mode" and best.support >= reply.min_support
    assert {"coolant_flow", "coolant_temp_out"} <= set(best.matched_fields)
    assert all(p.passage_id.startswith("mode/coolant_pump#") for p in best.passages)
    assert best.passages[-1].section == "recommended_check" and "pump" in best.recommended_check
    assert [s.alert_id for s in best.similar] == ["past-1"] and best.similar[0].outcome == "coolant_pump"
    assert [d.name for d in reply.drivers][:2] == ["coolant_flow_mean", "coolant_temp_out_max"]
    assert all(d.sent for d in reply.drivers)
    assert "mode/coolant_pump#" in reply.summary


def test_drivers_on_fields_the_vehicle_does_not_send_are_flagged_and_not_used(server: dict[str, Any]) -> None:
    reply = explain(server, UNSENT.alert_id)
    sent = {d.name: d.sent for d in reply.drivers}
    assert sent == {"coolant_flow_mean": False, "tyre_pressure_rl_min": True}
    assert reply.supported and reply.causes[0].cause == "tyre_slow_leak"


def test_evidence_the_corpus_does_not_cover_gets_no_supported_explanation(server: dict[str, Any]) -> None:
    reply = explain(server, UNCOVERED.alert_id)
    assert not reply.supported
    assert "No supported explanation" in reply.summary


def test_a_sensor_fault_alert_from_the_stream_reads_as_a_sensor_fault(server: dict[str, Any]) -> None:
    faults = server["call"](server["fleet"].alerts(AlertFilter(vehicle_id="EXP3", rule="sensor_fault")))
    assert faults, "streaming an impossible inverter_temp must raise a sensor_fault alert"
    reply = explain(server, faults[0].alert_id, max_causes=2)
    assert reply.supported and len(reply.causes) == 2
    assert all(c.kind == "sensor_fault" for c in reply.causes)
    assert reply.causes[0].cause in {"sensor_out_of_range", "sensor_dropout"}


@pytest.mark.parametrize(("alert", "token", "code", "text"), [
    ("0000000000000000", OPERATOR, grpc.StatusCode.NOT_FOUND, "no alert with alert_id='0000000000000000'"),
    ("", OPERATOR, grpc.StatusCode.INVALID_ARGUMENT, "alert_id=''"),
    ("x", issue_token(SECRET, Claims(role="vehicle", sub="EXP1")), grpc.StatusCode.PERMISSION_DENIED, "operator only"),
    ("x", None, grpc.StatusCode.UNAUTHENTICATED, ""),
])
def test_refusals(server: dict[str, Any], alert: str, token: str | None, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        explain(server, alert, token)
    assert refused.value.code() == code and text in refused.value.details()


def test_a_negative_limit_is_refused_naming_the_field(server: dict[str, Any]) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        explain(server, COOLANT.alert_id, max_similar=-1)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_similar=-1" in refused.value.details()


def test_health_reports_the_explain_service(server: dict[str, Any]) -> None:
    health = health_pb2_grpc.HealthStub(server["channel"])
    reply = health.Check(health_pb2.HealthCheckRequest(service="evtwin.v1.ExplainService"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_explain_service(server: dict[str, Any]) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server["channel"])
    replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert "evtwin.v1.ExplainService" in {s.name for s in replies[0].list_services_response.service}


def test_evtwin_explain_prints_the_causes(server: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code = evtwin_main(["explain", COOLANT.alert_id, "--target", server["target"], "--token", OPERATOR])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Coolant pump degradation [coolant_pump]" in printed and "sources: mode/coolant_pump#" in printed
    assert evtwin_main(["explain", "ffffffffffffffff", "--target", server["target"], "--token", OPERATOR]) == 1


def test_sent_fields_come_from_the_last_frame_and_default_to_all() -> None:
    assert sent_fields_of(None) is None and sent_fields_of({"last_frame": {}}) is None
    assert sent_fields_of({"last_frame": {"coolant_flow": float("nan"), "soc": 50.0, "vehicle_id": "x"}}) == {"soc"}


def test_the_index_folder_is_the_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.explain_service import default_index_dir

    monkeypatch.setenv(INDEX_ENV, str(tmp_path))
    assert default_index_dir() == tmp_path
