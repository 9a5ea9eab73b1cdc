"""Plain data types the twins exchange with the rest of the system (no proto, no Ray).

>>> alert_id("v1", "anomaly", 42) == alert_id("v1", "anomaly", 42)
True
>>> len(alert_id("v1", "anomaly", 42))
16
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from configs.frames import Rejection  # a refused frame is part of the frame contract; re-exported for the twins


class Rule(StrEnum):
    """The alert rules (a ``str``: equal to, and serialised as, its value)."""

    ANOMALY = "anomaly"
    SENSOR_FAULT = "sensor_fault"
    FAILURE_RISK = "failure_risk"
    MODEL_DRIFT = "model_drift"  # raised by drift monitoring (serving.drift), for the fleet or a vehicle profile


RULES: tuple[str, ...] = tuple(Rule)


def alert_id(vehicle_id: str, rule: str, seq: int, key: str = "") -> str:
    """Stable id: the same vehicle, rule and triggering frame always give the same id (replays dedup).

    ``key`` tells apart alerts of one frame and rule (a sensor fault: ``sensor:kind``) and frames of a later
    counter epoch (``e<epoch>``); empty, the id is the one alerts always had.
    """
    text = f"{vehicle_id}\x1f{rule}\x1f{int(seq)}" + (f"\x1f{key}" if key else "")
    digest = hashlib.blake2b(text.encode(), digest_size=8)
    return digest.hexdigest()


@dataclass(frozen=True)
class Alert:
    """One alert: which vehicle, which rule, the frame that triggered it and the signals that drove it."""

    alert_id: str
    vehicle_id: str
    rule: str
    ts_ms: int
    seq: int
    score: float
    signals: tuple[tuple[str, float], ...]
    message: str
    mode: str | None = None
    risk: dict[int, float] | None = None
    severity: int | None = None

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["signals"] = [list(s) for s in self.signals]
        if self.risk is not None:
            document["risk"] = {str(k): v for k, v in self.risk.items()}
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Alert:
        values = dict(document)
        values["signals"] = tuple((str(n), float(s)) for n, s in values["signals"])
        values["rule"] = Rule(values["rule"])
        if values.get("risk") is not None:
            values["risk"] = {int(k): float(v) for k, v in values["risk"].items()}
        return cls(**values)


@dataclass(frozen=True)
class WindowScore:
    """One closed window's anomaly scores (1 = the fleet model's validated alert level): the fleet model's
    ratio, the twin's own score (through its personal head, or the baseline without a model) and the
    version of the head that produced it (0: none). Recorded scores replayed through
    ``training.alerting`` at any alert level give that twin's alerts (learning never depends on the level)."""

    end_ms: int
    fleet_ratio: float
    score: float
    head_version: int


@dataclass
class TwinStep:
    """What one ``VehicleTwin.ingest`` call did; ``windows``: the windows it closed, in time order."""

    applied_seq: int
    applied: int = 0
    duplicates: int = 0
    buffered: int = 0
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    prediction_due: bool = False
    fine_tune_due: bool = False
    windows: list[WindowScore] = field(default_factory=list)


@dataclass
class IngestResult:
    """Answer of ``TwinFleet.ingest``: durable acks per vehicle, new alerts, refused frames."""

    acks: dict[str, int] = field(default_factory=dict)
    # Per acknowledged vehicle, the ts (ms) of the frame ``acks`` names: the applied watermark in time. A
    # counter restart makes seq fall back while ts moves on, so a client judges durability by (ts, seq).
    ack_ts: dict[str, int] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    # Vehicles whose new state could not be made durable (checkpoint or alert write failed), with the error:
    # their twins were rolled back to the last durable state and their acks did not move; re-send.
    not_durable: dict[str, str] = field(default_factory=dict)

    def merge(self, other: IngestResult) -> None:
        self.acks.update(other.acks)
        self.ack_ts.update(other.ack_ts)
        self.not_durable.update(other.not_durable)
        self.alerts.extend(other.alerts)
        self.rejected.extend(other.rejected)
        self.applied += other.applied
        self.duplicates += other.duplicates


@dataclass(frozen=True)
class AlertFilter:
    vehicle_id: str | None = None
    rule: str | None = None
    since_ms: int | None = None
    limit: int = 1000
    min_severity: int = 0  # 0: any; else alerts whose severity is at least this (no severity counts as 0)

    def matches(self, alert: Alert) -> bool:
        return ((self.vehicle_id is None or alert.vehicle_id == self.vehicle_id)
                and (self.rule is None or alert.rule == self.rule)
                and (self.since_ms is None or alert.ts_ms >= self.since_ms)
                and (self.min_severity == 0 or (alert.severity or 0) >= self.min_severity))
