"""Durable acks of one twin host (``TwinHost``, no Ray, no gRPC): write-ahead log vs checkpoint-per-call, same
frames, same run. Measures what issue 14 item 1 changes: the cost of making a call durable before its ack.

    .venv/bin/python bench/bench_wal.py                       # 256 vehicles, 10-frame calls per vehicle
    .venv/bin/python bench/bench_wal.py --vehicles 64 --calls 20 --gateway

Loads: ``streams`` = one call per vehicle with ``--frames`` frames (a vehicle stream's batch); ``--gateway`` =
one call with every vehicle's ``--frames`` frames. Figures per durability mode: acknowledged frames/s and call
(= ack) latency p50/p99 in ms, on a local folder under runs/ (fsync included).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs.frames import FrameBatch  # noqa: E402
from configs.settings import load_config  # noqa: E402
from twins.host import HostSettings, TwinHost  # noqa: E402
from twins.synthetic import synthetic_frames  # noqa: E402


def run(mode: str, vehicles: list[str], calls: int, frames: int, gateway: bool, folder: Path) -> dict[str, float]:
    shutil.rmtree(folder, ignore_errors=True)
    cfg = load_config(overrides=[f"twins.durability={mode}"])
    host = TwinHost(HostSettings(twins=cfg.twins, window_ms=cfg.dataset.window_ms, stride_ms=cfg.dataset.stride_ms,
                                 checkpoint_uri=str(folder)))
    per_vehicle = {v: synthetic_frames(v, calls * frames) for v in vehicles}
    blocks: list[FrameBatch] = []
    for c in range(calls):
        rows = slice(c * frames, (c + 1) * frames)
        parts = [FrameBatch.from_columns({**{k: a[rows] for k, a in per_vehicle[v].items()},
                                          "vehicle_id": np.full(frames, v, dtype=object)})[0] for v in vehicles]
        blocks += [FrameBatch.concat(parts)] if gateway else parts
    latencies = []
    acked = 0
    start = time.perf_counter()
    for block in blocks:
        t = time.perf_counter()
        result = host.ingest(block)
        latencies.append(time.perf_counter() - t)
        assert not result.not_durable, result.not_durable
        acked += block.rows
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {"frames_per_s": round(acked / elapsed), "ack_p50_ms": round(float(np.percentile(ms, 50)), 2),
            "ack_p99_ms": round(float(np.percentile(ms, 99)), 2), "calls": len(blocks), "frames": acked}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=256)
    parser.add_argument("--calls", type=int, default=10, help="calls per vehicle (streams) or in all (gateway)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--gateway", action="store_true")
    parser.add_argument("--modes", default="wal,checkpoint")
    args = parser.parse_args()
    vehicles = [f"EV{i:06d}" for i in range(args.vehicles)]
    out = {"load_average": os.getloadavg()[0], "load": "gateway" if args.gateway else "streams",
           "vehicles": args.vehicles, "frames_per_call_per_vehicle": args.frames}
    for mode in args.modes.split(","):
        out[mode] = run(mode, vehicles, args.calls, args.frames, args.gateway, ROOT / "runs" / "bench-wal" / mode)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
