"""The window feature function: a loop of per-window calls against ``update_many`` (many vehicles at once).

    .venv/bin/python bench/bench_features.py                 # B = 1, 100, 1,000 windows of 6 and 60 frames
    .venv/bin/python bench/bench_features.py --batches 1 1000 --frames 6 --rounds 10

Each round closes one window for each of B vehicles (fresh ``FeatureState`` per vehicle, end times one
hour apart, so the context path runs in full from the second round on), with frames from
``twins.synthetic`` (6 frames: the what-if simulator's windows; 60 frames: a 60-minute production window
of 60 s frames). Rows, per window, median over rounds (microseconds):
1. ``oracle loop``: the per-window implementation before batching (the frozen copy in
   tests/test_features_batch.py), one ``update_values`` per window: the baseline;
2. ``update_values loop``: today's ``FeatureState.update_values`` (``update_many`` with B = 1) per window;
3. ``update_many``: one call for the B windows.
Last, the offline path: ``vehicle_feature_matrix`` on 20 days of one vehicle's 60 s frames (60-minute
windows) against the oracle loop over the same windows (best of 3).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from training.features import REQUIRED_COLUMNS, FeatureState, update_many, vehicle_feature_matrix  # noqa: E402
from training.windows import window_index  # noqa: E402
from twins.synthetic import synthetic_frames  # noqa: E402

HOUR = 3_600_000


def vehicle_windows(batch: int, frames: int, rounds: int) -> list[list[np.ndarray]]:
    """windows[r][v]: the frames (frames x REQUIRED_COLUMNS, float64) of vehicle v's window in round r."""
    out: list[list[np.ndarray]] = [[] for _ in range(rounds)]
    for v in range(batch):
        cols = synthetic_frames(f"EV{v:06d}", frames * rounds, seed=7)
        values = np.column_stack([cols[c].astype(np.float64) for c in REQUIRED_COLUMNS])
        for r in range(rounds):
            out[r].append(values[r * frames:(r + 1) * frames])
    return out


def time_rounds(windows: list[list[np.ndarray]], step) -> tuple[float, float]:
    """(median, best) microseconds per window over the rounds (the first round, fresh states, left out).

    The best round is what the code costs on a quiet core; the median includes what the machine's
    other load takes from it (this machine's 2 cores are shared, so both are printed)."""
    per_window = []
    for r, round_windows in enumerate(windows):
        t0 = time.perf_counter()
        step(r, round_windows)
        if r:
            per_window.append((time.perf_counter() - t0) / len(round_windows) * 1e6)
    return statistics.median(per_window), min(per_window)


def bench_offline(OracleState) -> None:
    cols = synthetic_frames("EV000001", 20 * 24 * 60, seed=7, interval_ms=60_000)
    new = old = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        ends, _ = vehicle_feature_matrix(cols, HOUR, HOUR)
        new = min(new, time.perf_counter() - t0)
        values = np.column_stack([cols[c].astype(np.float64) for c in REQUIRED_COLUMNS])
        window_ends, lo, hi = window_index(cols["ts"], HOUR, HOUR)
        oracle = OracleState()
        t0 = time.perf_counter()
        for e, a, b in zip(window_ends, lo, hi, strict=False):
            oracle.update_values(int(e), values[a:b])
        old = min(old, time.perf_counter() - t0)
    print(f"offline vehicle_feature_matrix, {ends.size} windows of 60 frames: {new / ends.size * 1e6:.1f} us per "
          f"window, oracle loop {old / ends.size * 1e6:.1f} us ({old / new:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100, 1000], help="windows per call (B)")
    parser.add_argument("--frames", type=int, nargs="+", default=[6, 60], help="frames per window")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per figure (default: ~3,000 windows' worth)")
    parser.add_argument("--no-oracle", action="store_true", help="skip the frozen per-window baseline")
    args = parser.parse_args()
    OracleState = None
    if not args.no_oracle:
        from tests.test_features_batch import OracleState

    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("us per window, median (best) over rounds; speed-ups of update_many on medians (best)")
    print(f"{'frames':>6} {'B':>5} {'oracle loop':>16} {'update_values loop':>19} {'update_many':>14} "
          f"{'vs oracle':>15} {'vs loop':>15}")
    for frames in args.frames:
        for batch in args.batches:
            rounds = args.rounds or max(4, min(200, 3000 // batch))
            windows = vehicle_windows(batch, frames, rounds)
            figures = {}
            if OracleState is not None:
                oracles = [OracleState() for _ in range(batch)]
                figures["oracle"] = time_rounds(windows, lambda r, ws, oracles=oracles: [
                    s.update_values(r * HOUR, w) for s, w in zip(oracles, ws, strict=False)])
            singles = [FeatureState() for _ in range(batch)]
            figures["loop"] = time_rounds(windows, lambda r, ws, singles=singles: [
                s.update_values(r * HOUR, w) for s, w in zip(singles, ws, strict=False)])
            states = [FeatureState() for _ in range(batch)]
            figures["many"] = time_rounds(windows, lambda r, ws, states=states: update_many(states, [r * HOUR] * len(ws), ws))
            oracle = figures.get("oracle", (float("nan"), float("nan")))
            many = figures["many"]
            show = lambda f: f"{f[0]:.1f} ({f[1]:.1f})"  # noqa: E731
            ratio = lambda f, many=many: f"{f[0] / many[0]:.1f}x ({f[1] / many[1]:.1f}x)"  # noqa: E731
            print(f"{frames:>6} {batch:>5} {show(oracle):>16} {show(figures['loop']):>19} {show(many):>14} "
                  f"{ratio(oracle):>15} {ratio(figures['loop']):>15}")
    if OracleState is not None:
        bench_offline(OracleState)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
