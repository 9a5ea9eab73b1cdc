"""The Grafana dashboard under deploy/grafana: every panel's query names metrics the code exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from serving.drift import prometheus_text
from serving.metrics import exported_metric_names

DASHBOARDS = sorted((Path(__file__).resolve().parents[1] / "deploy" / "grafana").glob("*.json"))
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "le", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions, keywords, label names in
    matchers or grouping clauses, durations or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    expr = re.sub(r"(?<![A-Za-z0-9_:])\d[\d.]*(?:[eE][-+]?\d+)?", "0", expr)  # numbers (1e-9)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = match.group(0), expr[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def drift_metric_names() -> set[str]:
    sample = {"level": 0.1, "features": [{"feature": "f", "psi": 0.1}], "score_psi": {"risk_7d": 0.0},
              "by_profile": {"taxi/hot": {"level": 0.1}}}
    return set(re.findall(r"^# TYPE (\S+) ", prometheus_text(sample), re.M))


def test_the_expression_parser_finds_metrics_and_only_metrics() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, host) (rate(ray_evtwin_twin_persist_seconds_bucket{host="a b"}[5m])))'
            ' / clamp_min(sum(rate(evtwin_frames_total[15m])), 1e-9)')
    assert metric_names(expr) == {"ray_evtwin_twin_persist_seconds_bucket", "evtwin_frames_total"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_only_exported_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    exported = exported_metric_names() | drift_metric_names()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels, f"{path.name}: no panels"
    for panel in panels:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        assert exprs, f"{path.name}: panel {panel['title']!r} has no query"
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"panel {panel['title']!r}: no metric in {expr!r}"
            unknown = names - exported
            assert not unknown, f"panel {panel['title']!r}: {sorted(unknown)} not exported by the code"


def test_a_panel_with_a_misspelt_metric_would_fail() -> None:
    assert metric_names("sum(rate(evtwin_frames_totl[5m]))") - exported_metric_names() == {"evtwin_frames_totl"}


def test_the_dashboard_covers_front_door_twins_models_and_drift() -> None:
    dashboard = json.loads(DASHBOARDS[0].read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Front door", "Twins", "Models", "Drift"]
    used = {n for p in dashboard["panels"] for t in p.get("targets", []) for n in metric_names(t["expr"])}
    assert {"ray_evtwin_twin_frames_total", "evtwin_drift_level", "evtwin_ingest_seconds_bucket"} <= used
