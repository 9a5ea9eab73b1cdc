"""The fleet report: its numbers (ranking, precision per rule), escaping, and the page in a real headless browser."""
from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.alert_states import AlertState
from configs.schema import SCHEMA
from configs.settings import load_config
from serving.report import ReportInputs, collect_report_inputs, data_quality, ranked_vehicles, render_report, rule_precision
from tests.report_fixture import build_fleet
from twins.types import Alert

SECTIONS = ("summary", "risk", "alerts", "outcomes", "precision", "quality", "drift", "whatif")


def _alert(alert_id: str, rule: str) -> Alert:
    return Alert(alert_id=alert_id, vehicle_id="V1", rule=rule, ts_ms=1, seq=1, score=1.0, signals=(), message="")


def _resolved(alert: Alert, outcome: str) -> AlertState:
    return AlertState(alert.alert_id, alert.vehicle_id, alert.rule, alert.ts_ms, state="resolved", outcome=outcome,
                      mode="coolant_pump" if outcome == "confirmed_failure" else "")


def test_precision_counts_the_outcome_that_makes_each_rule_right() -> None:
    alerts = [_alert("a", "anomaly"), _alert("b", "anomaly"), _alert("c", "anomaly"),
              _alert("s", "sensor_fault"), _alert("t", "sensor_fault"), _alert("u", "failure_risk")]
    states = {"a": _resolved(alerts[0], "confirmed_failure"), "b": _resolved(alerts[1], "false_alarm"),
              "s": _resolved(alerts[3], "sensor_problem"), "t": _resolved(alerts[4], "confirmed_failure")}
    precision = rule_precision(alerts, states)
    assert (precision["anomaly"]["resolved"], precision["anomaly"]["right"], precision["anomaly"]["precision"]) == (2, 1, 0.5)
    assert precision["sensor_fault"]["precision"] == 0.5  # a sensor-fault alert is right when the sensor was wrong
    assert precision["failure_risk"] == {"resolved": 0, "right": 0, "precision": None, "outcomes": {}}


def test_vehicles_rank_by_shortest_horizon_risk_then_longest_then_anomaly() -> None:
    vehicles = [{"vehicle_id": "low", "risk": {"7": 0.1, "30": 0.9}},
                {"vehicle_id": "high", "risk": {"7": 0.5, "30": 0.6}},
                {"vehicle_id": "none", "risk": {}, "anomaly_score": 5.0},
                {"vehicle_id": "tie", "risk": {"30": 0.95, "7": 0.1}}]
    assert [v["vehicle_id"] for v in ranked_vehicles(vehicles)] == ["high", "tie", "low", "none"]


def test_report_from_disk_ranks_real_twins_and_escapes_operator_text(tmp_path: Path) -> None:
    uri = str(tmp_path / "checkpoints")
    ids = build_fleet(uri, vehicles=20, alerts=120, seed=3)
    inputs = collect_report_inputs(tmp_path, load_config(), uri)
    assert sorted(v["vehicle_id"] for v in inputs.vehicles) == ids and len(inputs.alerts) == 120
    page = render_report(inputs)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    top = ranked_vehicles(inputs.vehicles)[0]
    first_row = re.search(r'<tbody><tr><td>1</td><td>([^<]+)</td>', page)
    assert first_row and first_row.group(1) == top["vehicle_id"]
    assert "<b>workshop</b>" not in page and "&lt;b&gt;workshop&lt;/b&gt; &amp; note" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched


# ------------------------------------------------------------------------------------------ browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
WIDTH, HEIGHT = 1280, 1600


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@browser
@pytest.mark.integration
def test_the_page_renders_in_a_headless_browser_without_console_errors(tmp_path: Path) -> None:
    from PIL import Image

    uri = str(tmp_path / "checkpoints")
    build_fleet(uri, vehicles=30, alerts=200, seed=1)
    page = tmp_path / "report.html"
    page.write_text(render_report(collect_report_inputs(tmp_path, load_config(), uri)), encoding="utf-8")
    url = page.as_uri()

    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert f'id="{section}"' in dom.stdout
    assert dom.stdout.count("<svg") >= 3 and "risk-table" in dom.stdout
    assert _console_errors(dom.stderr) == []

    shot = tmp_path / "report.png"
    taken = _chromium(f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url)
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colours = image.getcolors(maxcolors=1 << 20) or []
    white = sum(count for count, rgb in colours if min(rgb) >= 250)
    assert len(colours) > 20 and white < 0.97 * WIDTH * HEIGHT  # text, tables and bars were drawn
    assert _console_errors(taken.stderr) == []


@browser
@pytest.mark.integration
def test_the_console_check_catches_a_script_error(tmp_path: Path) -> None:
    """The check above can fail: a page whose script throws is caught by the same grep."""
    page = tmp_path / "broken.html"
    broken = render_report(ReportInputs(run_name="x", generated_ms=0)).replace(
        "</body>", "<script>undefinedFunction();</script></body>")
    page.write_text(broken, encoding="utf-8")
    dom = _chromium("--dump-dom", page.as_uri())
    assert any("undefinedFunction" in line for line in _console_errors(dom.stderr)), dom.stderr[-2000:]


def test_data_quality_comes_from_the_runs_aggregates_and_faults_and_whatif_is_shown(tmp_path: Path) -> None:
    sensors = SCHEMA.sensor_names
    for vehicle_id, gaps in (("Q1", 0), ("Q2", 2)):
        folder = tmp_path / "aggregates" / "hourly" / f"vehicle_id={vehicle_id}"
        folder.mkdir(parents=True)
        hours = 4
        columns = {"vehicle_id": [vehicle_id] * hours, "period_start_ms": np.arange(hours) * 3_600_000,
                   "frames": [360] * hours}
        for j, name in enumerate(sensors):
            values = np.ones(hours)
            if j == 0:
                values[:] = np.nan  # never fitted on either vehicle
            if j == 1 and gaps:
                values[:gaps] = np.nan  # a dropout on Q2
            columns[f"{name}_mean"] = values
        pq.write_table(pa.table(columns), folder / "part-0.parquet")
    pq.write_table(pa.table({"vehicle_id": ["Q2", "Q2"], "kind": ["stuck", "dropout"], "field": ["soc", "soc"],
                             "start_ms": [0, 1], "end_ms": [1, 2], "magnitude": [0.0, 0.0]}),
                   tmp_path / "sensor_faults.parquet")
    quality = data_quality(tmp_path)
    fitted = len(sensors) - 1
    assert quality["Q1"] == {"fitted": fitted, "sensors": len(sensors), "dropout_share": 0.0, "faults": {}}
    assert quality["Q2"]["dropout_share"] == pytest.approx(2 / (4 * fitted))
    assert quality["Q2"]["faults"] == {"stuck": 1, "dropout": 1}

    (tmp_path / "whatif").mkdir()
    pq.write_table(pa.table({"scenario": ["base"], "policy": ["predictive"], "kpi": ["downtime_h"], "mean": [12.5],
                             "ci_low": [10.0], "ci_high": [15.0], "replications": [8]}),
                   tmp_path / "whatif" / "summary.parquet")
    page = render_report(collect_report_inputs(tmp_path, load_config(), str(tmp_path / "checkpoints")))
    assert "whatif-table" in page and "downtime_h" in page and "predictive" in page
    assert f"<td>Q2</td><td>{fitted}/{len(sensors)}</td>" in page
