"""Hosting that scales by default: hosts are opened as vehicles arrive (not sized from simulation.num_vehicles),
bounded by twins.max_host_actors, and every twin stays addressable by id. No Ray started here."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.frames import Rejection
from configs.settings import load_config
from serving.backend import _shares_of
from serving.codec import BatchLimits, decode_batch, encode_columns
from twins.host import Placement
from twins.hosting import TwinFleet
from twins.store import CheckpointStore
from twins.types import Alert, IngestResult, Rule

NOW_MS = int(time.time() * 1000)


def fleet_for(tmp_path: Path, *overrides: str, expected: int | None = None) -> TwinFleet:
    config = load_config(overrides=[f"twins.checkpoint_uri={tmp_path / 'ckpt'}", *overrides])
    return TwinFleet.create(config, expected_vehicles=expected)


@pytest.mark.parametrize(("vehicles", "hosts"), [(10, 1), (256, 1), (257, 2), (1_000, 4), (10_000, 8)])
def test_default_hosting_grows_with_the_fleet_it_meets_and_is_bounded(tmp_path: Path, vehicles: int,
                                                                       hosts: int) -> None:
    fleet = fleet_for(tmp_path, "simulation.num_vehicles=10")  # the shipped value must not size the hosts
    names = {fleet._place(f"veh-{i:05d}") for i in range(vehicles)}
    assert len(names) == hosts
    assert fleet.host_names() == sorted(names, key=lambda name: int(name.rsplit("-", 1)[1]))
    loads = fleet.placement.loads
    assert sum(loads) == vehicles
    assert max(loads) <= max(256, -(-vehicles // hosts))  # full hosts, or (at the cap) an even spread


def test_a_vehicle_never_moves_and_lookups_place_nothing(tmp_path: Path) -> None:
    fleet = fleet_for(tmp_path, "twins.twins_per_actor=2", "twins.max_host_actors=3")
    first = {v: fleet._place(v) for v in ("a", "b", "c", "d", "e")}
    for v in ("f", "g", "h", "i"):
        fleet._place(v)
    assert {v: fleet.host_name(v) for v in first} == first
    assert fleet.host_name("never-seen") is None
    assert fleet.summary("never-seen") is None  # answered from the (empty) checkpoint store, no actor started
    assert fleet.actors == {} and fleet.host_name("never-seen") is None
    assert sum(fleet.placement.loads) == 9


def test_a_lookup_of_a_vehicle_placed_by_an_earlier_router_reads_its_checkpoint(tmp_path: Path) -> None:
    fleet = fleet_for(tmp_path)
    CheckpointStore(str(tmp_path / "ckpt")).put("veh-1", b"not a twin")
    with pytest.raises(ValueError):  # it did reach for the checkpoint (and found garbage), not an actor
        fleet.summary("veh-1")
    assert fleet.actors == {}


def test_two_routers_never_share_placed_hosts(tmp_path: Path) -> None:
    first, second = fleet_for(tmp_path), fleet_for(tmp_path)
    assert first._place("veh-1") != second._place("veh-1")


def test_expected_vehicles_spreads_the_first_vehicles_over_more_hosts(tmp_path: Path) -> None:
    fleet = fleet_for(tmp_path, expected=1_000)
    assert len({fleet._place(f"veh-{i}") for i in range(4)}) == 4


def test_one_actor_per_vehicle_stays_available(tmp_path: Path) -> None:
    fleet = fleet_for(tmp_path, "twins.twins_per_actor=1")
    assert fleet.placement is None
    assert fleet._place("veh-1") == fleet.host_name("veh-1") == "evtwin-twin-veh-1"


def test_placement_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="twins_per_host=0"):
        Placement(0, 4)
    with pytest.raises(ValueError, match="max_hosts=0"):
        Placement(4, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=400), st.integers(1, 20), st.integers(1, 6))
def test_placement_is_sticky_filled_in_order_and_bounded(arrivals: list[int], per_host: int, max_hosts: int) -> None:
    placement = Placement(per_host, max_hosts)
    seen: dict[str, int] = {}
    for n in arrivals:
        vehicle = f"v{n}"
        host = placement.place(vehicle)
        assert seen.setdefault(vehicle, host) == host
        # never more hosts than the fleet needs, never more than allowed
        assert len(placement.loads) == min(max_hosts, -(-len(seen) // per_host))
    assert sum(placement.loads) == len(seen)
    if len(placement.loads) < max_hosts:
        assert all(load <= per_host for load in placement.loads)
    else:
        assert max(placement.loads) - min(placement.loads) <= max(per_host, 1)


# ------------------------------------------------------------------ coalesced calls split back per stream
def _decoded(vehicles: list[str], batch_id: int) -> Any:
    columns = {"vehicle_id": np.repeat(np.array(vehicles, dtype=object), 2),
               "seq": np.tile(np.array([1, 2], dtype=np.int64), len(vehicles))}
    columns["ts"] = NOW_MS - 60_000 + columns["seq"] * 1000
    return decode_batch(encode_columns(columns, batch_id=batch_id), BatchLimits(), now_ms=NOW_MS)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=4, unique=True), min_size=2, max_size=8),
       st.sets(st.integers(0, 15)), st.sets(st.integers(0, 15)))
def test_a_coalesced_result_is_split_back_to_each_batch_by_its_vehicles(batches_of_ids: list[list[int]],
                                                                      acked: set[int], alerted: set[int]) -> None:
    batches = [_decoded([f"v{i}" for i in ids], batch_id=k + 1) for k, ids in enumerate(batches_of_ids)]
    result = IngestResult(
        acks={f"v{i}": i + 1 for i in acked},
        alerts=[Alert(alert_id=f"a{i}", vehicle_id=f"v{i}", rule=Rule.SENSOR_FAULT, ts_ms=1, seq=1, score=1.0,
                      signals=(), message="") for i in alerted],
        rejected=[Rejection(f"v{i}", 1, "late", "late") for i in alerted],
        not_durable={f"v{i}": "store down" for i in alerted if i % 2},
        applied=7, duplicates=3)
    shares = _shares_of(result, batches)
    assert len(shares) == len(batches)
    for batch, share in zip(batches, shares, strict=True):
        mine = set(batch.vehicle_ids)
        assert share.acks == {v: s for v, s in result.acks.items() if v in mine}
        assert share.alerts == [a for a in result.alerts if a.vehicle_id in mine]
        assert share.rejected == [r for r in result.rejected if r.vehicle_id in mine]
        assert share.not_durable == {v: e for v, e in result.not_durable.items() if v in mine}
        assert share.duplicates == 0  # counted per call: not attributable to one stream


def test_a_single_batch_gets_the_whole_result() -> None:
    result = IngestResult(acks={"v1": 2}, applied=2, duplicates=1)
    assert _shares_of(result, [_decoded(["v1"], 1)]) == [result]
