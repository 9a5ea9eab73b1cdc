"""The personalisation comparison (false alarms at equal event recall) and its section in the evaluation report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.evaluate import (
    PERSONALISATION_FILE,
    equal_recall_comparison,
    frontier_false_alarms,
    personalisation_markdown,
    read_personalisation,
    report_markdown,
    wilson_interval,
)

LEVELS = np.array([0.5, 1.0, 2.0])


def synthetic_counts(challenger_false_alarms: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """40 healthy vehicles and 40 failing ones (one failure each); rows = vehicles, columns = LEVELS.

    Both variants detect the same failures at each level (recall 0.75, 0.5, 0.25); the fleet-only variant
    raises 2/1/0 false alarms per healthy vehicle, the challenger ``challenger_false_alarms``.
    """
    healthy = np.array([True] * 40 + [False] * 40)
    events = np.array([0] * 40 + [1] * 40)
    detected = np.zeros((40, 3), dtype=np.int64)
    detected[:30, 0], detected[:20, 1], detected[:10, 2] = 1, 1, 1
    fleet = np.vstack([np.tile([2, 1, 0], (40, 1)), detected])
    personal = np.vstack([np.tile(challenger_false_alarms, (40, 1)), detected])
    return {"fleet only": fleet, "personalised": personal}, healthy, events


def compare(challenger: list[int]) -> dict:
    counts, healthy, events = synthetic_counts(challenger)
    result = equal_recall_comparison(counts, healthy, events, days_per_vehicle=10.0, levels=LEVELS,
                                     recall_targets=(0.25, 0.75), reference_level=1.0, bootstrap=200, seed=3)
    result.update(command="python bench/bench_personalisation.py --vehicles 100", models="runs/x", seed=1001,
                  vehicles=100, days=10.0, failure_rate_multiplier=1.0, fine_tune_every_windows=48,
                  head={"quantile": 0.5, "max_offset": 2.0, "mean_final_version": 3.0})
    return result


def test_wilson_interval_and_frontier_by_hand() -> None:
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17
    assert wilson_interval(5, 0) == (0.0, 1.0)
    # The frontier is the best level reaching the recall, not the nearest level.
    assert frontier_false_alarms(np.array([0.8, 0.6, 0.7]), np.array([9.0, 1.0, 4.0]), 0.65) == (4.0, 2)
    fa, index = frontier_false_alarms(np.array([0.1]), np.array([1.0]), 0.5)
    assert np.isnan(fa) and index == -1


def test_a_challenger_with_half_the_false_alarms_at_equal_recall_is_met() -> None:
    result = compare([1, 0, 0])  # half (or none) of the fleet-only false alarms, same detections
    assert result["verdict"] == "met"
    assert result["failures"] == 40 and result["healthy_vehicles"] == 40 and result["healthy_vehicle_days"] == 400
    assert result["headline_recall"] == 0.5  # fleet-only recall at level 1.0
    by_target = {row["recall_at_least"]: row for row in result["equal_recall"]}
    headline = by_target[0.5]
    assert headline["headline"]
    assert headline["fleet only"]["false_alarms_per_100_vd"] == pytest.approx(10.0)  # 40 alarms / 400 vd
    assert headline["personalised"]["false_alarms_per_100_vd"] == 0.0
    assert headline["difference"] == pytest.approx(-10.0) and headline["difference_ci"][1] < 0
    assert headline["fleet only"]["recall_ci"][0] < 0.5 < headline["fleet only"]["recall_ci"][1]
    assert by_target[0.75]["personalised"]["level"] == 0.5


def test_an_identical_challenger_is_not_met_and_a_worse_one_is_flagged() -> None:
    same = compare([2, 1, 0])
    assert same["verdict"] == "not met" and not same["significantly_better_at"]
    worse = compare([3, 2, 0])
    assert worse["verdict"] == "not met" and 0.5 in worse["significantly_worse_at"]


def test_unreachable_recall_is_reported_not_invented() -> None:
    counts, healthy, events = synthetic_counts([1, 0, 0])
    result = equal_recall_comparison(counts, healthy, events, 10.0, LEVELS, (0.9,), 1.0, bootstrap=50)
    row = next(r for r in result["equal_recall"] if r["recall_at_least"] == 0.9)
    assert row["fleet only"] is None and row["personalised"] is None and "difference" not in row


def test_comparison_refuses_a_sample_without_failures() -> None:
    counts, healthy, _ = synthetic_counts([1, 0, 0])
    with pytest.raises(ValueError, match="failures"):
        equal_recall_comparison(counts, healthy, np.zeros(80, dtype=np.int64), 10.0, LEVELS, (0.5,), 1.0)


def minimal_report() -> dict:
    detector = {"alert_threshold": 1.0, "detected": 1, "events": 2, "event_recall": 0.5,
                "false_alarms_per_100_vehicle_days": 1.0, "lead_median_days": 2.0, "lead_p10_days": 1.0,
                "pointwise_precision": 0.5, "pointwise_recall": 0.5,
                "sensor_faults": {"all": {"recall": 0.5, "faults": 2}}}
    return {"model_run": "runs/x", "evaluated_on": "runs/x (test split)", "vehicles": 2, "windows": 10,
            "data_hash": "h", "model_data_hash": "h", "alert_budget_per_100_vehicle_days": 1.0, "targets": [],
            "baseline_wins": [], "failure": {}, "severity": {"note": "none"}, "anomaly": {"lstm_ae": detector}}


def test_the_report_renders_the_personalisation_section_from_the_result_file(tmp_path: Path) -> None:
    assert read_personalisation(tmp_path) is None
    assert "Personalisation" not in report_markdown(minimal_report())
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / PERSONALISATION_FILE).write_text(json.dumps(compare([1, 0, 0])))
    report = minimal_report() | {"personalisation": read_personalisation(tmp_path)}
    text = report_markdown(report)
    section = text[text.index("## Personalisation: false alarms at equal event recall"):]
    assert "Verdict: **met**" in section
    assert "100 vehicles x 10 days, seed 1001" in section
    assert "40 healthy vehicles" in section and "40 failures" in section and "400 vehicle-days" in section
    headline = next(line for line in section.splitlines() if line.startswith("| 0.50 (headline)"))
    assert "10.00 [" in headline and "0.00 [" in headline and "-10.00 [" in headline
    assert "Command: `python bench/bench_personalisation.py --vehicles 100`" in section
    not_met = personalisation_markdown(compare([2, 1, 0]))
    assert not_met[0] == "# Personalisation: false alarms at equal event recall"
    assert "Verdict: **not met**" in "\n".join(not_met)


def test_the_section_names_the_head_and_the_cold_start_hold_when_the_result_has_them() -> None:
    result = compare([1, 0, 0])
    older = "\n".join(personalisation_markdown(result))
    assert "excess" not in older and "cold-start" not in older  # results from before both render as before
    result["head"] |= {"kind": "excess over the fleet's per-signal normal error", "prior_windows": 48,
                       "reference": "model meta"}
    result["anomaly_warmup_windows"] = 24
    text = "\n".join(personalisation_markdown(result))
    assert "excess over the fleet's per-signal normal error, quantile 0.5, shrunk with 48 prior windows" in text
    assert "first 24 windows" in text and "reference: model meta" in text
    assert "capped at 2x the reference" in text and "trained on another fleet" not in text
    result["head"] |= {"prior_windows": 0, "max_offset": None}
    result["fleet_config"] = "configs/benchmark.json"
    text = "\n".join(personalisation_markdown(result))
    assert "quantile 0.5, not shrunk, uncapped" in text
    assert "trained on another fleet; this fleet generated with the simulation section of `configs/benchmark.json`" in text


def test_a_foreign_result_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / PERSONALISATION_FILE).write_text(json.dumps({"verdict": "met"}))
    with pytest.raises(ValueError, match="missing"):
        read_personalisation(tmp_path)
