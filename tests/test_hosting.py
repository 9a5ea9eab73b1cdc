"""Hosting logic without a cluster: batch splitting, routing, TwinHost durability and degraded services."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from configs.frames import FrameBatch
from configs.schema import SCHEMA
from configs.settings import load_config
from twins.host import HostSettings, PredictionBatch, TwinHost, route
from twins.store import CheckpointStore
from twins.synthetic import synthetic_frames, take
from twins.twin import VehicleTwin

WINDOW_MS = 600_000
FPW = 60


def settings(tmp_path: Path, **overrides: object) -> HostSettings:
    base = {"baseline_warmup_windows": 5, "prediction_interval_minutes": 20, "prediction_retry_s": 10,
            "prediction_timeout_s": 1, "idle_evict_minutes": 1}
    base.update(overrides)
    cfg = load_config(overrides=[f"twins.{k}={v}" for k, v in base.items()]).twins
    return HostSettings(twins=cfg, window_ms=WINDOW_MS, stride_ms=WINDOW_MS, checkpoint_uri=str(tmp_path / "ckpt"))


def fleet_frames(vehicles: list[str], n: int) -> dict[str, np.ndarray]:
    parts = [synthetic_frames(v, n) for v in vehicles]
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    columns["vehicle_id"] = np.concatenate([np.full(n, v, dtype=object) for v in vehicles])
    return columns


def arrow_batch(columns: dict[str, np.ndarray]) -> pa.Table:
    arrays = {"vehicle_id": pa.array(columns["vehicle_id"].astype(str)),
              "ts": pa.array(columns["ts"], type=pa.timestamp("ms", tz="UTC")),
              "seq": pa.array(columns["seq"])}
    arrays.update({name: pa.array(columns[name]) for name in SCHEMA.sensor_names})
    return pa.table(arrays)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_route_is_stable_and_spreads_vehicles() -> None:
    shards = [route(f"veh-{i:05d}", 16) for i in range(4000)]
    assert shards == [route(f"veh-{i:05d}", 16) for i in range(4000)]
    counts = np.bincount(shards, minlength=16)
    assert counts.min() > 150 and counts.max() < 350


def test_arrow_and_dict_batches_group_the_same_way() -> None:
    columns = fleet_frames(["b", "a", "c"], 20)
    shuffle = np.random.default_rng(0).permutation(60)
    columns = {k: v[shuffle] for k, v in columns.items()}
    from_dict, _ = FrameBatch.from_columns(columns)
    from_arrow, _ = FrameBatch.from_columns(arrow_batch(columns))
    assert sorted(from_dict.vehicle_ids) == sorted(from_arrow.vehicle_ids) == ["a", "b", "c"]
    for (va, pa_), (vb, pb) in zip(sorted(from_dict.parts()), sorted(from_arrow.parts()), strict=False):
        assert va == vb
        assert sorted(pa_["seq"].tolist()) == sorted(pb["seq"].tolist()) == list(range(1, 21))
        np.testing.assert_array_equal(pa_["values"][np.argsort(pa_["seq"])], pb["values"][np.argsort(pb["seq"])])


def test_rows_without_keys_are_refused_not_fatal() -> None:
    columns = fleet_frames(["a"], 5)
    table = arrow_batch(columns)
    seq = pa.array([0, None, 2, 3, 4], type=pa.int64())
    table = table.set_column(table.schema.get_field_index("seq"), "seq", seq)
    block, rejected = FrameBatch.from_columns(table)
    assert block.rows == 4 and [(r.code, r.vehicle_id) for r in rejected] == [("bad_key", "a")]
    with pytest.raises(ValueError, match="key column"):
        FrameBatch.from_columns({"seq": np.arange(3)})


def test_acks_cover_only_checkpointed_frames(tmp_path: Path) -> None:
    host = TwinHost(settings(tmp_path, durability="checkpoint"))
    block, _ = FrameBatch.from_columns(fleet_frames(["a", "b"], 50))
    result = host.ingest(block)
    assert result.acks == {"a": 50, "b": 50} and result.applied == 100
    stored = VehicleTwin.from_bytes(CheckpointStore(str(tmp_path / "ckpt")).get("a"))
    assert stored.applied_seq == 50

    class BrokenStore(CheckpointStore):
        def put(self, vehicle_id: str, data: bytes) -> None:
            raise OSError("disk full")

    host.store = BrokenStore(str(tmp_path / "ckpt"))
    block, _ = FrameBatch.from_columns(fleet_frames(["a"], 80))
    result = host.ingest(block)  # not durable, so no new ack: the client re-sends
    assert result.acks == {"a": 50} and "disk full" in result.not_durable["a"]


def test_a_new_host_resumes_from_checkpoints_exactly(tmp_path: Path) -> None:
    frames = fleet_frames(["a", "b", "c"], 6 * FPW)
    order = np.argsort(frames["seq"], kind="stable")  # interleave vehicles in time
    frames = {k: v[order] for k, v in frames.items()}
    straight = TwinHost(settings(tmp_path / "1"))
    for lo in range(0, order.size, 100):
        straight.ingest(FrameBatch.from_columns(take(frames, slice(lo, lo + 100)))[0])
    first = TwinHost(settings(tmp_path / "2"))
    for lo in range(0, 500, 100):
        first.ingest(FrameBatch.from_columns(take(frames, slice(lo, lo + 100)))[0])
    del first  # the actor "dies"; the client re-sends from the last ack (here: everything again)
    second = TwinHost(settings(tmp_path / "2"))
    for lo in range(300, order.size, 100):
        second.ingest(FrameBatch.from_columns(take(frames, slice(lo, lo + 100)))[0])
    for vehicle in ("a", "b", "c"):
        a, b = straight.twin(vehicle), second.twin(vehicle)
        b.duplicates = a.duplicates
        assert a.to_bytes() == b.to_bytes()
    assert second.restored == 3


def test_idle_twins_are_evicted_and_come_back(tmp_path: Path) -> None:
    clock = Clock()
    host = TwinHost(settings(tmp_path), clock=clock)
    host.ingest(FrameBatch.from_columns(fleet_frames(["a", "b"], 30))[0])
    clock.now = 30.0
    host.ingest(FrameBatch.from_columns({k: v for k, v in fleet_frames(["b"], 40).items()})[0])
    clock.now = 75.0
    assert host.evict_idle() == ["a"] and host.resident() == ["b"]
    assert host.summary("a")["applied_seq"] == 30 and host.restored == 0  # a lookup reads, never restores
    assert host.summary("nobody") is None and host.resident() == ["b"]
    host.ingest(FrameBatch.from_columns(fleet_frames(["a"], 31))[0])  # the next frame restores it
    assert host.restored == 1 and host.summary("a")["applied_seq"] == 31


class SlowPredictor:
    def __init__(self) -> None:
        self.calls = 0
        self.ready = False

    def submit(self, vehicle_ids, window_end_ms, X):
        self.calls += 1
        assert not np.isinf(X).any()  # missing inputs are NaN (the models take NaN), never infinite
        return len(vehicle_ids)

    def poll(self, ticket):
        if not self.ready:
            return None
        return PredictionBatch(risk=[{7: 0.9, 14: 0.95, 30: 0.99}] * ticket, severity=[3] * ticket,
                               mode=["coolant_pump"] * ticket, contributions=[[("x", 1.0)]] * ticket)


class FailingPredictor(SlowPredictor):
    def poll(self, ticket):
        raise ConnectionError("model service down")


def test_a_slow_model_service_never_blocks_ingestion(tmp_path: Path) -> None:
    clock, predictor = Clock(), SlowPredictor()
    host = TwinHost(settings(tmp_path, prediction_timeout_s=100), predictor=predictor, clock=clock)
    frames = fleet_frames(["a"], 8 * FPW)
    for lo in range(0, 8 * FPW, FPW):
        result = host.ingest(FrameBatch.from_columns(take(frames, slice(lo, lo + FPW)))[0])
        assert result.applied == FPW
    assert predictor.calls == 1  # one request in flight at a time
    predictor.ready = True
    result = host.ingest(
        FrameBatch.from_columns(synthetic_frames("a", 1, start_seq=8 * FPW + 1) | {"vehicle_id": np.array(["a"])})[0])
    assert [a.rule for a in result.alerts] == ["failure_risk"]
    assert host.summary("a")["risk"] == {"7": 0.9, "14": 0.95, "30": 0.99}


def test_a_failing_model_service_degrades_and_is_retried_later(tmp_path: Path) -> None:
    clock, predictor = Clock(), FailingPredictor()
    host = TwinHost(settings(tmp_path, prediction_retry_s=10), predictor=predictor, clock=clock)
    frames = fleet_frames(["a"], 30 * FPW)
    frames["motor_temp"][15 * FPW:] += np.float32(25.0)
    rules = []
    for lo in range(0, 30 * FPW, FPW):
        result = host.ingest(FrameBatch.from_columns(take(frames, slice(lo, lo + FPW)))[0])
        rules += [a.rule for a in result.alerts]
    assert rules == ["anomaly"]  # anomaly alerts still flow
    assert predictor.calls == 1 and host.predictions_failed == 1
    clock.now = 11.0
    host.ingest(FrameBatch.from_columns(synthetic_frames("a", 1, start_seq=30 * FPW + 1) | {"vehicle_id": np.array(["a"])})[0])
    assert predictor.calls == 2  # retried after prediction_retry_s
    assert host.summary("a")["prediction_due"]


class LevelModel:
    """Anomaly model stub: error = squared distance of two window features from fixed levels."""

    signal_names = ("cell_temp_max_mean", "motor_temp_mean")
    sequence_length = 4
    threshold = 1.0

    def __init__(self, levels: tuple[float, float]) -> None:
        self.levels = np.array(levels)

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_signal = ((sequences.mean(axis=1) - self.levels) ** 2) / 4.0
        total = per_signal.sum(axis=1)
        return total, per_signal / np.maximum(total[:, None], 1e-12)


def test_fine_tunes_run_through_the_runner_and_are_checkpointed(tmp_path: Path) -> None:
    frames = fleet_frames(["a"], 12 * FPW)
    model = LevelModel((float(frames["cell_temp_max"].mean()) + 0.5, float(frames["motor_temp"].mean())))
    model.signal_error_reference = np.array([1e-3, 1e-3])  # the fleet's normal error per signal
    host = TwinHost(settings(tmp_path, fine_tune_every_windows=4), anomaly_model=model)
    for lo in range(0, 12 * FPW, FPW):
        host.ingest(FrameBatch.from_columns(take(frames, slice(lo, lo + FPW)))[0])
    twin = host.twin("a")
    assert twin.head.version >= 2  # inline runner: installed on the next call
    stored = VehicleTwin.from_bytes(CheckpointStore(str(tmp_path / "ckpt")).get("a"), model)
    assert stored.head.version == twin.head.version
    assert (stored.head.offsets >= 0).all() and stored.head.offsets.shape == (2,)
    assert stored.head.offsets.any()  # this vehicle runs 0.5 K off the model's cell temperature
    capped = TwinHost(settings(tmp_path / "capped", fine_tune_every_windows=4, head_max_offset=0), anomaly_model=model)
    for lo in range(0, 12 * FPW, FPW):
        capped.ingest(FrameBatch.from_columns(take(frames, slice(lo, lo + FPW)))[0])
    assert capped.twin("a").head.version >= 2 and not capped.twin("a").head.offsets.any()  # the config reaches the task


def test_a_host_without_a_checkpoint_store_keeps_its_twins_and_acknowledges_what_it_applied(tmp_path: Path) -> None:
    """checkpoint_uri=None (the what-if's twins): nothing written, acks at the applied watermark, nothing evicted."""
    clock = Clock()
    ephemeral = HostSettings(twins=settings(tmp_path).twins, window_ms=WINDOW_MS, stride_ms=WINDOW_MS,
                             checkpoint_uri=None)
    host = TwinHost(ephemeral, clock=clock)
    durable = TwinHost(settings(tmp_path), clock=Clock())
    block, _ = FrameBatch.from_columns(fleet_frames(["a", "b"], 3 * FPW))
    result, reference = host.ingest(block), durable.ingest(block)
    assert result.acks == reference.acks == {"a": 3 * FPW, "b": 3 * FPW}
    assert host.store is None
    clock.now += 10 * 3600.0  # far past idle_evict_minutes
    assert host.evict_idle() == [] and host.resident() == ["a", "b"]
    assert host.summary("a")["acked_seq"] == 3 * FPW and host.summary("nobody") is None
    assert host.twins["a"].to_bytes() == durable.twins["a"].to_bytes()
