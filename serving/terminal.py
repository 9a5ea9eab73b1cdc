"""How an alert reads on a terminal (``evtwin stream``, ``evtwin alerts``, ``evtwin demo``).

>>> alert_line({"ts_ms": 0, "vehicle_id": "V1", "rule": "anomaly", "score": 1.5, "signals": [("soc", 0.5)]})
'[yellow]ALERT[/yellow] 1970-01-01 00:00 V1 anomaly score 1.50: soc 50%'
"""
from __future__ import annotations

import time
from typing import Any


def alert_line(alert: dict[str, Any]) -> str:
    """One line: time, vehicle, rule (and mode), score and the three strongest signals."""
    ts = time.strftime("%Y-%m-%d %H:%M", time.gmtime(alert["ts_ms"] / 1000))
    if alert["rule"] == "failure_risk":  # LightGBM contributions, in log-odds
        signals = ", ".join(f"{name} {value:+.2f}" for name, value in alert["signals"][:3])
    else:  # shares of the reconstruction error (or of the faulty fields)
        signals = ", ".join(f"{name} {share:.0%}" for name, share in alert["signals"][:3])
    mode = f" [{alert['mode']}]" if alert.get("mode") else ""
    return f"[yellow]ALERT[/yellow] {ts} {alert['vehicle_id']} {alert['rule']}{mode} score {alert['score']:.2f}: {signals}"
