"""The fleet report (``evtwin report``) for a large fleet: 1,000 vehicles and 10,000 alerts, target < 10 s.

    .venv/bin/python bench/bench_report.py                      # 1,000 vehicles, 10,000 alerts
    .venv/bin/python bench/bench_report.py --vehicles 200 --alerts 2000

The fleet is real on disk (tests/report_fixture.py): twin checkpoints written by a ``TwinHost``, the alert
history in ``AlertStore`` files, about 45 % of the alerts acknowledged, assigned or resolved in the
lifecycle log. Timed (best of --rounds): collecting (decoding every checkpoint, reading every alert and
the log) and rendering the HTML, and the whole ``write_report``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.settings import load_config  # noqa: E402
from serving.report import collect_report_inputs, render_report, write_report  # noqa: E402
from tests.report_fixture import build_fleet  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        uri = str(run / "checkpoints")
        started = time.perf_counter()
        build_fleet(uri, args.vehicles, args.alerts, seed=0)
        print(f"fleet written in {time.perf_counter() - started:.1f} s: {args.vehicles} vehicles, {args.alerts} alerts "
              f"(load average {os.getloadavg()[0]:.1f})")
        collect, render, whole = [], [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            inputs = collect_report_inputs(run, config, uri)
            t1 = time.perf_counter()
            page = render_report(inputs)
            t2 = time.perf_counter()
            path = write_report(run, config, uri, run / "report.html")
            t3 = time.perf_counter()
            collect.append(t1 - t0)
            render.append(t2 - t1)
            whole.append(t3 - t2)
        print(f"collect {min(collect):.2f} s, render {min(render):.2f} s, write_report {min(whole):.2f} s "
              f"(best of {args.rounds}); page {len(page) / 1e6:.1f} MB, file {path.stat().st_size / 1e6:.1f} MB; "
              f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
