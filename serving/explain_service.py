"""``ExplainService``: why an alert fired, as likely causes ranked with their evidence (operator credential).

A thin shell over :class:`serving.explanations.ExplanationIndex`: it finds the alert through the backend,
learns which telemetry fields the vehicle sends (from its last frame, where the backend keeps one), and runs
the retrieval in a worker thread (LanceDB calls block). The index folder is ``$EVTWIN_EXPLAIN_INDEX``, else
``runs/explanations``; it is opened on the first call, so a server that is never asked pays nothing.
"""
from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from configs.schema import SCHEMA
from protos.evtwin.v1 import explain_pb2, explain_pb2_grpc
from serving.backend import FleetBackend
from serving.codec import Unparseable
from serving.explanations import Explanation, ExplanationIndex, SimilarAlert, evidence_from_alert
from serving.servicers import CURRENT_CLAIMS
from twins.types import Alert, AlertFilter

INDEX_ENV = "EVTWIN_EXPLAIN_INDEX"
DEFAULT_INDEX_DIR = "runs/explanations"
DEFAULT_CAUSES = 3
DEFAULT_SIMILAR = 5
MAX_CAUSES = 20
MAX_ALERT_ID_CHARS = 128
# How far back the backend is searched for the alert (its alert history is bounded anyway).
ALERT_LOOKUP_LIMIT = 1_000_000


def default_index_dir() -> Path:
    return Path(os.environ.get(INDEX_ENV) or DEFAULT_INDEX_DIR)


def sent_fields_of(summary: dict[str, Any] | None) -> set[str] | None:
    """Telemetry fields with a value in the vehicle's last frame; None when the backend keeps no last frame
    (then every field counts as sent)."""
    last_frame = (summary or {}).get("last_frame") or {}
    sent = {name for name in SCHEMA.sensor_names
            if isinstance(last_frame.get(name), (int, float)) and math.isfinite(last_frame[name])}
    return sent or None


def _similar_to_proto(alert: SimilarAlert) -> explain_pb2.ExplainSimilarAlert:
    return explain_pb2.ExplainSimilarAlert(alert_id=alert.alert_id, vehicle_id=alert.vehicle_id,
                                           outcome=alert.outcome, similarity=alert.similarity)


def explanation_to_proto(alert: Alert, explanation: Explanation) -> explain_pb2.Explanation:
    return explain_pb2.Explanation(
        alert_id=alert.alert_id, vehicle_id=alert.vehicle_id, rule=str(alert.rule),
        supported=explanation.supported, min_support=explanation.min_support,
        min_coverage=explanation.min_coverage, summary=explanation.text(),
        drivers=[explain_pb2.ExplainDriver(name=d.name, weight=d.weight, fields=list(d.fields), sent=d.sent)
                 for d in explanation.mapped_drivers],
        causes=[explain_pb2.ExplainCause(
            cause=m.mode, kind=m.kind, title=m.title, support=m.support, matched_fields=list(m.matched_fields),
            passages=[explain_pb2.ExplainPassage(passage_id=p.passage_id, section=p.section, text=p.text)
                      for p in m.passages],
            similar=[_similar_to_proto(s) for s in m.similar], recommended_check=m.action,
            retrievers=list(m.retrievers), coverage=m.coverage) for m in explanation.matches],
        similar=[_similar_to_proto(s) for s in explanation.similar_alerts],
    )


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):
    def __init__(self, backend: FleetBackend, index_factory: Callable[[], ExplanationIndex] | None = None) -> None:
        self.backend = backend
        self._index_factory = index_factory or (lambda: ExplanationIndex(default_index_dir()))
        self._index: ExplanationIndex | None = None
        self._opening = asyncio.Lock()

    async def _opened_index(self) -> ExplanationIndex:
        async with self._opening:
            if self._index is None:
                self._index = await asyncio.to_thread(self._index_factory)
        return self._index

    async def _find(self, alert_id: str) -> Alert | None:
        for alert in await self.backend.alerts(AlertFilter(limit=ALERT_LOOKUP_LIMIT)):
            if alert.alert_id == alert_id:
                return alert
        return None

    async def Explain(self, request: Any, context: grpc.aio.ServicerContext) -> explain_pb2.Explanation:
        if isinstance(request, Unparseable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
        claims = CURRENT_CLAIMS.get()
        if claims is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no credentials")
        if not claims.may_read():
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{claims.role} credential {claims.sub!r} may not read alerts (operator only)")
        alert_id = request.alert_id
        if not alert_id or len(alert_id) > MAX_ALERT_ID_CHARS or not alert_id.isprintable():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"alert_id={alert_id[:MAX_ALERT_ID_CHARS]!r}: give the id of an alert "
                                f"(1..{MAX_ALERT_ID_CHARS} printable characters)")
        if not 0 <= request.max_causes <= MAX_CAUSES or request.max_similar < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"max_causes={request.max_causes} must lie in 0..{MAX_CAUSES} and "
                                f"max_similar={request.max_similar} must not be negative")
        alert = await self._find(alert_id)
        if alert is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no alert with alert_id={alert_id!r}")
        sent = sent_fields_of(await self.backend.summary(alert.vehicle_id))
        index = await self._opened_index()
        explanation = await asyncio.to_thread(
            index.explain, evidence_from_alert(alert.to_dict()), request.max_causes or DEFAULT_CAUSES,
            request.max_similar or DEFAULT_SIMILAR, sent)
        return explanation_to_proto(alert, explanation)
