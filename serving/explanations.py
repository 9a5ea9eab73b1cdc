"""Alert explanations: the alert's own evidence plus retrieval from a LanceDB index.

The index holds two tables under one folder (``<run>/explanations``):

* ``knowledge``: failure-mode and sensor-fault knowledge (``configs/knowledge/failure_modes.json``),
* ``alerts``: past alerts with the outcome a reliability engineer later recorded (confirmed failure
  mode, sensor fault, or false alarm), so "alerts like this one were ..." comes from the fleet's history.

Vectors come from :class:`serving.embedding.SignalTextEmbedder`, which needs no download.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.embedding import SignalTextEmbedder

KNOWLEDGE_PATH = Path(__file__).resolve().parent.parent / "configs" / "knowledge" / "failure_modes.json"
KNOWLEDGE_TABLE = "knowledge"
ALERTS_TABLE = "alerts"


@dataclass(frozen=True)
class AlertEvidence:
    """What an alert knows about itself: signed evidence per signal or feature, and a summary line."""

    alert_id: str
    vehicle_id: str
    ts_ms: int
    kind: str
    evidence: Mapping[str, float]
    summary: str = ""

    def top_drivers(self, k: int = 3) -> list[tuple[str, float]]:
        finite = [(name, float(v)) for name, v in self.evidence.items() if np.isfinite(v)]
        return sorted(finite, key=lambda item: -abs(item[1]))[:k]


@dataclass(frozen=True)
class KnowledgeMatch:
    entry_id: str
    mode: str
    title: str
    action: str
    similarity: float


@dataclass(frozen=True)
class SimilarAlert:
    alert_id: str
    vehicle_id: str
    outcome: str
    similarity: float


@dataclass(frozen=True)
class Explanation:
    alert_id: str
    drivers: list[tuple[str, float]]
    matches: list[KnowledgeMatch]
    similar_alerts: list[SimilarAlert] = field(default_factory=list)

    @property
    def likely_mode(self) -> str | None:
        return self.matches[0].mode if self.matches else None

    def text(self) -> str:
        """Plain-language explanation for an operator."""
        lines = []
        if self.drivers:
            described = ", ".join(f"{name} ({'+' if value > 0 else ''}{value:.2g})" for name, value in self.drivers)
            lines.append(f"Driven by: {described}.")
        if self.matches:
            best = self.matches[0]
            lines.append(f"Closest known pattern: {best.title} (similarity {best.similarity:.2f}). {best.action}")
        if self.similar_alerts:
            outcomes: dict[str, int] = {}
            for alert in self.similar_alerts:
                outcomes[alert.outcome] = outcomes.get(alert.outcome, 0) + 1
            summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items(), key=lambda x: -x[1]))
            lines.append(f"{len(self.similar_alerts)} similar past alerts: {summary}.")
        return " ".join(lines) or "No evidence recorded for this alert."


def evidence_from_alert(alert: Mapping) -> AlertEvidence:
    """An alert as the twins and the wire carry it (dict with ``signals`` as (name, value) pairs)."""
    return AlertEvidence(
        alert_id=str(alert["alert_id"]), vehicle_id=str(alert["vehicle_id"]), ts_ms=int(alert["ts_ms"]),
        kind=str(alert["rule"]), evidence={str(name): float(value) for name, value in alert.get("signals", ())},
        summary=str(alert.get("message") or ""),
    )


def load_knowledge(path: Path = KNOWLEDGE_PATH) -> list[dict]:
    document = json.loads(Path(path).read_text())
    return list(document["entries"])


def _similarity(distance: float) -> float:
    return float(1.0 - distance)


class ExplanationIndex:
    """A LanceDB-backed index of failure-mode knowledge and past alerts."""

    def __init__(self, uri: str | Path, embedder: SignalTextEmbedder | None = None,
                 knowledge: Sequence[dict] | None = None) -> None:
        import lancedb  # heavy (~1.4 s): only when an index is opened, not for every CLI start

        self.embedder = embedder or SignalTextEmbedder()
        self._db = lancedb.connect(str(uri))
        self._knowledge = list(knowledge) if knowledge is not None else load_knowledge()
        self._ensure_knowledge_table()

    def _table_names(self) -> set[str]:
        listed = self._db.list_tables()
        names = getattr(listed, "tables", listed)
        return set(names)

    def _knowledge_rows(self) -> list[dict]:
        return [
            {
                "entry_id": entry["id"], "mode": entry["mode"], "kind": entry["kind"], "title": entry["title"],
                "action": entry["action"], "embedder": self.embedder.version,
                "vector": self.embedder.embed(entry["signals"], entry["title"] + " " + entry["text"]).tolist(),
            }
            for entry in self._knowledge
        ]

    def _ensure_knowledge_table(self) -> None:
        if KNOWLEDGE_TABLE in self._table_names():
            table = self._db.open_table(KNOWLEDGE_TABLE)
            versions = set(table.to_arrow().column("embedder").to_pylist())
            if versions == {self.embedder.version} and table.count_rows() == len(self._knowledge):
                return
        self._db.create_table(KNOWLEDGE_TABLE, data=self._knowledge_rows(), mode="overwrite")

    def _alerts_table(self):
        if ALERTS_TABLE not in self._table_names():
            return None
        table = self._db.open_table(ALERTS_TABLE)
        versions = set(table.to_arrow().column("embedder").to_pylist())
        if versions - {self.embedder.version}:
            raise ValueError(
                f"alerts index was built with embedder {sorted(versions)}, this code uses {self.embedder.version!r}; "
                "re-index the alerts"
            )
        return table

    def _vector(self, alert: AlertEvidence) -> list[float]:
        return self.embedder.embed(alert.evidence, f"{alert.kind} {alert.summary}").tolist()

    def remember(self, alert: AlertEvidence, outcome: str) -> None:
        """Store a past alert with its outcome (a failure mode, ``sensor_fault`` or ``false_alarm``)."""
        row = {
            "alert_id": alert.alert_id, "vehicle_id": alert.vehicle_id, "ts_ms": int(alert.ts_ms),
            "kind": alert.kind, "outcome": outcome, "summary": alert.summary,
            "embedder": self.embedder.version, "vector": self._vector(alert),
        }
        table = self._alerts_table()
        if table is None:
            self._db.create_table(ALERTS_TABLE, data=[row])
            return
        table.delete(f"alert_id = '{_quoted(alert.alert_id)}'")
        table.add([row])

    def count_alerts(self) -> int:
        table = self._alerts_table()
        return 0 if table is None else table.count_rows()

    def explain(self, alert: AlertEvidence, k: int = 3, similar: int = 5) -> Explanation:
        vector = self._vector(alert)
        knowledge = self._db.open_table(KNOWLEDGE_TABLE).search(vector).metric("cosine").limit(k).to_list()
        matches = [
            KnowledgeMatch(row["entry_id"], row["mode"], row["title"], row["action"], _similarity(row["_distance"]))
            for row in knowledge
        ]
        past: list[SimilarAlert] = []
        table = self._alerts_table()
        if table is not None and similar > 0:
            rows = (table.search(vector).metric("cosine").where(f"alert_id != '{_quoted(alert.alert_id)}'")
                    .limit(similar).to_list())
            past = [SimilarAlert(r["alert_id"], r["vehicle_id"], r["outcome"], _similarity(r["_distance"])) for r in rows]
        return Explanation(alert.alert_id, alert.top_drivers(), matches, past)


def _quoted(value: str) -> str:
    return value.replace("'", "''")

