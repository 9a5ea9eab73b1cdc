"""Counters as real vehicles send them: any start, restarts (ECU reboots), forward jumps, re-sends.

The rule (``twins.reorder``): a backwards seq with a later ts opens a new counter epoch; a re-sent frame
has the same seq AND ts and stays a duplicate, in whichever epoch it was first seen.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.settings import load_config
from serving.codec import summary_to_proto
from twins.reorder import ReorderBuffer
from twins.synthetic import synthetic_frames, take
from twins.twin import VehicleTwin


def _receive(buffer: ReorderBuffer, frames: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], int, list[int]]:
    seq = np.array([s for s, _ in frames], dtype=np.int64)
    ts = np.array([t for _, t in frames], dtype=np.int64)
    values = ts.astype(np.float32).reshape(-1, 1)  # the value carries the frame's identity (its ts)
    released, duplicates, late = buffer.receive(seq, ts, values)
    if released is None:
        return [], duplicates, late
    assert (released[2][:, 0] == released[1].astype(np.float32)).all(), "values travel with their frame"
    return list(zip(released[0].tolist(), released[1].tolist(), strict=True)), duplicates, late


def test_a_counter_may_start_at_zero() -> None:
    buffer = ReorderBuffer(limit=8, first_seq=1)
    applied, duplicates, late = _receive(buffer, [(0, 1000), (1, 2000), (2, 3000)])
    assert applied == [(0, 1000), (1, 2000), (2, 3000)] and duplicates == 0 and late == []


def test_a_counter_starting_anywhere_is_applied_once_the_buffer_is_full() -> None:
    buffer = ReorderBuffer(limit=2, first_seq=1)
    assert _receive(buffer, [(5000, 1000), (5001, 2000)])[0] == []
    assert [s for s, _ in _receive(buffer, [(5002, 3000)])[0]] == [5000, 5001, 5002]


def test_a_restart_opens_a_new_epoch_and_re_sends_of_both_epochs_stay_duplicates() -> None:
    buffer = ReorderBuffer(limit=8, first_seq=1)
    _receive(buffer, [(s, 1000 * s) for s in range(1, 11)])
    applied, duplicates, late = _receive(buffer, [(1, 20_000), (2, 21_000)])  # ECU reboot
    assert applied == [(1, 20_000), (2, 21_000)] and buffer.epoch == 1 and late == []
    # re-sent: frames of the old epoch (seq above the new watermark, too) and of the new one
    applied, duplicates, late = _receive(buffer, [(9, 9000), (10, 10_000), (2, 21_000), (3, 22_000)])
    assert applied == [(3, 22_000)] and duplicates == 3 and late == []
    assert buffer.epoch_of(10_000) == 0 and buffer.epoch_of(21_000) == 1


def test_a_restart_within_one_batch() -> None:
    buffer = ReorderBuffer(limit=8, first_seq=1)
    applied, _, _ = _receive(buffer, [(7, 1000), (8, 2000), (1, 3000), (2, 4000)])
    assert [s for s, _ in applied] == [7, 8, 1, 2] or buffer.size  # 7 is a first contact above first_seq
    applied, _, _ = _receive(buffer, [(s, 4000 + 1000 * s) for s in range(3, 12)])
    everything = {(7, 1000), (8, 2000), (1, 3000), (2, 4000)} | {(s, 4000 + 1000 * s) for s in range(3, 12)}
    seen = set(applied) | set(zip(buffer.seq.tolist(), buffer.ts.tolist(), strict=True))
    assert seen <= everything


def test_a_late_frame_of_a_skipped_gap_in_an_earlier_epoch_is_refused_late() -> None:
    buffer = ReorderBuffer(limit=1, first_seq=1)
    _receive(buffer, [(1, 1000), (3, 3000), (4, 4000)])  # seq 2 given up on
    _receive(buffer, [(1, 10_000)])  # restart
    _, duplicates, late = _receive(buffer, [(2, 2000), (3, 3000)])
    assert late == [2] and duplicates == 1


def test_state_round_trip_keeps_the_epochs() -> None:
    buffer = ReorderBuffer(limit=4, first_seq=1)
    _receive(buffer, [(1, 1000), (2, 2000)])
    _receive(buffer, [(1, 5000)])
    restored = ReorderBuffer.from_state(*buffer.to_state(), limit=4, first_seq=1)
    assert restored.epoch == 1 and restored.epoch_start_ts == 2000
    assert _receive(restored, [(2, 2000), (1, 5000)])[1] == 2


@st.composite
def _streams(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[list[tuple[int, int]]], int]:
    """Distinct frames (seq, ts) over epochs with random starts and jumps, delivered in batches with local
    shuffles and re-sends of anything sent before (within the epoch or from an earlier one)."""
    limit = draw(st.integers(2, 8))
    frames: list[tuple[int, int]] = []
    epochs: list[list[tuple[int, int]]] = []
    ts = draw(st.integers(1_000, 10_000))
    for _ in range(draw(st.integers(1, 4))):
        seq = draw(st.integers(0, 3)) if epochs else draw(st.sampled_from([0, 1]))
        epoch = []
        for _ in range(draw(st.integers(1, 25))):
            epoch.append((seq, ts))
            seq += 1 if draw(st.integers(0, 9)) else draw(st.integers(2, 40))  # mostly contiguous, some jumps
            ts += draw(st.integers(1, 3_000))
        epochs.append(epoch)
        frames += epoch
        ts += draw(st.integers(1, 60_000))  # the reboot
    batches: list[list[tuple[int, int]]] = []
    sent: list[tuple[int, int]] = []
    position = 0
    while position < len(frames):
        size = draw(st.integers(1, 6))
        batch = frames[position:position + size]
        position += size
        shuffled = draw(st.permutations(batch)) if len(batch) <= limit else batch
        resent = draw(st.lists(st.sampled_from(sent), max_size=3)) if sent else []
        batches.append(list(shuffled) + resent)
        sent += batch
    return frames, batches, limit


@settings(max_examples=120, deadline=None)
@given(_streams())
def test_every_distinct_frame_is_applied_once_and_none_is_refused_after_a_restart(stream) -> None:
    frames, batches, limit = stream
    buffer = ReorderBuffer(limit=limit, first_seq=1)
    applied: list[tuple[int, int]] = []
    refused: list[int] = []
    for batch in batches:
        released, _, late = _receive(buffer, batch)
        applied += released
        refused += late
    assert len(applied) == len(set(applied)), "a frame was applied twice"
    assert set(applied) <= set(frames)
    waiting = set(zip(buffer.seq.tolist(), buffer.ts.tolist(), strict=True))
    assert set(applied) | waiting == set(frames), "a frame was lost"
    assert refused == [], "a frame was refused as late"
    assert [t for _, t in applied] == sorted(t for _, t in applied), "frames applied out of time order"


def test_a_twin_follows_a_restarted_counter_and_reports_its_epoch() -> None:
    cfg = load_config(overrides=["twins.reorder_buffer_frames=8"]).twins
    frames = synthetic_frames("veh-1", 300)
    twin = VehicleTwin("veh-1", cfg, 600_000, 600_000)
    twin.ingest(take(frames, slice(0, 150)))
    rebooted = take(frames, slice(150, 300))
    rebooted["seq"] = rebooted["seq"] - 150  # the ECU restarted its counter at 1 (ts goes on)
    step = twin.ingest(rebooted)
    assert step.rejected == [] and step.applied == 150 and twin.frames_applied == 300
    again = twin.ingest(take(frames, slice(140, 150)))  # re-sent from before the restart
    assert again.duplicates == 10 and again.applied == 0 and again.rejected == []
    summary = twin.summary()
    assert summary["seq_epoch"] == 1 and summary["applied_seq"] == 150
    message = summary_to_proto(summary)
    assert message.seq_epoch == 1 and "pack_voltage" in message.fitted_sensors
    restored = VehicleTwin.from_bytes(twin.to_bytes())
    assert restored.ingest(take(rebooted, slice(0, 5))).duplicates == 5
