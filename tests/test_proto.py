"""The wire contract: generated code matches the protos, and Frame/FrameBatch follow telemetry_schema.json."""
from __future__ import annotations

import json
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from configs.schema import SCHEMA, SCHEMA_PATH
from protos import generate
from protos.evtwin.v1 import alerts_pb2, telemetry_pb2, twin_pb2

WIRE_TYPES = {"float32": FieldDescriptor.TYPE_FLOAT, "float64": FieldDescriptor.TYPE_DOUBLE,
              "int8": FieldDescriptor.TYPE_SINT32}
FIRST_SENSOR_NUMBER = 10


def test_generated_modules_match_a_fresh_generation(tmp_path: Path) -> None:
    fresh = generate.generate(tmp_path)
    assert fresh, "protoc produced nothing"
    checked_in = generate.PROTO_DIR
    fresh_names = {p.name for p in fresh}
    on_disk = {p.name for p in checked_in.iterdir() if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))}
    assert fresh_names == on_disk, "a .proto was added or removed without running protos/generate.py"
    for path in fresh:
        assert path.read_text() == (checked_in / path.name).read_text(), f"{path.name} is stale or hand-edited"


def test_every_proto_declares_package_evtwin_v1() -> None:
    for proto in generate.proto_files():
        assert "\npackage evtwin.v1;\n" in proto.read_text(), proto


def _sensor_fields(descriptor) -> list[FieldDescriptor]:
    return [f for f in descriptor.fields if f.number >= FIRST_SENSOR_NUMBER]


def test_frame_fields_follow_the_telemetry_schema() -> None:
    document = json.loads(SCHEMA_PATH.read_text())
    frame = telemetry_pb2.Frame.DESCRIPTOR
    assert [f.name for f in frame.fields if f.number < FIRST_SENSOR_NUMBER] == [k["name"] for k in document["key_fields"]]
    sensors = _sensor_fields(frame)
    assert [f.name for f in sensors] == [f["name"] for f in document["fields"]]
    for proto_field, spec in zip(sensors, document["fields"], strict=False):
        assert proto_field.type == WIRE_TYPES[spec["dtype"]], proto_field.name
        assert proto_field.has_presence, f"{proto_field.name}: a missing reading must be distinguishable from 0"
        assert proto_field.number == FIRST_SENSOR_NUMBER + document["fields"].index(spec)


def test_frame_batch_has_one_packed_column_per_sensor() -> None:
    batch = telemetry_pb2.FrameBatch.DESCRIPTOR
    sensors = _sensor_fields(batch)
    assert [f.name for f in sensors] == list(SCHEMA.sensor_names)
    for proto_field in sensors:
        spec = SCHEMA.field(proto_field.name)
        assert proto_field.is_repeated
        assert proto_field.is_packed, f"{proto_field.name} must be packed for throughput"
        assert proto_field.type == WIRE_TYPES[spec.dtype]
        assert proto_field.number == telemetry_pb2.Frame.DESCRIPTOR.fields_by_name[proto_field.name].number
    for key in ("ts", "seq", "vehicle_index"):
        assert batch.fields_by_name[key].is_packed


def test_alert_message_carries_every_field_of_the_twins_alert() -> None:
    from dataclasses import fields

    from twins.types import Alert

    assert {f.name for f in fields(Alert)} <= set(alerts_pb2.Alert.DESCRIPTOR.fields_by_name)


def test_services_are_declared() -> None:
    assert set(telemetry_pb2.DESCRIPTOR.services_by_name) == {"TelemetryService"}
    assert set(twin_pb2.DESCRIPTOR.services_by_name) == {"TwinService"}
    assert set(alerts_pb2.DESCRIPTOR.services_by_name) == {"AlertService"}
    stream = telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].methods_by_name["Stream"]
    assert stream.client_streaming and stream.server_streaming
