"""Fuzzing the ingest path with hostile messages (hypothesis).

Decoder (pure, ``serving.codec``): well over 1,000 generated messages (random bytes, truncated and mutated
valid FrameBatch protos, extreme and non-finite numbers, huge or negative seq and ts, bad vehicle ids, wrong
types in column input). Every one is either decoded into a batch that keeps the contract or refused with a
precise status (INVALID_ARGUMENT / RESOURCE_EXHAUSTED) whose message names a field; nothing else escapes.

Servicer (integration): a smaller number of the same messages against a real in-process gRPC server on
127.0.0.1; every answer is a precise status (never INTERNAL, never a traceback), and a well-behaved client
is served correctly afterwards.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.schema import SCHEMA, is_vehicle_id
from protos.evtwin.v1 import telemetry_pb2
from serving.codec import (
    MIN_TS_MS,
    BatchLimits,
    DecodedBatch,
    Unparseable,
    WireError,
    decode_batch,
    decode_columns,
    encode_columns,
    safe_parser,
)

NOW_MS = 1_767_600_000_000
LIMITS = BatchLimits(max_batch_frames=500, max_future_skew_ms=60_000)
REFUSALS = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
FIELD_NAMES = ({"vehicle_ids", "vehicle_index", "vehicle_id", "ts", "seq", "frames", "batch", "request"}
               | set(SCHEMA.sensor_names))
PARSE = safe_parser(telemetry_pb2.FrameBatch)

INT64 = st.integers(-2**63, 2**63 - 1)
HOSTILE_INTS = st.one_of(INT64, st.sampled_from([0, -1, 1, 2**31, -2**31, 2**53 + 1, 2**63 - 1, -2**63,
                                                 MIN_TS_MS - 1, NOW_MS, NOW_MS + 10**12]))
HOSTILE_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                           st.sampled_from([math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, -0.0]))
VEHICLE_IDS = st.one_of(st.text(max_size=80), st.sampled_from(["V1", "V1\n", "\x00", "", "-x", "V" * 65, "V 1",
                                                               "../../etc/passwd", "V1\r\n", "ü"]))


def valid_batch(n: int = 6, vehicles: tuple[str, ...] = ("F1", "F2")) -> telemetry_pb2.FrameBatch:
    vehicle = np.array([vehicles[i % len(vehicles)] for i in range(n)])
    seq = np.zeros(n, dtype=np.int64)
    for v in vehicles:
        seq[vehicle == v] = np.arange(1, (vehicle == v).sum() + 1)
    columns: dict[str, Any] = {"vehicle_id": vehicle, "ts": NOW_MS - 10_000 * n + 10_000 * np.arange(n), "seq": seq}
    for spec in SCHEMA.fields:
        columns[spec.name] = np.full(n, (spec.min + spec.max) / 2 if spec.dtype != "int8" else 1)
    return encode_columns(columns, batch_id=9)


VALID_BYTES = valid_batch().SerializeToString()


def judge(outcome: Any) -> None:
    """The decoder's answer keeps the contract: a checked batch, or a precise refusal naming a field."""
    if isinstance(outcome, WireError):
        assert outcome.status in REFUSALS, outcome.status
        assert outcome.message and "Traceback" not in outcome.message
        head = outcome.message.split("=")[0].split(":")[0].split("[")[0].split(".")[0]
        assert head in FIELD_NAMES, outcome.message
        return
    assert isinstance(outcome, DecodedBatch)
    n = outcome.num_rows
    assert len(outcome.seq) == n and len(outcome.vehicle_index) == n
    assert all(is_vehicle_id(v) for v in outcome.vehicle_ids)
    if n:
        assert int(outcome.seq.min()) >= 0  # a counter may start at 0
        ts = outcome.record_batch.column("ts").cast("int64").to_numpy()
        assert ts.min() >= MIN_TS_MS and ts.max() <= NOW_MS + LIMITS.max_future_skew_ms
        assert 0 <= int(outcome.vehicle_index.min()) and int(outcome.vehicle_index.max()) < len(outcome.vehicle_ids)
    assert outcome.record_batch.schema == SCHEMA.arrow_schema


def decode_bytes(data: bytes) -> Any:
    message = PARSE(data)
    if isinstance(message, Unparseable):
        assert message.describe().startswith("request: not a valid FrameBatch protobuf")
        return None
    try:
        return decode_batch(message, LIMITS, NOW_MS)
    except WireError as error:
        return error


# ----------------------------------------------------------------------------------------- decoder (pure)
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    outcome = decode_bytes(data)
    if outcome is not None:
        judge(outcome)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID_BYTES)), st.lists(st.tuples(st.integers(0, len(VALID_BYTES) - 1),
                                                            st.integers(0, 255)), max_size=8))
def test_truncated_and_mutated_valid_batches(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_BYTES[:cut] if flips == [] else VALID_BYTES)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    outcome = decode_bytes(bytes(data))
    if outcome is not None:
        judge(outcome)


@st.composite
def hostile_batches(draw: st.DrawFn) -> telemetry_pb2.FrameBatch:
    n = draw(st.integers(0, 12))
    ids = draw(st.lists(VEHICLE_IDS, min_size=0, max_size=3))
    msg = telemetry_pb2.FrameBatch(batch_id=draw(st.integers(0, 2**64 - 1)), vehicle_ids=ids)
    if draw(st.booleans()):
        msg.vehicle_index.extend(draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n + 1)))
    msg.ts.extend(draw(st.lists(HOSTILE_INTS, min_size=n, max_size=n)))
    msg.seq.extend(draw(st.lists(HOSTILE_INTS, min_size=draw(st.sampled_from([n, n, n, max(0, n - 1)])),
                                 max_size=n)))
    for name in draw(st.lists(st.sampled_from(SCHEMA.sensor_names), max_size=4, unique=True)):
        spec = SCHEMA.field(name)
        values = st.integers(-2**31, 2**31 - 1) if spec.dtype == "int8" else HOSTILE_FLOATS
        getattr(msg, name).extend(draw(st.lists(values, min_size=n, max_size=n + draw(st.integers(0, 1)))))
    for _ in range(draw(st.integers(0, 3))):
        frame = telemetry_pb2.Frame(vehicle_id=draw(VEHICLE_IDS), ts=draw(HOSTILE_INTS), seq=draw(HOSTILE_INTS))
        if draw(st.booleans()):
            frame.soc = draw(HOSTILE_FLOATS)
        if draw(st.booleans()):
            frame.charger_state = draw(st.integers(-2**31, 2**31 - 1))
        msg.frames.append(frame)
    return msg


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_batches())
def test_structurally_hostile_batches(msg: telemetry_pb2.FrameBatch) -> None:
    try:
        outcome: Any = decode_batch(msg, LIMITS, NOW_MS)
    except WireError as error:
        outcome = error
    judge(outcome)
    # The same message through the wire (serialise, parse) gives the same verdict.
    again = decode_bytes(msg.SerializeToString())
    assert type(again) is type(outcome)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_wrongly_typed_columns(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 5))
    anything = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.binary(max_size=5),
                         st.lists(st.integers(), max_size=2))
    columns = {"vehicle_id": data.draw(st.lists(st.one_of(VEHICLE_IDS, anything), min_size=n, max_size=n)),
               "ts": data.draw(st.lists(st.one_of(HOSTILE_INTS, anything), min_size=n, max_size=n)),
               "seq": data.draw(st.lists(st.one_of(HOSTILE_INTS, anything), min_size=n, max_size=n)),
               "soc": data.draw(st.lists(st.one_of(HOSTILE_FLOATS, anything), min_size=n, max_size=n))}
    if data.draw(st.booleans()):
        columns[data.draw(st.sampled_from(["nonsense", "pack_voltage", "charger_state"]))] = \
            data.draw(st.lists(anything, max_size=n + 1))
    try:
        outcome: Any = decode_columns(columns, 1, LIMITS, NOW_MS)
    except WireError as error:
        outcome = error
    if isinstance(outcome, WireError):
        assert outcome.status in REFUSALS and outcome.message
    else:
        judge(outcome)


# ----------------------------------------------------------------------------------------- servicer (gRPC)
SECRET = b"z" * 32


class ServerThread:
    def __init__(self) -> None:
        from configs.settings import ServingConfig
        from serving.backend import MemoryFleet
        from serving.server import start_front_door

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        cfg = ServingConfig(max_message_bytes=64 * 1024, max_batch_frames=LIMITS.max_batch_frames, drain_timeout_s=1.0)
        self.door = asyncio.run_coroutine_threadsafe(
            start_front_door(MemoryFleet(), cfg, secret=SECRET, host="127.0.0.1", port=0), self.loop).result(60)
        self.target = f"127.0.0.1:{self.door.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.door.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerThread]:
    running = ServerThread()
    yield running
    running.stop()


def _token() -> str:
    from serving.auth import Claims, issue_token

    return issue_token(SECRET, Claims(role="operator", sub="fuzz", write=True), ttl_s=3600)


def _stream_raw(target: str, payloads: list[bytes], token: str) -> tuple[str, str]:
    """Send raw request bytes on one Stream call; (final status name, details)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream("/evtwin.v1.TelemetryService/Stream", request_serializer=lambda b: b,
                                     response_deserializer=telemetry_pb2.StreamReply.FromString)
        try:
            for _ in call(iter(payloads), metadata=(("authorization", f"Bearer {token}"),), timeout=20):
                pass
            return "OK", ""
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""


@pytest.mark.integration
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=256).map(lambda b: [b]),
                 hostile_batches().map(lambda m: [m.SerializeToString()]),
                 st.tuples(st.integers(1, len(VALID_BYTES) - 1), st.integers(0, 255)).map(
                     lambda t: [VALID_BYTES[:t[0]] + bytes([t[1]])])))
def test_the_servicer_answers_hostile_messages_with_precise_statuses(fuzz_server: ServerThread,
                                                                    payloads: list[bytes]) -> None:
    status, details = _stream_raw(fuzz_server.target, payloads, _token())
    assert status in {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}, (status, details)
    assert "Traceback" not in details and "internal error" not in details.lower()


@pytest.mark.integration
def test_a_well_behaved_client_is_served_after_the_fuzzing(fuzz_server: ServerThread) -> None:
    import grpc

    from protos.evtwin.v1 import telemetry_pb2_grpc

    good = valid_batch(20, ("GOOD1", "GOOD2"))
    good.ts[:] = [int(time.time() * 1000) - 100_000 + 1000 * i for i in range(20)]
    with grpc.insecure_channel(fuzz_server.target) as channel:
        replies = list(telemetry_pb2_grpc.TelemetryServiceStub(channel).Stream(
            iter([good]), metadata=(("authorization", f"Bearer {_token()}"),), timeout=30))
    acks = {a.vehicle_id: a.seq for r in replies if r.HasField("ack") for a in r.ack.acks}
    assert acks == {"GOOD1": 10, "GOOD2": 10}


@pytest.mark.integration
@pytest.mark.parametrize("bad", ["GOOD1\n", "GOOD1\x00", "GOOD1 "])
def test_a_vehicle_id_with_a_trailing_control_character_is_refused_by_every_rpc(fuzz_server: ServerThread,
                                                                               bad: str) -> None:
    import grpc

    from protos.evtwin.v1 import alerts_pb2, alerts_pb2_grpc, telemetry_pb2_grpc, twin_pb2, twin_pb2_grpc

    metadata = (("authorization", f"Bearer {_token()}"),)
    batch = telemetry_pb2.FrameBatch(batch_id=1, vehicle_ids=[bad], ts=[int(time.time() * 1000) - 1000], seq=[1])
    with grpc.insecure_channel(fuzz_server.target) as channel:
        calls = {
            "vehicle_ids[0]": lambda: list(telemetry_pb2_grpc.TelemetryServiceStub(channel).Stream(
                iter([batch]), metadata=metadata, timeout=20)),
            "vehicle_id": lambda: twin_pb2_grpc.TwinServiceStub(channel).GetTwin(
                twin_pb2.GetTwinRequest(vehicle_id=bad), metadata=metadata, timeout=20),
            "vehicle_id=": lambda: alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
                alerts_pb2.AlertFilter(vehicle_id=bad), metadata=metadata, timeout=20),
        }
        for field, call in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, refused.value.details())
            assert refused.value.details().startswith(field.rstrip("=")), refused.value.details()


@pytest.mark.parametrize("column", ["ts", "seq", "soc", "charger_state"])
def test_a_column_of_lists_is_refused_naming_it(column: str) -> None:
    """Found by test_wrongly_typed_columns: a 2-D column crashed numpy/Arrow deep inside the decoder."""
    columns: dict[str, Any] = {"vehicle_id": ["V1", "V1"], "ts": [NOW_MS - 2, NOW_MS - 1], "seq": [1, 2],
                               "soc": [50.0, 51.0]}
    columns[column] = [[1, 2], [3, 4]]
    with pytest.raises(WireError, match=f"^{column}: a column of 2 dimensions"):
        decode_columns(columns, 1, LIMITS, NOW_MS)
