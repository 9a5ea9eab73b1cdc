"""Vehicle ids: the whole id must match the contract's pattern (a trailing newline is not an id)."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.schema import VEHICLE_ID_PATTERN, is_vehicle_id
from protos.evtwin.v1 import telemetry_pb2
from serving.codec import BatchLimits, WireError, decode_batch, decode_columns
from twins.store import CheckpointStore

NOW = 1_767_600_000_000


def _batch(vehicle_id: str) -> telemetry_pb2.FrameBatch:
    return telemetry_pb2.FrameBatch(vehicle_ids=[vehicle_id], ts=[NOW - 1000], seq=[1])


@pytest.mark.parametrize("bad", ["V1\n", "V1\r\n", "\nV1", "V1\x00", "V 1", "", "-V1", "V" * 65])
def test_ids_that_are_not_entirely_the_pattern_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_batch(_batch(bad), BatchLimits(), NOW)
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message.startswith("vehicle_ids[0]=")
    with pytest.raises(WireError, match=r"vehicle_id\[0\]"):
        decode_columns({"vehicle_id": [bad], "ts": [NOW - 1000], "seq": [1]}, 0, BatchLimits(), NOW)
    frame_batch = telemetry_pb2.FrameBatch(frames=[telemetry_pb2.Frame(vehicle_id=bad, ts=NOW - 1000, seq=1)])
    with pytest.raises(WireError, match=r"frames\[0\]\.vehicle_id"):
        decode_batch(frame_batch, BatchLimits(), NOW)
    assert not is_vehicle_id(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=70))
def test_any_accepted_id_round_trips_and_holds_no_control_character(text: str) -> None:
    try:
        batch = decode_batch(_batch(text), BatchLimits(), NOW)
    except WireError as error:
        assert error.status == "INVALID_ARGUMENT" and "vehicle_ids[0]" in error.message
        assert not is_vehicle_id(text)
        return
    assert batch.vehicle_ids == (text,)
    assert batch.record_batch.column("vehicle_id").to_pylist() == [text]
    assert not any(unicodedata.category(c).startswith("C") or c.isspace() for c in text)
    assert VEHICLE_ID_PATTERN.fullmatch(text)


@given(st.from_regex(VEHICLE_ID_PATTERN, fullmatch=True))
@settings(max_examples=100, deadline=None)
def test_ids_generated_from_the_pattern_are_accepted(text: str) -> None:
    assert decode_batch(_batch(text), BatchLimits(), NOW).vehicle_ids == (text,)


def test_the_checkpoint_store_refuses_to_name_a_file_after_an_invalid_id(tmp_path) -> None:
    store = CheckpointStore(str(tmp_path))
    with pytest.raises(ValueError, match="vehicle id"):
        store.put("V1\n", b"state")
    assert list(tmp_path.iterdir()) == []
    store.put("V1", b"state")
    assert store.list() == ["V1"]
