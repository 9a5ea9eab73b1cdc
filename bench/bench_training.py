"""Wall time and peak memory of prepare, train (each model) and evaluate; model inference throughput.

    .venv/bin/evtwin generate --config configs/benchmark.json --out runs/benchmark
    .venv/bin/python bench/bench_training.py --run runs/benchmark --config configs/benchmark.json \\
        [--test-run runs/benchmark-seed2] [--skip prepare]

Each stage runs in its own process (the ``evtwin`` command itself), so its peak RSS (including worker
processes) is its own. Throughput: the trained LightGBM failure model (all horizons) and the LSTM-AE
on test windows, batched and one window at a time, plus the feature function itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

STAGE_SCRIPT = """
import json, resource, sys, time
from serving.cli import main
t = time.perf_counter()
code = main(sys.argv[1:])
wall = time.perf_counter() - t
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("BENCH " + json.dumps({"code": code, "wall_s": wall, "peak_rss_mb": own / 1024, "peak_worker_rss_mb": kids / 1024}))
"""


def run_stage(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, *args], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def throughput(run: Path) -> dict:
    from training.artifacts import load_anomaly_model, load_failure_model
    from training.dataset import read_card
    from training.train import load_split

    horizons = tuple(int(h) for h in read_card(run)["horizons"])
    X = load_split(run, "test", horizons).X
    out: dict[str, float] = {}
    t = time.perf_counter()
    model = load_failure_model(run)
    out["failure_model_load_s"] = time.perf_counter() - t
    batch = X[: min(len(X), 20_000)]
    t = time.perf_counter()
    model.predict(batch)
    out["lightgbm_batch_windows_per_s"] = len(batch) / (time.perf_counter() - t)
    n = 300
    t = time.perf_counter()
    for i in range(n):
        model.predict(X[i])
    out["lightgbm_single_windows_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    ae = load_anomaly_model(run)
    out["anomaly_model_load_s"] = time.perf_counter() - t
    seq = np.lib.stride_tricks.sliding_window_view(X[: 8192 + ae.sequence_length], ae.sequence_length, axis=0)
    seq = np.ascontiguousarray(seq.transpose(0, 2, 1)[:8192][:, :, ae.signal_index])
    t = time.perf_counter()
    ae.score(seq)
    out["lstm_ae_batch_windows_per_s"] = len(seq) / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        ae.score(seq[i:i + 1])
    out["lstm_ae_single_windows_per_s"] = n / (time.perf_counter() - t)
    out.update(feature_throughput())
    return out


def feature_throughput() -> dict:
    from training.features import REQUIRED_COLUMNS, FeatureState

    rng = np.random.default_rng(0)
    window = {c: rng.normal(10, 1, 120) for c in REQUIRED_COLUMNS}  # one hour of 30 s frames
    window["ts"] = np.arange(120, dtype=np.int64) * 30_000
    state = FeatureState()
    n = 2000
    t = time.perf_counter()
    for i in range(n):
        state.update(window, end_ms=i * 3_600_000)
    return {"feature_state_windows_per_s": n / (time.perf_counter() - t)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--test-run", default=None)
    parser.add_argument("--skip", action="append", default=[], choices=["prepare", "train", "evaluate"])
    args = parser.parse_args()
    run = Path(args.run)
    config = ["--config", args.config] if args.config else []
    results: dict[str, dict] = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}}
    if "prepare" not in args.skip:
        results["prepare"] = run_stage(["prepare", "--run", str(run), *config])
        card = json.loads((run / "dataset" / "card.json").read_text())
        results["prepare"]["windows"] = sum(card["windows"].values())
    if "train" not in args.skip:
        results["train"] = run_stage(["train", "--run", str(run), *config])
        results["train"]["per_model_s"] = json.loads((run / "models" / "training.json").read_text())["timings"]
    if "evaluate" not in args.skip:
        results["evaluate"] = run_stage(["evaluate", "--run", str(run), *config])
        if args.test_run:
            results["evaluate_other_seed"] = run_stage(["evaluate", "--run", str(run), "--test-run", args.test_run, *config])
    results["inference"] = throughput(run)
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    print()
    print("| stage | wall s | peak RSS MB (process / workers) |")
    print("|---|---|---|")
    for stage in ("prepare", "train", "evaluate", "evaluate_other_seed"):
        if stage in results:
            r = results[stage]
            print(f"| {stage} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} / {r['peak_worker_rss_mb']:.0f} |")
    if "train" in results:
        for k, v in results["train"]["per_model_s"].items():
            print(f"| train: {k.removesuffix('_s')} | {v:.1f} | |")
    for k, v in results["inference"].items():
        print(f"| {k} | {v:,.1f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
