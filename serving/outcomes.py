"""Resolved alerts feed the explanations index (``serving.explanations``): "alerts like this one were ...".

``OutcomeIndexer(path)`` listens to the alert lifecycle log (``AlertStateLog.subscribe``): every alert
resolved is remembered with its outcome as the index names it: the failure mode the workshop confirmed,
``sensor_fault`` for a sensor problem, ``false_alarm``. ``remember_outcomes`` does the same for a history.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from configs.alert_states import AlertState
from serving.explanations import ExplanationIndex, evidence_from_alert
from twins.types import Alert

INDEX_OUTCOME = {"false_alarm": "false_alarm", "sensor_problem": "sensor_fault"}


def index_outcome(state: AlertState) -> str:
    """The outcome as the explanations index records it."""
    return state.mode if state.outcome == "confirmed_failure" else INDEX_OUTCOME[state.outcome]


def remember_outcomes(index: ExplanationIndex, alerts: Iterable[Alert], states: Mapping[str, AlertState]) -> int:
    """Remember every resolved alert of ``alerts``; returns how many."""
    remembered = 0
    for alert in alerts:
        state = states.get(alert.alert_id)
        if state is not None and state.state == "resolved":
            index.remember(evidence_from_alert(alert.to_dict()), index_outcome(state))
            remembered += 1
    return remembered


class OutcomeIndexer:
    """A lifecycle-log listener that remembers each resolved alert in the index at ``path`` (opened on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._index: ExplanationIndex | None = None
        self._lock = threading.Lock()

    def __call__(self, alert: Any, state: AlertState) -> None:
        if state.state != "resolved":
            return
        with self._lock:
            if self._index is None:
                self._index = ExplanationIndex(self.path)
            self._index.remember(evidence_from_alert(alert.to_dict()), index_outcome(state))
