"""Hosting that scales by default: hosts are opened as vehicles arrive (not sized from simulation.num_vehicles),
bounded by twins.max_host_actors, and every twin stays addressable by id. No Ray started here."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.settings import load_config
from twins.host import Placement
from twins.hosting import TwinFleet
from twins.store import CheckpointStore


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
