"""Domain shift: train on the default fleet, test on generator variants and sensor profiles (issue 12 items 7, 8, 10).

    .venv/bin/python bench/bench_domain_shift.py [--vehicles 40 --days 30 --test-vehicles 16 --test-days 30]
        [--variants configs/variants/*.json] [--leave-one-mode-out [MODE ...]] [--publish]

One command: generates the training fleet (``--base`` config, default ``configs/benchmark.json``, at the size
given here), prepares and trains it with the project's own code (``training.dataset``, ``training.train``), then
for every variant in ``configs/variants/`` (a partial config merged over the base, with another seed) generates a
test fleet and judges the trained models on all of its vehicles with ``training.evaluate.evaluate_run`` (the one
judge, ``training.judge``; fixed-limit and per-vehicle z-score baselines from ``training.detectors``).
``--leave-one-mode-out``: for each trained failure mode m, a training fleet without m (its rate 0; common random
numbers keep every other failure where it was) is trained and judged on the in-domain test fleet: recall on m.

Prints the data hash of every fleet and the exact command; writes ``<out>/domain_shift.json`` and
``<out>/domain_shift.md``; with ``--publish`` the Markdown goes into docs/EVALUATION.md and the README's results
table (between the ``domain-shift`` markers).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.settings import Config, apply_overrides, config_from_dict  # noqa: E402
from simulation.failures import FAILURE_MODES  # noqa: E402
from simulation.writer import write_run  # noqa: E402
from training.dataset import prepare_dataset, read_card  # noqa: E402
from training.evaluate import evaluate_run  # noqa: E402
from training.train import train_all  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- domain-shift:begin -->", "<!-- domain-shift:end -->"
TEST_SEED_OFFSET = 1000  # test fleets: other vehicles than the training fleet's
DETECTORS = (("lstm_ae", "model"), ("fixed_limits", "fixed limits"), ("vehicle_zscore", "z-score"))


def deep_merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` laid over it, section by section (a value that is not a section replaces)."""
    out = dict(base)
    for key, value in change.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def variant_document(base: dict[str, Any], variant_path: Path) -> tuple[dict[str, Any], str]:
    """The full config document of a variant (its ``description`` aside) and that description."""
    change = json.loads(variant_path.read_text())
    description = str(change.pop("description", ""))
    return deep_merge(base, change), description


def sized(document: dict[str, Any], vehicles: int, days: float, failure_rate_multiplier: float) -> dict[str, Any]:
    """The fleet size of this bench; the failure-rate lever gives a small fleet enough failures to count
    (it moves failure times only: physics, sensors and the healthy vehicles are the default fleet's)."""
    return deep_merge(document, {"simulation": {"num_vehicles": vehicles, "duration_days_per_vehicle": days,
                                                "levers": {"failure_rate_multiplier": failure_rate_multiplier}}})


def build_fleet(cfg: Config, run: Path, workers: int, all_test: bool) -> tuple[dict, float]:
    """Generate and prepare one fleet; returns its dataset card and the seconds it took."""
    began = time.perf_counter()
    write_run(cfg, run, overwrite=True, workers=workers)
    card = prepare_dataset(run, cfg, all_test=all_test, workers=workers)
    return card, time.perf_counter() - began


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one evaluation that go into the table, per detector."""
    seven = report["failure"].get("7", {})
    row: dict[str, Any] = {"data_hash": report["data_hash"], "vehicles": report["vehicles"], "windows": report["windows"]}
    for key, _ in DETECTORS:
        anomaly = report["anomaly"][key]
        row[key] = {
            "events": anomaly["events"], "detected": anomaly["detected"], "recall": anomaly["event_recall"],
            "false_alarms_per_100_vehicle_days": anomaly["false_alarms_per_100_vehicle_days"],
            "lead_median_days": anomaly["lead_median_days"],
            "sensor_fault_recall": anomaly["sensor_faults"]["all"]["recall"],
            "sensor_faults": anomaly["sensor_faults"]["all"]["faults"],
            "roc_auc_7d": seven.get("model" if key == "lstm_ae" else key, {}).get("roc_auc"),
        }
    row["per_mode_recall"] = report["anomaly"]["lstm_ae"].get("per_mode_recall", {})
    return row


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any]) -> str:
    """The tables: per variant, the model (failure risk for ROC-AUC, LSTM-AE alerts) beside both baselines."""
    lines = [
        f"Produced by `{result['command']}` at commit `{result['commit']}` ({result['date']}).",
        f"Training fleet: {result['train']['vehicles']} vehicles x {result['train']['days']:g} days from "
        f"`{result['base']}` (seed {result['train']['seed']}), data hash `{result['train']['data_hash']}`; each test "
        f"fleet: {result['test_vehicles']} vehicles x {result['test_days']:g} days, seed {result['test_seed']}; "
        f"failure rates x{result['failure_rate_multiplier']:g} in every fleet (enough failures to count; physics, "
        "sensors and healthy vehicles are untouched by it). "
        "Recall = failures with an alert in their lead window (anomaly alerts, `training.judge`); false alarms per "
        "100 healthy vehicle-days; lead = median days from first alert to failure; sensor-fault recall = sensor "
        "faults with an alert during them; ROC-AUC = 7-day failure risk (model) or the baseline's score, per window.",
        "Each cell: model / fixed limits / z-score.",
        "",
        "| variant | data hash | failures | recall | false alarms /100 veh-d | median lead d | sensor-fault recall "
        "| 7-d ROC-AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        def cell(metric: str, digits: int = 2, row: dict[str, Any] = row) -> str:
            return " / ".join(_fmt(row[key][metric], digits) for key, _ in DETECTORS)
        lines.append(f"| {name} | `{row['data_hash']}` | {row['lstm_ae']['events']} | {cell('recall')} | "
                     f"{cell('false_alarms_per_100_vehicle_days')} | {cell('lead_median_days', 1)} | "
                     f"{cell('sensor_fault_recall')} | {cell('roc_auc_7d')} |")
    unseen = {name: row["per_mode_recall"] for name, row in result["variants"].items()}
    mode_rows = sorted({mode for modes in unseen.values() for mode in modes})
    if mode_rows:
        lines += ["", "Model (LSTM-AE) recall per failure mode and variant (events in brackets):", "",
                  "| mode | " + " | ".join(unseen) + " |", "|---|" + "---|" * len(unseen)]
        for mode in mode_rows:
            cells = [f"{_fmt(m[mode]['event_recall'])} ({m[mode]['events']})" if mode in m else "-" for m in unseen.values()]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    if result.get("leave_one_mode_out"):
        lines += ["", "Leave one mode out: trained on a fleet without mode m (its rate 0), judged on the in-domain "
                  "test fleet; recall on m of the LSTM-AE alerts and the 7-day risk ROC-AUC for m "
                  "(beside the model trained with every mode).", "",
                  "| mode left out | train data hash | events of m | recall on m without m | recall on m with m | "
                  "7-d ROC-AUC on m without m | with m |", "|---|---|---|---|---|---|---|"]
        for mode, row in result["leave_one_mode_out"].items():
            lines.append(f"| {mode} | `{row['train_data_hash']}` | {row['events']} | {_fmt(row['recall_without'])} | "
                         f"{_fmt(row['recall_with'])} | {_fmt(row['roc_auc_without'])} | {_fmt(row['roc_auc_with'])} |")
        skipped = [m for m in FAILURE_MODES if m not in result["leave_one_mode_out"]]
        if skipped:
            lines.append(f"\nNot run in this invocation (time): {', '.join(skipped)}.")
    lines += ["", f"Wall time {result['seconds']:.0f} s, load average at the start {result['load_average']}."]
    return "\n".join(lines) + "\n"


def publish(text: str, path: Path, heading: str) -> None:
    """Put ``text`` between the markers in ``path`` (appended under ``heading`` the first time)."""
    block = f"{MARK_BEGIN}\n{text}{MARK_END}"
    current = path.read_text() if path.exists() else ""
    if MARK_BEGIN in current and MARK_END in current:
        before, rest = current.split(MARK_BEGIN, 1)
        after = rest.split(MARK_END, 1)[1]
        path.write_text(before + block + after)
    else:
        path.write_text(current.rstrip("\n") + f"\n\n{heading}\n\n{block}\n")


def _mode_figures(report: dict[str, Any], mode: str) -> tuple[int, float | None, float | None]:
    recall = report["anomaly"]["lstm_ae"].get("per_mode_recall", {}).get(mode, {})
    roc = report["failure"].get("7", {}).get("per_mode", {}).get(mode, {}).get("roc_auc")
    return int(recall.get("events", 0)), recall.get("event_recall"), roc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="configs/benchmark.json", help="config of the training fleet and models")
    parser.add_argument("--variants", nargs="*", default=None, help="variant files (default: configs/variants/*.json)")
    parser.add_argument("--vehicles", type=int, default=40)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--test-vehicles", type=int, default=16)
    parser.add_argument("--test-days", type=float, default=30.0)
    parser.add_argument("--failure-rate-multiplier", type=float, default=3.0,
                        help="simulation.levers.failure_rate_multiplier of every fleet (enough failures in a small fleet)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the base config for every fleet (e.g. training.lstm_epochs=3)")
    parser.add_argument("--leave-one-mode-out", nargs="*", default=None, metavar="MODE",
                        help="also train without each mode (all trained modes when none are named)")
    parser.add_argument("--out", default="runs/domain_shift")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--publish", action="store_true", help="write the table into docs/EVALUATION.md and README.md")
    parser.add_argument("--publish-existing", default=None, metavar="JSON",
                        help="only publish the tables of an earlier run's domain_shift.json (no fleets are built)")
    args = parser.parse_args(argv)
    if args.publish_existing:
        publish_markdown(markdown(json.loads(Path(args.publish_existing).read_text())))
        return 0
    began = time.perf_counter()
    command = "python bench/bench_domain_shift.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"command: {command}\nload average: {load}", flush=True)
    out = Path(args.out)
    base_document = apply_overrides(json.loads((ROOT / args.base).read_text()), args.set)
    train_cfg = config_from_dict(sized(base_document, args.vehicles, args.days, args.failure_rate_multiplier))
    test_seed = train_cfg.seed + TEST_SEED_OFFSET
    print(f"training fleet: {args.vehicles} vehicles x {args.days:g} days, seed {train_cfg.seed}; test fleets: "
          f"{args.test_vehicles} vehicles x {args.test_days:g} days, seed {test_seed}; failure rates x"
          f"{args.failure_rate_multiplier:g}", flush=True)

    train_run = out / "train"
    card, seconds = build_fleet(train_cfg, train_run, args.workers, all_test=False)
    print(f"train fleet data hash {card['data_hash']} ({seconds:.0f} s to generate and prepare)", flush=True)
    t = time.perf_counter()
    train_all(train_run, train_cfg)
    print(f"trained in {time.perf_counter() - t:.0f} s", flush=True)

    lomo: dict[str, dict[str, Any]] = {}

    def save() -> str:
        """Write what is measured so far (after every fleet: a run cut short still leaves its figures)."""
        result = {
            "command": command, "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "base": args.base, "load_average": load,
            "train": {"vehicles": args.vehicles, "days": args.days, "seed": train_cfg.seed,
                      "data_hash": read_card(train_run)["data_hash"]},
            "failure_rate_multiplier": args.failure_rate_multiplier, "test_vehicles": args.test_vehicles,
            "test_days": args.test_days, "test_seed": test_seed,
            "variants": variants, "leave_one_mode_out": lomo, "seconds": time.perf_counter() - began,
        }
        text = markdown(result)
        (out / "domain_shift.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        (out / "domain_shift.md").write_text(text)
        return text

    paths = [Path(p) for p in args.variants] if args.variants else sorted((ROOT / "configs" / "variants").glob("*.json"))
    variants: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {}
    for path in paths:
        test_document = sized(base_document, args.test_vehicles, args.test_days, args.failure_rate_multiplier)
        document, description = variant_document(test_document, path)
        document["seed"] = test_seed
        cfg = config_from_dict(document)
        run = out / f"test-{path.stem}"
        t = time.perf_counter()
        test_card, _ = build_fleet(cfg, run, args.workers, all_test=True)
        report = evaluate_run(train_run, cfg, run)
        reports[path.stem] = report
        variants[path.stem] = {**summarise(report), "description": description}
        model = variants[path.stem]["lstm_ae"]
        print(f"{path.stem}: data hash {test_card['data_hash']}, recall {_fmt(model['recall'])} at "
              f"{_fmt(model['false_alarms_per_100_vehicle_days'])} FA/100 veh-d, 7-d ROC-AUC {_fmt(model['roc_auc_7d'])} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
        save()

    if args.leave_one_mode_out is not None:
        reference_name = "default_other_seed" if "default_other_seed" in reports else next(iter(reports))
        reference_run = out / f"test-{reference_name}"
        for mode in args.leave_one_mode_out or list(FAILURE_MODES):
            if mode not in FAILURE_MODES:
                raise SystemExit(f"--leave-one-mode-out: {mode!r} is not a trained mode ({', '.join(FAILURE_MODES)})")
            rates = dict(train_cfg.simulation.failure_mode_rates, **{mode: 0.0})
            cfg = config_from_dict(deep_merge(sized(base_document, args.vehicles, args.days, args.failure_rate_multiplier),
                                              {"simulation": {"failure_mode_rates": rates}}))
            run = out / f"train-without-{mode}"
            t = time.perf_counter()
            without_card, _ = build_fleet(cfg, run, args.workers, all_test=False)
            if without_card["data_hash"] == read_card(train_run)["data_hash"]:  # m never happened in training
                report = reports[reference_name]
            else:
                train_all(run, cfg)
                report = evaluate_run(run, cfg, reference_run)
            events, recall_without, roc_without = _mode_figures(report, mode)
            _, recall_with, roc_with = _mode_figures(reports[reference_name], mode)
            lomo[mode] = {"train_data_hash": without_card["data_hash"], "events": events, "recall_without": recall_without,
                          "recall_with": recall_with, "roc_auc_without": roc_without, "roc_auc_with": roc_with}
            print(f"without {mode}: recall on it {_fmt(recall_without)} (with it {_fmt(recall_with)}), "
                  f"{events} events ({time.perf_counter() - t:.0f} s)", flush=True)
            save()

    text = save()
    print(text)
    if args.publish:
        publish_markdown(text)
    return 0


def publish_markdown(text: str) -> None:
    publish(text, ROOT / "docs" / "EVALUATION.md", "## Domain shift (train on the default fleet, test on variants)")
    publish(text, ROOT / "README.md", "### Domain shift")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
