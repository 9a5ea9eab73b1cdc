"""Plausible synthetic frames for twin tests and benchmarks (seeded; no physics: see simulation/ for that).

Each signal sits at a per-vehicle level inside its physical range with small Gaussian noise.

>>> cols = synthetic_frames("v1", n=5, seed=0)
>>> cols["seq"].tolist(), int(cols["ts"][1] - cols["ts"][0])
([1, 2, 3, 4, 5], 10000)
"""
from __future__ import annotations

import hashlib

import numpy as np

from configs.schema import SCHEMA

SENSORS = SCHEMA.sensor_names


def _vehicle_seed(vehicle_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{vehicle_id}".encode(), digest_size=8).digest(), "little")


def synthetic_frames(vehicle_id: str, n: int, seed: int = 0, start_seq: int = 1, start_ms: int = 1_767_571_210_000,
                     interval_ms: int = 10_000, offset: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Columns ``seq`` (from 1, as on the wire), ``ts`` and every sensor; ``offset`` (per sensor) shifts
    the vehicle's normal."""
    rng = np.random.default_rng([_vehicle_seed(vehicle_id, seed), start_seq])
    lo, hi = SCHEMA.lower_bounds, SCHEMA.upper_bounds
    level_rng = np.random.default_rng(_vehicle_seed(vehicle_id, seed))
    level = lo + (hi - lo) * level_rng.uniform(0.4, 0.6, size=lo.size)
    if offset is not None:
        level = level + offset
    noise = (hi - lo) * 0.002
    values = level + rng.normal(0.0, 1.0, size=(n, lo.size)) * noise
    columns = {name: values[:, j].astype(np.float32) for j, name in enumerate(SENSORS)}
    columns["seq"] = np.arange(start_seq, start_seq + n, dtype=np.int64)
    columns["ts"] = start_ms + columns["seq"] * interval_ms
    return columns


def take(columns: dict[str, np.ndarray], index: np.ndarray | slice) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in columns.items()}
