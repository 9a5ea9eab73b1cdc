"""Acks that survive a counter restart: the client judges durability by (ts, seq), not seq alone.

An ECU reboot makes a vehicle's seq fall back while ts moves on (``twins.reorder``, counter epochs). Judged by
seq alone, the new epoch's frames sit under the old watermark: the client would count them durable at once and
never re-send them after a reconnect. The acks carry the ts of the newest durable frame (``VehicleAck.ts``).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from configs.frames import FrameBatch
from serving.backend import LocalTwinsBackend, MemoryFleet, _shares_of
from serving.client import Client, _StreamSession, durable_rows
from serving.codec import BatchLimits, decode_batch, encode_columns
from tests.test_grpc_server import NOW_MS, OPERATOR, ServerThread, fleet_columns
from tests.test_hosting import settings
from twins.host import TwinHost
from twins.synthetic import synthetic_frames
from twins.types import IngestResult


def rows(vehicle: str, seq: list[int], ts: list[int]) -> dict[str, np.ndarray]:
    return {"vehicle_id": np.array([vehicle] * len(seq)), "seq": np.array(seq), "ts": np.array(ts)}


# ----- the client's rule (unit) ----------------------------------------------------------------------------

def test_after_a_restart_frames_under_the_old_seq_watermark_are_not_durable() -> None:
    # Epoch 1 applied up to seq 300 at ts 3000; the counter restarted, its seq 1..3 at ts 4000.. not yet acked.
    frames = rows("V", [299, 300, 1, 2, 3], [2990, 3000, 4000, 4010, 4020])
    assert durable_rows(frames, {"V": 300}, {"V": 3000}).tolist() == [True, True, False, False, False]
    # Once the new epoch's seq 2 (ts 4010) is acked, everything up to it is durable, seq 3 is not.
    assert durable_rows(frames, {"V": 2}, {"V": 4010}).tolist() == [True, True, True, True, False]


def test_at_the_acked_ts_only_seqs_up_to_the_acked_one_are_durable() -> None:
    frames = rows("V", [5, 6, 7], [1000, 1000, 1000])
    assert durable_rows(frames, {"V": 6}, {"V": 1000}).tolist() == [True, True, False]


def test_an_ack_without_ts_is_judged_by_seq_alone_and_no_ack_covers_nothing() -> None:
    frames = {"vehicle_id": np.array(["OLD", "OLD", "NEW", "OLD"]), "seq": np.array([0, 10, 1, 11]),
              "ts": np.array([100, 200, 50, 300])}
    assert durable_rows(frames, {"OLD": 10}, {}).tolist() == [True, True, False, False]
    assert not durable_rows(frames, {}, {}).any()  # seq 0 is a valid counter value: not durable before an ack


def test_the_watermark_moves_by_time_then_seq_and_never_back() -> None:
    session = _StreamSession(client=None, max_unacked_frames=10, on_alert=None, on_ack=None)  # type: ignore[arg-type]
    session._advance("V", 300, 3000)
    session._advance("V", 2, 4010)  # restart: seq falls, ts moves on
    assert (session.stats.acked_seq, session.stats.acked_ts) == ({"V": 2}, {"V": 4010})
    session._advance("V", 300, 3000)  # a late ack of the old epoch does not move it back
    assert (session.stats.acked_seq, session.stats.acked_ts) == ({"V": 2}, {"V": 4010})
    session._advance("OLD", 7, 0)  # an older server: by seq, max kept
    session._advance("OLD", 5, 0)
    assert session.stats.acked_seq["OLD"] == 7 and "OLD" not in session.stats.acked_ts


def test_memory_fleet_applies_a_restarted_counter_and_drops_re_sends_of_the_epoch_before() -> None:
    fleet = MemoryFleet()
    first = fleet_columns(["M"], 10)
    fleet.ingest_now(_decoded(first))
    restarted = fleet_columns(["M"], 5)
    restarted["ts"] = restarted["ts"] + 1_000_000  # seq 1..5 again, later
    result = fleet.ingest_now(_decoded(restarted))
    assert result.applied == 5 and result.duplicates == 0
    assert result.acks == {"M": 5} and result.ack_ts == {"M": int(restarted["ts"][-1])}
    again = fleet.ingest_now(_decoded(first))  # the old epoch re-sent: seq above the new watermark, but older
    assert again.applied == 0 and again.duplicates == 10 and again.ack_ts == {"M": int(restarted["ts"][-1])}


def _decoded(columns: dict[str, np.ndarray]) -> Any:
    return decode_batch(encode_columns(columns, 1), BatchLimits(), now_ms=NOW_MS)


# ----- end to end: a real server, the stream broken after the restart (integration) -------------------------

class Recorder(MemoryFleet):
    """Records every applied frame; fails chosen ingest calls before applying (a dying host) or after it
    (the ack is lost: the frames are durable, the client does not know)."""

    def __init__(self, fail_before: set[int], fail_after: set[int]) -> None:
        super().__init__()
        self.fail_before, self.fail_after = fail_before, fail_after
        self.calls = 0
        self.applied: list[tuple[str, int, int]] = []

    async def ingest(self, batch: Any) -> IngestResult:
        self.calls += 1
        if self.calls in self.fail_before:
            raise ConnectionError("host actor died")
        result = self.ingest_now(batch)
        if self.calls in self.fail_after:
            raise ConnectionError("host actor died after applying")
        return result

    def _apply(self, vehicle_id: str, state: Any, batch: Any, rows: np.ndarray, ts: np.ndarray, *rest: Any) -> None:
        self.applied += [(vehicle_id, int(batch.seq[r]), int(ts[r])) for r in rows]
        super()._apply(vehicle_id, state, batch, rows, ts, *rest)


def restarted_stream(vehicle: str, frames_each: int, batch: int) -> list[dict[str, np.ndarray]]:
    """Two epochs of one vehicle's counter (seq 1..n, then 1..n again, later), in batches of ``batch``."""
    first = fleet_columns([vehicle], frames_each)
    second = fleet_columns([vehicle], frames_each)
    second["ts"] = second["ts"] + frames_each * 10_000 + 3_600_000  # the ECU rebooted an hour later
    both = {k: np.concatenate([first[k], second[k]]) for k in first}
    return [{k: v[i:i + batch] for k, v in both.items()} for i in range(0, 2 * frames_each, batch)]


@pytest.mark.integration
def test_every_frame_of_a_restarted_counter_is_applied_once_across_reconnects() -> None:
    # 6 batches of 100: 3 per epoch. Call 4 (the first after the restart) fails before applying: judged by seq
    # its frames were "durable" (seq <= 300) and never re-sent. Call 6 applies, then loses its ack.
    backend = Recorder(fail_before={4}, fail_after={6})
    running = ServerThread(backend)
    try:
        batches = restarted_stream("RST1", 300, 100)

        async def go() -> Any:
            async with Client(running.target, OPERATOR) as client:
                return await asyncio.wait_for(client.stream(batches), timeout=30)

        stats = asyncio.run(go())
        sent = {("RST1", int(s), int(t)) for b in batches for s, t in zip(b["seq"], b["ts"], strict=True)}
        assert len(sent) == 600
        assert sorted(backend.applied) == sorted(sent)  # every frame, each exactly once
        assert stats.reconnects == 2
        assert stats.frames_acked == 600
        assert stats.acked_seq == {"RST1": 300} and stats.acked_ts == {"RST1": int(batches[-1]["ts"][-1])}
    finally:
        running.stop()


class FailingTwins(LocalTwinsBackend):
    """Real twins (a TwinHost with checkpoints) whose chosen ingest calls fail before reaching the host."""

    def __init__(self, host: TwinHost, fail_calls: set[int]) -> None:
        super().__init__(host)
        self.fail_calls = fail_calls
        self.calls = 0

    async def ingest(self, batch: Any) -> IngestResult:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise ConnectionError("host actor died")
        return await super().ingest(batch)


@pytest.mark.integration
def test_real_twins_apply_a_restarted_counter_once_across_a_reconnect(tmp_path: Path) -> None:
    frames_each, batch = 120, 40
    first = synthetic_frames("TW1", frames_each)
    second = synthetic_frames("TW1", frames_each, start_ms=int(first["ts"][-1]) + 3_600_000)  # seq 1.. again
    both = {k: np.concatenate([first[k], second[k]]) for k in first}
    both["vehicle_id"] = np.full(2 * frames_each, "TW1")
    batches = [{k: v[i:i + batch] for k, v in both.items()} for i in range(0, 2 * frames_each, batch)]
    backend = FailingTwins(TwinHost(settings(tmp_path)), fail_calls={4})  # the first batch after the restart
    running = ServerThread(backend)
    try:
        async def go() -> Any:
            async with Client(running.target, OPERATOR) as client:
                return await asyncio.wait_for(client.stream(batches), timeout=60)

        stats = asyncio.run(go())
        summary = running.call(backend.summary("TW1"))
        assert stats.reconnects == 1
        assert summary["seq_epoch"] == 1 and summary["frames_applied"] == 2 * frames_each
        assert stats.frames_acked == 2 * frames_each
        assert stats.acked_seq == {"TW1": frames_each} and stats.acked_ts == {"TW1": int(second["ts"][-1])}
        # The checkpoint holds both epochs: a new host over it reports the same (nothing lost with the process).
        restored = TwinHost(settings(tmp_path)).summary("TW1")
        assert restored is not None and restored["frames_applied"] == 2 * frames_each
    finally:
        running.stop()


# ----- where the ts comes from: the twin host, and the split of a coalesced call's answer (unit) -------------

def test_the_host_acks_the_newest_applied_frame_in_time_also_after_a_restart(tmp_path: Path) -> None:
    host = TwinHost(settings(tmp_path))
    first = synthetic_frames("H", 30)
    result = host.ingest(FrameBatch.from_columns({**first, "vehicle_id": np.full(30, "H")})[0])
    assert result.acks == {"H": 30} and result.ack_ts == {"H": int(first["ts"][-1])}
    # The counter restarts, but its first frames wait for a gap (seq 1 missing): nothing of the new epoch is
    # applied, so the ack still names the newest applied frame, the last one of the epoch before.
    later = synthetic_frames("H", 10, start_ms=int(first["ts"][-1]) + 3_600_000)
    waiting = {k: v[1:4] for k, v in later.items()}
    result = host.ingest(FrameBatch.from_columns({**waiting, "vehicle_id": np.full(3, "H")})[0])
    assert host.twins["H"].reorder.epoch == 1 and result.acks == {"H": 30}
    assert result.ack_ts == {"H": int(first["ts"][-1])}
    filled = {k: v[:1] for k, v in later.items()}
    result = host.ingest(FrameBatch.from_columns({**filled, "vehicle_id": np.full(1, "H")})[0])
    assert result.acks == {"H": 4} and result.ack_ts == {"H": int(later["ts"][3])}
    # A new host over the same checkpoints answers a re-send with the same watermark.
    again = TwinHost(settings(tmp_path)).ingest(FrameBatch.from_columns({**filled, "vehicle_id": np.full(1, "H")})[0])
    assert again.duplicates == 1 and again.acks == {"H": 4} and again.ack_ts == {"H": int(later["ts"][3])}


def test_a_coalesced_call_hands_each_stream_its_vehicles_ack_ts() -> None:
    whole = IngestResult(acks={"A": 3, "B": 7}, ack_ts={"A": 3000, "B": 7000})

    class Batch:
        def __init__(self, vehicle_ids: list[str]) -> None:
            self.vehicle_ids = vehicle_ids

    shares = _shares_of(whole, [Batch(["A"]), Batch(["B", "A"])])  # type: ignore[list-item]
    assert [(s.acks, s.ack_ts) for s in shares] == [({"A": 3}, {"A": 3000}),
                                                    ({"A": 3, "B": 7}, {"A": 3000, "B": 7000})]


def two_epochs(vehicle: str, frames_each: int, batch: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """Synthetic frames of one vehicle whose counter restarts (seq 1.. again, an hour later); the last ts."""
    first = synthetic_frames(vehicle, frames_each)
    second = synthetic_frames(vehicle, frames_each, start_ms=int(first["ts"][-1]) + 3_600_000)
    both = {k: np.concatenate([first[k], second[k]]) for k in first}
    both["vehicle_id"] = np.full(2 * frames_each, vehicle)
    return [{k: v[i:i + batch] for k, v in both.items()} for i in range(0, 2 * frames_each, batch)], int(second["ts"][-1])


@pytest.mark.integration
def test_real_twins_resume_a_restarted_counter_across_a_server_restart(tmp_path: Path) -> None:
    # The server is stopped and started again (a new TwinHost over the same checkpoints, the same port) while
    # the second epoch's frames are in flight; the client reconnects and re-sends what is not durable.
    frames_each, batch = 240, 20
    batches, last_ts = two_epochs("SR1", frames_each, batch)
    servers = [ServerThread(LocalTwinsBackend(TwinHost(settings(tmp_path))))]
    port = int(servers[0].target.rsplit(":", 1)[1])

    def restart() -> None:
        servers[-1].stop()
        servers.append(ServerThread(LocalTwinsBackend(TwinHost(settings(tmp_path))), port=port))

    async def source() -> Any:
        for i, columns in enumerate(batches):
            if i == frames_each // batch + 4:  # a few batches into the second epoch, with more in flight
                await asyncio.to_thread(restart)
            yield columns

    try:
        async def go() -> Any:
            async with Client(servers[0].target, OPERATOR) as client:
                return await asyncio.wait_for(client.stream(source(), max_unacked_frames=8 * batch), timeout=60)

        stats = asyncio.run(go())
        summary = servers[-1].call(servers[-1].backend.summary("SR1"))
        assert len(servers) == 2 and stats.reconnects >= 1
        assert summary["seq_epoch"] == 1 and summary["frames_applied"] == 2 * frames_each  # none lost, none twice
        assert stats.frames_acked == 2 * frames_each
        assert stats.acked_seq == {"SR1": frames_each} and stats.acked_ts == {"SR1": last_ts}
    finally:
        servers[-1].stop()


def test_a_restart_that_ends_at_the_old_seq_is_still_checkpointed_and_acknowledged(tmp_path: Path) -> None:
    # Epoch 2 applies seq 1..5 in one call, after epoch 1 ended at seq 5: the applied seq did not change, but
    # the twin did; judged by seq alone it was neither checkpointed nor acknowledged.
    host = TwinHost(settings(tmp_path))
    first = synthetic_frames("E", 5)
    host.ingest(FrameBatch.from_columns({**first, "vehicle_id": np.full(5, "E")})[0])
    later = synthetic_frames("E", 5, start_ms=int(first["ts"][-1]) + 3_600_000)
    result = host.ingest(FrameBatch.from_columns({**later, "vehicle_id": np.full(5, "E")})[0])
    assert result.acks == {"E": 5} and result.ack_ts == {"E": int(later["ts"][-1])}
    restored = TwinHost(settings(tmp_path)).summary("E")
    assert restored is not None and restored["frames_applied"] == 10 and restored["seq_epoch"] == 1
