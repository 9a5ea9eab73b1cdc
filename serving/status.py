"""``evtwin status``: the fleet at a glance: streams, twins, alerts by state and rule, model versions, drift.

    evtwin status --run runs/default            # asks the running server, reads the run's models and drift
    evtwin status --run runs/default --json

Twins and alerts come from the server (gRPC, operator token), open streams from its metrics endpoint
(``serving.metrics_port``; None when it is off or does not answer), model versions and the drift level
from the run folder.

>>> metric_value('evtwin_open_streams 3.0\\nevtwin_frames_total{outcome="applied"} 5.0\\n', "evtwin_open_streams")
3.0
"""
from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from training.artifacts import MODELS_DIR
from training.features import FEATURES_HASH

STATUS_ALERT_LIMIT = 1_000_000  # ListAlerts limit: every alert the server holds
DRIFT_FILE = Path("drift") / "drift.json"


def metric_value(exposition: str, name: str) -> float | None:
    """Sum of the samples of ``name`` in a Prometheus text exposition (None if absent)."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    values = [float(m.group(1)) for m in re.finditer(pattern, exposition, re.M)]
    return sum(values) if values else None


def open_streams(metrics_url: str | None, timeout_s: float = 2.0) -> float | None:
    """Open telemetry streams from the front door's metrics endpoint; None when there is none."""
    if not metrics_url:
        return None
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as reply:  # noqa: S310 (our own endpoint)
            return metric_value(reply.read().decode(), "evtwin_open_streams")
    except OSError:
        return None


def model_versions(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per model folder: the data it was trained on, a digest of its files, and whether this code can load it."""
    versions = {}
    for meta_path in sorted((run_dir / MODELS_DIR).glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        digests = meta.get("sha256") or {}
        versions[meta_path.parent.name] = {
            "data_hash": meta.get("data_hash", ""),
            "digest": next(iter(sorted(digests.values())), "")[:12],
            "trained_ms": int(meta_path.stat().st_mtime * 1000),
            "loadable": meta.get("features_hash") == FEATURES_HASH,
        }
    return versions


def drift_level(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / DRIFT_FILE
    if not path.exists():
        return None
    drift = json.loads(path.read_text())
    return {"level": float(drift["level"]), "alert_level": drift.get("alert_level"),
            "worst_feature": drift["features"][0]["feature"] if drift.get("features") else "",
            "computed_ms": drift.get("computed_ms")}


async def gather_status(client: Any, run_dir: Path | None, metrics_url: str | None) -> dict[str, Any]:
    """Everything ``evtwin status`` shows, as plain data (``--json`` prints it as is)."""
    twins = await client.list_twins()
    alerts = await client.list_alerts(limit=STATUS_ALERT_LIMIT)
    states = Counter((a.get("lifecycle") or {}).get("state") or "open" for a in alerts)
    rules = Counter(str(a["rule"]) for a in alerts)
    return {
        "twins": len(twins),
        "open_streams": open_streams(metrics_url),
        "alerts": len(alerts),
        "alerts_by_state": dict(sorted(states.items())),
        "alerts_by_rule": dict(sorted(rules.items())),
        "models": model_versions(run_dir) if run_dir is not None else {},
        "drift": drift_level(run_dir) if run_dir is not None else None,
    }


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title="evtwin status")
    table.add_column("what")
    table.add_column("now")
    streams = status["open_streams"]
    table.add_row("telemetry streams", "unknown (serving.metrics_port off)" if streams is None else f"{streams:.0f}")
    table.add_row("twins", str(status["twins"]))
    table.add_row("alerts", str(status["alerts"]))
    for state, count in status["alerts_by_state"].items():
        table.add_row(f"  {state}", str(count))
    for rule, count in status["alerts_by_rule"].items():
        table.add_row(f"  rule {rule}", str(count))
    for name, version in status["models"].items():
        flag = "" if version["loadable"] else " [red](other feature set: retrain)[/red]"
        table.add_row(f"model {name}", f"data {version['data_hash'][:12]} files {version['digest']}{flag}")
    drift = status["drift"]
    if drift is None:
        table.add_row("drift", "not computed (evtwin drift --run RUN)")
    else:
        over = drift["alert_level"] is not None and drift["level"] > float(drift["alert_level"])
        colour = "red" if over else "green"
        table.add_row("drift", f"[{colour}]{drift['level']:.3f}[/{colour}] (worst {drift['worst_feature']}, "
                               f"alert above {drift['alert_level']})")
    return table
