"""What the twins' own metrics cost (twins/metrics.py): ingest throughput of a TwinHost with and without them.

    .venv/bin/python bench/bench_twin_metrics.py                       # 200 vehicles x 600 frames, 5 rounds
    .venv/bin/python bench/bench_twin_metrics.py --vehicles 50 --frames 300

Each round builds two fresh hosts on their own checkpoint folders and feeds both the same frames (batches of
one minute of the whole fleet, as the front door groups them), alternating which goes first; the median
over rounds of frames per second is compared. Target (issue 15): under 5 % of ingest throughput. On a shared
machine that difference is noise-bound, so the run with metrics also times ``host.ingest`` inside it: the rest
is the metrics' own work, a share that the machine's load does not swing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from configs.frames import FrameBatch  # noqa: E402
from configs.settings import load_config  # noqa: E402
from twins.host import HostSettings, TwinHost  # noqa: E402
from twins.metrics import PrometheusSink, TwinMetrics  # noqa: E402
from twins.synthetic import synthetic_frames  # noqa: E402


def batches(vehicles: int, frames: int, per_batch: int) -> list[FrameBatch]:
    parts = [synthetic_frames(f"M{i:04d}", frames) for i in range(vehicles)]
    out = []
    for start in range(0, frames, per_batch):
        chunk = [{k: v[start:start + per_batch] for k, v in p.items()} for p in parts]
        columns = {k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]}
        columns["vehicle_id"] = np.concatenate([np.full(len(c["seq"]), f"M{i:04d}", dtype=object)
                                                for i, c in enumerate(chunk)])
        out.append(FrameBatch.from_columns(columns)[0])
    return out


def run(blocks: list[FrameBatch], root: str, measured: bool) -> tuple[float, float]:
    """(frames per second, share of the wall time spent in the metrics code outside ``host.ingest``)."""
    config = load_config()
    host = TwinHost(HostSettings(twins=config.twins, window_ms=config.dataset.window_ms,
                                 stride_ms=config.dataset.stride_ms, checkpoint_uri=root))
    metrics = TwinMetrics(PrometheusSink(CollectorRegistry()), host="bench") if measured else None
    inside = [0.0]
    ingest = host.ingest

    def timed_ingest(block: FrameBatch) -> object:  # the same call, timed: what is left is the metrics' own work
        began = time.perf_counter()
        try:
            return ingest(block)
        finally:
            inside[0] += time.perf_counter() - began

    host.ingest = timed_ingest
    started = time.perf_counter()
    frames = 0
    for block in blocks:
        result = metrics.ingest(host, block) if metrics else host.ingest(block)
        frames += result.applied
    elapsed = time.perf_counter() - started
    return frames / elapsed, (elapsed - inside[0]) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--per-batch", type=int, default=6, help="frames per vehicle per batch (6 = a minute at 10 s)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    blocks = batches(args.vehicles, args.frames, args.per_batch)
    load_before = os.getloadavg()[0]
    plain, measured, own = [], [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            if r % 2:
                with_metrics = run(blocks, a, True)
                plain.append(run(blocks, b, False)[0])
            else:
                plain.append(run(blocks, a, False)[0])
                with_metrics = run(blocks, b, True)
            measured.append(with_metrics[0])
            own.append(with_metrics[1])
    p, m = statistics.median(plain), statistics.median(measured)
    print(f"{args.vehicles} vehicles x {args.frames} frames, {len(blocks)} batches: without metrics {p:,.0f} frames/s, "
          f"with {m:,.0f} frames/s: cost {100 * (p - m) / p:+.1f} % (median of {args.rounds}; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    # the spread says how much of the difference is noise: per-round costs, paired by round
    print("per round: " + ", ".join(f"{pl:,.0f}/{me:,.0f} ({100 * (pl - me) / pl:+.1f} %)"
                                    for pl, me in zip(plain, measured, strict=True)))
    # paired within one run, so the machine's load cancels out: the metrics' own share of the ingest wall time
    # (their lookups and counters around host.ingest; the persistence timer inside it is not included)
    print(f"metrics' own time outside host.ingest: median {100 * statistics.median(own):.2f} % of the wall time "
          f"(max {100 * max(own):.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
