"""Alert explanations: likely causes ranked, each with the evidence it rests on, or "no supported explanation".

Sources, all under one LanceDB folder (``<run>/explanations`` for the demo, ``runs/explanations`` for the server):

* ``passages``: the knowledge corpus (``configs/knowledge/{modes,faults}/*.md``), one row per section of a
  document (symptoms, checks, parts, if_ignored, recommended_check), cited as ``<doc id>#<section>``;
  a full-text index (LanceDB FTS, BM25) on the text, and vectors;
* ``alerts``: past alerts with the outcome a reliability engineer recorded (a failure mode, a sensor fault,
  ``false_alarm``), so "alerts like this one turned out to be ..." comes from the fleet's history.

Retrievers, each giving a ranked list of causes (a cause is ranked by its best passage):

* ``signals``: :class:`serving.embedding.SignalTextEmbedder` vectors (the alert's per-field evidence plus
  hashed words) against the documents' signal signatures;
* ``text``: the LanceDB full-text index, queried with the alert's message and the words of its fields;
* ``model``: an optional sentence-embedding model (:class:`serving.embedding.StaticSentenceEmbedder`);
* ``history``: the outcomes of the nearest past alerts, weighted by similarity;
* ``predicted``: the failure model's own suspected mode, when the alert carries one.

They are fused with reciprocal-rank fusion, ``sum_r 1 / (RRF_K + rank_r)``. A cause's *support* is that sum
over the most it could be (first in every retriever that ranked anything, weighted by ``RETRIEVER_WEIGHTS``):
1 = all of them ranked it first. A cause's *coverage* is the share of the alert's evidence on fields its
document names. When the first cause is below ``min_support``, or (a failure mode) below ``min_coverage``, the
answer says it has no supported explanation: ranks alone can be won by a common word.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.embedding import SignalTextEmbedder, StaticSentenceEmbedder, fields_of_feature, signal_words

KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "configs" / "knowledge"
PASSAGES_TABLE = "passages"
ALERTS_TABLE = "alerts"
SECTIONS: tuple[str, ...] = ("symptoms", "checks", "parts", "if_ignored", "recommended_check")
KINDS = ("failure_mode", "sensor_fault")
RRF_K = 10  # small: the corpus has tens of causes, and rank 1 vs rank 5 must differ in support
DEFAULT_MIN_SUPPORT = 0.45
# A failure mode explains an alert only if its document names the fields of at least this share of the evidence.
DEFAULT_MIN_COVERAGE = 0.3
# Retrievers on the alert's own structured evidence count fully; those on its words (a few field names and a
# generic message for an anomaly) half. Set once, a priori; docs/EVALUATION.md reports the effect.
RETRIEVER_WEIGHTS: dict[str, float] = {"signals": 1.0, "text": 0.5, "model": 0.5, "history": 1.0, "predicted": 1.0}
# A vector hit below this cosine similarity is not evidence: it gets no rank in its retriever.
MIN_VECTOR_SIMILARITY = 0.15
HISTORY_NEIGHBOURS = 20
# From this many past alerts on, their vectors get an IVF index (brute force: ~180 ms a query at 100,000 on a
# loaded 2-core machine; IVF_FLAT with 64 partitions: ~11 ms).
ALERTS_ANN_MIN_ROWS = 20_000
FALSE_ALARM = "false_alarm"


# ---------------------------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class Passage:
    passage_id: str  # "<doc id>#<section>"
    doc_id: str
    cause: str
    kind: str
    section: str
    text: str


@dataclass(frozen=True)
class KnowledgeDocument:
    """One document of the corpus: a failure mode or a sensor fault kind, in sections."""

    doc_id: str
    kind: str
    cause: str
    title: str
    signals: Mapping[str, float]
    sections: Mapping[str, str]

    @property
    def action(self) -> str:
        return self.sections["recommended_check"]

    def passages(self) -> list[Passage]:
        return [Passage(f"{self.doc_id}#{name}", self.doc_id, self.cause, self.kind, name, text)
                for name, text in self.sections.items()]


def _section_key(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", heading.strip().lower()).strip("_")


def parse_document(text: str, source: str = "<text>") -> KnowledgeDocument:
    """A knowledge document: a ``---`` header of ``key: value`` lines, then ``## Section`` paragraphs.

    >>> doc = parse_document("---\\nid: mode/x\\nkind: failure_mode\\ncause: x\\ntitle: X\\nsignals: soc=-1\\n---\\n"
    ...                      "## Symptoms\\na\\n## Checks\\nb\\n## Parts\\nc\\n## If ignored\\nd\\n## Recommended check\\ne\\n")
    >>> doc.signals, doc.action, doc.passages()[1].passage_id
    ({'soc': -1.0}, 'e', 'mode/x#checks')
    """
    parts = text.split("---", 2)
    if len(parts) != 3 or parts[0].strip():
        raise ValueError(f"{source}: a knowledge document starts with a '---' header block")
    header: dict[str, str] = {}
    for line in parts[1].strip().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{source}: header line {line!r} is not 'key: value'")
        header[key.strip()] = value.strip()
    missing = [k for k in ("id", "kind", "cause", "title") if not header.get(k)]
    if missing:
        raise ValueError(f"{source}: header lacks {missing}")
    if header["kind"] not in KINDS:
        raise ValueError(f"{source}: kind={header['kind']!r}, expected one of {KINDS}")
    signals: dict[str, float] = {}
    for item in header.get("signals", "").split():
        name, sep, value = item.partition("=")
        try:
            signals[name] = float(value)
        except ValueError:
            raise ValueError(f"{source}: signals item {item!r} is not name=number") from None
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", parts[2], flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        sections[_section_key(heading)] = " ".join(body.split())
    absent = [s for s in SECTIONS if not sections.get(s)]
    if absent:
        raise ValueError(f"{source}: sections {absent} are missing or empty (each document needs {SECTIONS})")
    return KnowledgeDocument(header["id"], header["kind"], header["cause"], header["title"], signals, sections)


def load_knowledge(folder: Path = KNOWLEDGE_DIR) -> list[KnowledgeDocument]:
    """Every ``*.md`` document under ``folder`` (recursively), sorted by id; ids must be unique."""
    documents = [parse_document(p.read_text(), str(p)) for p in sorted(Path(folder).rglob("*.md"))]
    if not documents:
        raise ValueError(f"no knowledge documents (*.md) under {folder}")
    ids = [d.doc_id for d in documents]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"knowledge document ids {duplicated} appear more than once under {folder}")
    return sorted(documents, key=lambda d: d.doc_id)


def corpus_digest(documents: Sequence[KnowledgeDocument]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(repr((doc.doc_id, doc.kind, doc.cause, doc.title, sorted(doc.signals.items()),
                            sorted(doc.sections.items()))).encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- alerts
@dataclass(frozen=True)
class AlertEvidence:
    """What an alert knows about itself: signed evidence per signal or feature, and a summary line."""

    alert_id: str
    vehicle_id: str
    ts_ms: int
    kind: str
    evidence: Mapping[str, float]
    summary: str = ""
    mode: str = ""  # the failure model's suspected mode, "" when none

    def top_drivers(self, k: int = 3) -> list[tuple[str, float]]:
        finite = [(name, float(v)) for name, v in self.evidence.items() if np.isfinite(v)]
        return sorted(finite, key=lambda item: -abs(item[1]))[:k]


def evidence_from_alert(alert: Mapping) -> AlertEvidence:
    """An alert as the twins and the wire carry it (dict with ``signals`` as (name, value) pairs)."""
    return AlertEvidence(
        alert_id=str(alert["alert_id"]), vehicle_id=str(alert["vehicle_id"]), ts_ms=int(alert["ts_ms"]),
        kind=str(alert["rule"]), evidence={str(name): float(value) for name, value in alert.get("signals", ())},
        summary=str(alert.get("message") or ""), mode=str(alert.get("mode") or ""),
    )


# ---------------------------------------------------------------------------------------------- answers
@dataclass(frozen=True)
class Driver:
    """One signal of the alert, mapped to the telemetry fields it rests on."""

    name: str
    weight: float
    fields: tuple[str, ...]
    sent: bool  # False: the vehicle does not send (all of) these fields, so it is not used as evidence


@dataclass(frozen=True)
class SimilarAlert:
    alert_id: str
    vehicle_id: str
    outcome: str
    similarity: float


@dataclass(frozen=True)
class KnowledgeMatch:
    """One ranked cause. ``entry_id`` is its document id; ``similarity`` is kept for callers that show one
    number (the demo): it is the support."""

    entry_id: str
    mode: str
    title: str
    action: str
    similarity: float
    kind: str = "failure_mode"
    passages: tuple[Passage, ...] = ()
    matched_fields: tuple[str, ...] = ()
    similar: tuple[SimilarAlert, ...] = ()
    retrievers: tuple[str, ...] = ()
    coverage: float = 0.0  # evidence_coverage: share of the alert's evidence on fields this cause names

    @property
    def support(self) -> float:
        return self.similarity


@dataclass(frozen=True)
class Explanation:
    alert_id: str
    drivers: list[tuple[str, float]]
    matches: list[KnowledgeMatch]
    similar_alerts: list[SimilarAlert] = field(default_factory=list)
    supported: bool = True
    min_support: float = DEFAULT_MIN_SUPPORT
    mapped_drivers: list[Driver] = field(default_factory=list)
    min_coverage: float = DEFAULT_MIN_COVERAGE

    @property
    def likely_mode(self) -> str | None:
        return self.matches[0].mode if self.matches and self.supported else None

    def text(self) -> str:
        """Plain-language explanation for an operator."""
        lines = []
        if self.drivers:
            described = ", ".join(f"{name} ({'+' if value > 0 else ''}{value:.2g})" for name, value in self.drivers)
            lines.append(f"Driven by: {described}.")
        unsent = [d.name for d in self.mapped_drivers if not d.sent]
        if unsent:
            lines.append(f"Not used (the vehicle does not send their fields): {', '.join(unsent)}.")
        if self.matches and self.supported:
            best = self.matches[0]
            cited = ", ".join(p.passage_id for p in best.passages[:3])
            lines.append(f"Likely cause: {best.title} (support {best.support:.2f}, covers {best.coverage:.0%} of the "
                         f"evidence; {cited}). {best.action}")
        elif self.matches:
            candidates = ", ".join(f"{m.mode} (support {m.support:.2f}, covers {m.coverage:.0%})" for m in self.matches)
            lines.append(f"No supported explanation: the first cause needs support {self.min_support:.2f} and to cover "
                         f"{self.min_coverage:.0%} of the evidence (candidates: {candidates}).")
        else:
            lines.append("No supported explanation: the alert carries no evidence that the corpus covers.")
        if self.similar_alerts:
            outcomes: dict[str, int] = {}
            for alert in self.similar_alerts:
                outcomes[alert.outcome] = outcomes.get(alert.outcome, 0) + 1
            summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items(), key=lambda x: -x[1]))
            lines.append(f"{len(self.similar_alerts)} similar past alerts: {summary}.")
        return " ".join(lines)


def map_drivers(alert: AlertEvidence, sent_fields: Collection[str] | None, k: int = 5) -> list[Driver]:
    """The alert's strongest signals with the telemetry fields they rest on; ``sent_fields`` None: all sent."""
    drivers = []
    for name, weight in alert.top_drivers(k):
        fields = fields_of_feature(name)
        sent = sent_fields is None or (bool(fields) and all(f in sent_fields for f in fields))
        drivers.append(Driver(name, weight, fields, sent))
    return drivers


def rrf_fuse(rankings: Mapping[str, Sequence[str]], k: int = RRF_K,
             weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Weighted reciprocal-rank fusion normalised to 0..1: 1 when every ranking that has an opinion puts the
    item first (an empty ranking abstains; a retriever without a weight counts 1).

    >>> rrf_fuse({"a": ["x", "y"], "b": ["x"]})
    {'x': 1.0, 'y': 0.4583333333333333}
    >>> {item: round(score, 4) for item, score in rrf_fuse({"a": ["x"], "b": ["y"]}, weights={"a": 2.0}).items()}
    {'x': 0.6667, 'y': 0.3333}
    """
    weights = weights or {}
    rankings = {name: ranked for name, ranked in rankings.items() if ranked}  # an empty ranking abstains
    if not rankings:
        return {}
    best = sum(weights.get(name, 1.0) for name in rankings) / (k + 1)
    scores: dict[str, float] = {}
    for name, ranked in rankings.items():
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + weights.get(name, 1.0) / (k + rank)
    return {item: score / best for item, score in sorted(scores.items(), key=lambda kv: -kv[1])}


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _fts_query(text: str) -> str:
    # The FTS query parser gives meaning to punctuation: keep words only.
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def evidence_coverage(drivers: Sequence[Driver], doc: KnowledgeDocument, rule: str = "anomaly") -> float:
    """Share of the alert's used evidence (|weight| of sent drivers) on fields the document names: how much
    of what the alert saw this cause accounts for. A sensor fault hits one field: for a ``sensor_fault`` alert
    (the twin saw invalid values) 1, for another alert the share of its strongest driver.

    >>> doc = KnowledgeDocument("m", "failure_mode", "m", "M", {"coolant_flow": -1.0}, {})
    >>> round(evidence_coverage([Driver("coolant_flow_mean", 0.6, ("coolant_flow",), True),
    ...                          Driver("soc", -0.2, ("soc",), True)], doc), 6)
    0.75
    """
    if doc.kind == "sensor_fault" and rule == "sensor_fault":
        return 1.0
    used = [d for d in drivers if d.sent and d.fields]
    total = sum(abs(d.weight) for d in used)
    if total <= 0:
        return 0.0
    if doc.kind == "sensor_fault":
        return max(abs(d.weight) for d in used) / total
    covered = sum(abs(d.weight) * sum(f in doc.signals for f in d.fields) / len(d.fields) for d in used)
    return covered / total


def _quoted(value: str) -> str:
    return value.replace("'", "''")


class ExplanationIndex:
    """A LanceDB-backed index of the knowledge corpus and past alerts; see the module docstring."""

    RETRIEVERS = ("signals", "text", "model", "history", "predicted")

    def __init__(self, uri: str | Path, embedder: SignalTextEmbedder | None = None,
                 knowledge: Sequence[KnowledgeDocument] | None = None,
                 text_model: StaticSentenceEmbedder | None = None,
                 retrievers: Collection[str] = ("signals", "text", "model", "history", "predicted"),
                 min_support: float = DEFAULT_MIN_SUPPORT, min_coverage: float = DEFAULT_MIN_COVERAGE,
                 weights: Mapping[str, float] | None = None) -> None:
        import lancedb  # heavy (~1.4 s): only when an index is opened, not for every CLI start

        unknown = sorted(set(retrievers) - set(self.RETRIEVERS))
        if unknown:
            raise ValueError(f"retrievers={unknown} unknown; choose from {self.RETRIEVERS}")
        if not 0.0 <= min_support <= 1.0:
            raise ValueError(f"min_support={min_support} must lie in [0, 1]")
        self.embedder = embedder or SignalTextEmbedder()
        self.text_model = text_model
        self.retrievers = tuple(r for r in self.RETRIEVERS if r in retrievers)
        if not 0.0 <= min_coverage <= 1.0:
            raise ValueError(f"min_coverage={min_coverage} must lie in [0, 1]")
        self.min_support = float(min_support)
        self.min_coverage = float(min_coverage)
        self.weights = dict(RETRIEVER_WEIGHTS if weights is None else weights)
        self._db = lancedb.connect(str(uri))
        self.documents = list(knowledge) if knowledge is not None else load_knowledge()
        self._by_doc = {d.doc_id: d for d in self.documents}
        self._by_cause = {d.cause: d for d in self.documents}
        self._passages = {p.passage_id: p for d in self.documents for p in d.passages()}
        self._signature = f"{corpus_digest(self.documents)}|{self.embedder.version}|" \
                          f"{self.text_model.version if self.text_model else '-'}"
        self._passages_table = self._ensure_passages_table()
        self._alerts = None

    # ------------------------------------------------------------------ tables
    def _table_names(self) -> set[str]:
        listed = self._db.list_tables()
        names = getattr(listed, "tables", listed)
        return set(names)

    def _passage_rows(self) -> list[dict]:
        passages = list(self._passages.values())
        model_vectors = (self.text_model.embed_texts([f"{self._by_doc[p.doc_id].title}. {p.text}" for p in passages])
                         if self.text_model else None)
        rows = []
        for i, p in enumerate(passages):
            doc = self._by_doc[p.doc_id]
            row = {
                "passage_id": p.passage_id, "doc_id": p.doc_id, "cause": p.cause, "kind": p.kind,
                "section": p.section, "text": f"{doc.title}. {p.text}", "signature": self._signature,
                "vector": self.embedder.embed(doc.signals, f"{doc.title} {p.text}").tolist(),
            }
            if model_vectors is not None:
                row["model_vector"] = model_vectors[i].tolist()
            rows.append(row)
        return rows

    def _ensure_passages_table(self):
        from lancedb.index import FTS  # lancedb is heavy: imported with the index, never at module load

        if PASSAGES_TABLE in self._table_names():
            table = self._db.open_table(PASSAGES_TABLE)
            signatures = set(table.to_arrow().column("signature").to_pylist())
            if signatures == {self._signature}:
                return table
        table = self._db.create_table(PASSAGES_TABLE, data=self._passage_rows(), mode="overwrite")
        table.create_index("text", config=FTS(), replace=True)
        return table

    def _alerts_table(self):
        if self._alerts is not None:
            return self._alerts
        if ALERTS_TABLE not in self._table_names():
            return None
        table = self._db.open_table(ALERTS_TABLE)
        versions = set(table.search().select(["embedder"]).limit(None).to_arrow().column("embedder").to_pylist())
        if versions - {self.embedder.version}:
            raise ValueError(
                f"alerts index was built with embedder {sorted(versions)}, this code uses {self.embedder.version!r}; "
                "re-index the alerts"
            )
        self._alerts = table
        return table

    def _vector(self, alert: AlertEvidence) -> list[float]:
        return self.embedder.embed(alert.evidence, f"{alert.kind} {alert.summary}").tolist()

    def _alert_row(self, alert: AlertEvidence, outcome: str) -> dict:
        return {
            "alert_id": alert.alert_id, "vehicle_id": alert.vehicle_id, "ts_ms": int(alert.ts_ms),
            "kind": alert.kind, "outcome": outcome, "summary": alert.summary,
            "embedder": self.embedder.version, "vector": self._vector(alert),
        }

    def remember(self, alert: AlertEvidence, outcome: str) -> None:
        """Store a past alert with its outcome (a cause, ``false_alarm``, ...); the same id again replaces it."""
        table = self._alerts_table()
        row = self._alert_row(alert, outcome)
        if table is None:
            self._alerts = self._db.create_table(ALERTS_TABLE, data=[row])
            return
        table.delete(f"alert_id = '{_quoted(alert.alert_id)}'")
        table.add([row])

    def remember_many(self, alerts: Sequence[tuple[AlertEvidence, str]]) -> None:
        """Bulk load past alerts (ids assumed new): one write instead of one per alert."""
        rows = [self._alert_row(alert, outcome) for alert, outcome in alerts]
        if not rows:
            return
        table = self._alerts_table()
        if table is None:
            self._alerts = self._db.create_table(ALERTS_TABLE, data=rows)
        else:
            table.add(rows)
        count = self.count_alerts()
        if count >= ALERTS_ANN_MIN_ROWS and count - len(rows) < ALERTS_ANN_MIN_ROWS:  # crossed the threshold
            self.index_alerts()

    def index_alerts(self, min_rows: int = ALERTS_ANN_MIN_ROWS) -> bool:
        """Build (or rebuild) the IVF index on the past alerts' vectors once there are ``min_rows``; True if built.
        Rows added later are still found (searched flat beside the index) until the next call."""
        from lancedb.index import IvfFlat  # lancedb is heavy: imported with the index, never at module load

        table = self._alerts_table()
        rows = 0 if table is None else table.count_rows()
        if table is None or rows < min_rows:
            return False
        partitions = int(min(256, max(16, np.sqrt(rows) / 4)))
        table.create_index("vector", config=IvfFlat(distance_type="cosine", num_partitions=partitions), replace=True)
        return True

    def count_alerts(self) -> int:
        table = self._alerts_table()
        return 0 if table is None else table.count_rows()

    # ------------------------------------------------------------------ retrieval
    def _vector_ranking(self, column: str, vector: Sequence[float], limit: int) -> list[tuple[str, float]]:
        rows = (self._passages_table.search(list(vector), vector_column_name=column).metric("cosine")
                .select(["passage_id", "_distance"]).limit(limit).to_list())
        return [(r["passage_id"], 1.0 - float(r["_distance"])) for r in rows]

    def _causes_of(self, passage_ids: Sequence[str]) -> list[str]:
        return _unique([self._passages[p].cause for p in passage_ids])

    @staticmethod
    def allowed_kinds(alert: AlertEvidence) -> tuple[str, ...]:
        """A ``sensor_fault`` alert is the twin's finding of invalid values: its cause is a sensor fault, and
        the fields it names say where, not which component fails. Other rules may have either kind."""
        return ("sensor_fault",) if alert.kind == "sensor_fault" else KINDS

    def _history(self, vector: Sequence[float], alert_id: str, limit: int) -> list[SimilarAlert]:
        table = self._alerts_table()
        if table is None or limit <= 0:
            return []
        rows = (table.search(list(vector)).metric("cosine").where(f"alert_id != '{_quoted(alert_id)}'")
                .select(["alert_id", "vehicle_id", "outcome", "_distance"]).limit(limit).to_list())
        similar = [SimilarAlert(r["alert_id"], r["vehicle_id"], r["outcome"], 1.0 - float(r["_distance"])) for r in rows]
        return [a for a in similar if a.similarity >= MIN_VECTOR_SIMILARITY]  # a distant alert is not "similar"

    def rankings(self, alert: AlertEvidence, sent_fields: Collection[str] | None = None
                 ) -> tuple[dict[str, list[str]], dict[str, list[str]], list[SimilarAlert], list[Driver]]:
        """Per retriever: the causes it ranks and the passages it cites; the nearest past alerts; the drivers."""
        drivers = map_drivers(alert, sent_fields, k=len(alert.evidence))
        evidence = {d.name: d.weight for d in drivers if d.sent}
        words = signal_words(evidence)
        query = f"{alert.summary} {words}".strip()
        limit = len(self._passages)
        causes: dict[str, list[str]] = {}
        cited: dict[str, list[str]] = {}
        vector = self.embedder.embed(evidence, f"{alert.kind} {alert.summary}")
        has_evidence = bool(evidence) or bool(alert.summary.strip())
        if "signals" in self.retrievers and has_evidence and vector.any():
            hits = [p for p, sim in self._vector_ranking("vector", vector, limit) if sim >= MIN_VECTOR_SIMILARITY]
            causes["signals"], cited["signals"] = self._causes_of(hits), hits
        fts_query = _fts_query(query)
        if "text" in self.retrievers and fts_query:
            rows = (self._passages_table.search(fts_query, query_type="fts").select(["passage_id", "_score"])
                    .limit(limit).to_list())
            hits = [r["passage_id"] for r in rows]
            causes["text"], cited["text"] = self._causes_of(hits), hits
        if "model" in self.retrievers and self.text_model is not None and query:
            model_vector = self.text_model.embed_texts([query])[0]
            hits = [p for p, sim in self._vector_ranking("model_vector", model_vector, limit)
                    if sim >= MIN_VECTOR_SIMILARITY]
            causes["model"], cited["model"] = self._causes_of(hits), hits
        neighbours = self._history(vector.tolist(), alert.alert_id, HISTORY_NEIGHBOURS) if has_evidence else []
        if "history" in self.retrievers and self._alerts_table() is not None:
            votes: dict[str, float] = {}
            for past in neighbours:
                if past.outcome in self._by_cause:
                    votes[past.outcome] = votes.get(past.outcome, 0.0) + past.similarity
            causes["history"] = sorted(votes, key=lambda c: -votes[c])
        if "predicted" in self.retrievers and alert.mode in self._by_cause:
            causes["predicted"] = [alert.mode]
        kinds = self.allowed_kinds(alert)
        causes = {r: [c for c in ranked if self._by_cause[c].kind in kinds] for r, ranked in causes.items()}
        cited = {r: [p for p in hits if self._passages[p].kind in kinds] for r, hits in cited.items()}
        return causes, cited, neighbours, drivers

    def explain(self, alert: AlertEvidence, k: int = 3, similar: int = 5,
                sent_fields: Collection[str] | None = None) -> Explanation:
        """Up to ``k`` causes, best first, each citing its passages; ``similar`` nearest past alerts."""
        causes, cited, neighbours, drivers = self.rankings(alert, sent_fields)
        support = rrf_fuse(causes, weights=self.weights)
        driver_fields = _unique([f for d in drivers if d.sent for f in d.fields])
        matches = []
        for cause, score in list(support.items())[:k]:
            doc = self._by_cause[cause]
            passages = _unique([p for hits in cited.values() for p in hits if self._passages[p].cause == cause])
            passages = passages[:3] or [f"{doc.doc_id}#symptoms"]
            recommended = f"{doc.doc_id}#recommended_check"
            if recommended not in passages:
                passages.append(recommended)
            matches.append(KnowledgeMatch(
                entry_id=doc.doc_id, mode=cause, title=doc.title, action=doc.action, similarity=float(score),
                kind=doc.kind, passages=tuple(self._passages[p] for p in passages),
                matched_fields=tuple(f for f in driver_fields if f in doc.signals),
                similar=tuple(n for n in neighbours if n.outcome == cause)[:similar],
                retrievers=tuple(r for r, ranked in causes.items() if cause in ranked),
                coverage=evidence_coverage(drivers, doc, alert.kind),
            ))
        supported = (bool(matches) and matches[0].support >= self.min_support
                     and matches[0].coverage >= self.min_coverage)
        return Explanation(alert.alert_id, alert.top_drivers(), matches, neighbours[:similar], supported,
                           self.min_support, drivers, self.min_coverage)
