"""The twin's parts on their own: each saves and restores its own state; the checkpoint format is versioned."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from configs.settings import load_config
from training.alerting import AlertPolicy
from twins.faults import FaultSettings, SensorFaultTracker
from twins.reorder import NO_SEQ, ReorderBuffer
from twins.schedule import PredictionSchedule
from twins.synthetic import synthetic_frames, take
from twins.twin import _MAGIC, FORMAT_VERSION, VehicleTwin
from twins.types import Alert, Rule

WINDOW_MS = 600_000


def _frames(seqs: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seq = np.array(seqs, dtype=np.int64)
    return seq, seq * 10_000, np.arange(seq.size * 2, dtype=np.float32).reshape(-1, 2)


def test_reorder_buffer_restored_mid_gap_releases_what_the_original_releases() -> None:
    original = ReorderBuffer(limit=3, first_seq=1)
    original.receive(*_frames([1, 2, 3]))
    released, _, _ = original.receive(*_frames([6, 5]))  # 4 missing: both wait
    assert released is None and original.size == 2
    restored = ReorderBuffer.from_state(*original.to_state(), limit=3, first_seq=1)
    for buffer in (original, restored):
        released, duplicates, late = buffer.receive(*_frames([7, 8, 5]))  # overflow: the gap at 4 is given up
        assert released[0].tolist() == [5, 6, 7, 8] and duplicates == 1 and late == []
        assert buffer.receive(*_frames([4]))[2] == [4]  # its late frame is refused
    assert original.to_state()[0] == restored.to_state()[0]


def test_reorder_buffer_refuses_a_negative_limit_by_name() -> None:
    with pytest.raises(ValueError, match="limit"):
        ReorderBuffer(limit=-1, first_seq=1)


def test_fault_tracker_restored_keeps_its_open_episode() -> None:
    settings = FaultSettings(fit_readings=1, clear_ms=100)
    lower, upper = np.array([0.0, 0.0]), np.array([10.0, 10.0])
    tracker = SensorFaultTracker(lower, upper, settings)
    assert len(tracker.observe(np.array([1]), np.array([0]), np.array([[20.0, 1.0]]))) == 1
    meta, arrays = tracker.to_state()
    restored = SensorFaultTracker.from_state(json.loads(json.dumps(meta)), arrays, lower, upper, settings)
    for t in (tracker, restored):
        assert t.observe(np.array([2]), np.array([500]), np.array([[20.0, 1.0]])) == []  # the same episode
        assert t.observe(np.array([3]), np.array([700]), np.array([[5.0, 1.0]])) == []  # recovered: it ends
        assert [(e.seq, e.kind) for e in t.observe(np.array([4]), np.array([800]), np.array([[-1.0, 1.0]]))] \
            == [(4, "out_of_range")]
        assert t.counts.tolist() == [3, 0] and t.episodes[0].sum() == 2


def test_prediction_schedule_restored_answers_like_the_original() -> None:
    policy = AlertPolicy(threshold=0.5, consecutive=1, clear_ratio=0.8, cooldown_ms=0)
    schedule = PredictionSchedule(interval_ms=1_000)
    schedule.after_window(5_000, seq=50, anomaly_fired=False)
    restored = PredictionSchedule.from_state(json.loads(json.dumps(schedule.to_state())), interval_ms=1_000)
    for s in (schedule, restored):
        decision = s.answer(5_000, {7: 0.9, 30: 0.95}, policy)
        assert decision is not None and decision.fired and decision.seq == 50 and decision.headline == 0.9
        assert s.pending is None and s.answer(5_000, {7: 0.9}, policy) is None  # superseded
        assert s.next_due_ms == 6_000 and s.risk_window_end == 5_000


def _with_format(data: bytes, version: int) -> bytes:
    with np.load(io.BytesIO(data[len(_MAGIC):]), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["format"] = version
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    buf.write(_MAGIC)
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_a_checkpoint_of_another_format_is_refused_naming_both_versions() -> None:
    twin = VehicleTwin("veh-1", load_config().twins, WINDOW_MS, WINDOW_MS)
    twin.ingest(synthetic_frames("veh-1", 150))
    data = twin.to_bytes()
    assert VehicleTwin.from_bytes(_with_format(data, FORMAT_VERSION)).to_bytes() == data
    with pytest.raises(ValueError, match=f"format 1 is not supported.*format {FORMAT_VERSION}"):
        VehicleTwin.from_bytes(_with_format(data, 1))


def test_a_restored_twin_keeps_every_parts_state() -> None:
    cfg = load_config(overrides=["twins.reorder_buffer_frames=16"]).twins
    frames = synthetic_frames("veh-1", 200)
    frames["soc"][30] = -5.0
    twin = VehicleTwin("veh-1", cfg, WINDOW_MS, WINDOW_MS)
    twin.ingest(take(frames, np.r_[0:120, 125:130]))  # 120..124 missing: five frames wait
    restored = VehicleTwin.from_bytes(twin.to_bytes())
    assert restored.applied_seq == twin.applied_seq == 120 and restored.buf_seq.tolist() == list(range(126, 131))
    assert restored.faults.counts.tolist() == twin.faults.counts.tolist()
    assert restored.schedule.pending == twin.schedule.pending and restored.schedule.pending is not None
    assert restored.summary() == twin.summary()
    assert twin.applied_seq != NO_SEQ


def test_alerts_name_their_rule_as_a_string_enum() -> None:
    alert = Alert("id", "v", Rule.ANOMALY, ts_ms=1, seq=1, score=1.0, signals=(), message="")
    document = json.loads(json.dumps(alert.to_dict()))
    assert document["rule"] == "anomaly" and Alert.from_dict(document).rule is Rule.ANOMALY
    with pytest.raises(ValueError, match="'bogus' is not a valid Rule"):
        Alert.from_dict(dict(document, rule="bogus"))
