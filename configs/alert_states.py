"""The alert lifecycle: acknowledged, assigned, resolved with what the workshop found, durable beside the checkpoints.

Alerts themselves are immutable (``twins.store.AlertStore``); what people do with them is a separate,
append-only log ``<checkpoint uri>/alert_states.jsonl``: one JSON line per change, never rewritten, so a
crash loses at most the change being written (a torn last line is skipped). The current state of an
alert is its changes replayed in order. Each change carries the alert's vehicle, rule and time, so the
resolved outcomes export as training labels from the log alone (``outcome_labels``), without the twins.

It lives in ``configs`` because it is a contract between packages: the front door writes it
(``serving``), the twins' checkpoints sit beside it, and ``evtwin prepare --outcomes`` (``training``) reads it.

>>> log = AlertStateLog(None)  # in memory
>>> alert = AlertRef("a1", "V1", "failure_risk", 1_000)
>>> log.change(alert, "acknowledge", by="alice", now_ms=5).state
'acknowledged'
>>> log.change(alert, "resolve", by="bob", now_ms=9, outcome="confirmed_failure", mode="coolant_pump", note="pump seized").outcome
'confirmed_failure'
>>> log.change(alert, "assign", by="bob", now_ms=10, assignee="carol")
Traceback (most recent call last):
...
ValueError: alert_id='a1': already resolved (confirmed_failure); a resolved alert does not change
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

STATES: tuple[str, ...] = ("open", "acknowledged", "assigned", "resolved")
ACTIONS: dict[str, str] = {"acknowledge": "acknowledged", "assign": "assigned", "resolve": "resolved"}
OUTCOMES: tuple[str, ...] = ("confirmed_failure", "false_alarm", "sensor_problem")
log = logging.getLogger(__name__)

LOG_FILE = "alert_states.jsonl"
MAX_NOTE_CHARS = 2000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:/ -]{0,127}$")
_MODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Training label of each outcome: a confirmed failure is a positive, a false alarm a negative; a sensor
# problem says nothing about the vehicle's health (the data was wrong), so it is exported but not a label.
OUTCOME_LABEL: dict[str, int | None] = {"confirmed_failure": 1, "false_alarm": 0, "sensor_problem": None}
LABEL_COLUMNS: tuple[str, ...] = ("alert_id", "vehicle_id", "rule", "ts_ms", "outcome", "mode", "label",
                                  "resolved_ms", "resolved_by", "note")


@dataclass(frozen=True)
class AlertRef:
    """What the log needs to know about an alert (any object with these attributes will do)."""

    alert_id: str
    vehicle_id: str
    rule: str
    ts_ms: int


@dataclass(frozen=True)
class AlertState:
    """An alert's lifecycle now. ``open`` with ``updated_ms == 0``: nobody has touched it."""

    alert_id: str
    vehicle_id: str
    rule: str
    ts_ms: int
    state: str = "open"
    assignee: str = ""
    outcome: str = ""
    mode: str = ""
    note: str = ""
    updated_ms: int = 0
    updated_by: str = ""

    @classmethod
    def open(cls, alert: Any) -> AlertState:
        return cls(alert.alert_id, alert.vehicle_id, str(alert.rule), int(alert.ts_ms))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_change(current: AlertState, action: str, *, assignee: str = "", outcome: str = "", mode: str = "",
                 note: str = "") -> None:
    """Raise ValueError (naming the field and value) when ``action`` may not be applied to ``current``."""
    if action not in ACTIONS:
        raise ValueError(f"action={action!r}: expected one of {tuple(ACTIONS)}")
    if current.state == "resolved":
        raise ValueError(f"alert_id={current.alert_id!r}: already resolved ({current.outcome}); "
                         "a resolved alert does not change")
    if len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"note: {len(note)} characters, at most {MAX_NOTE_CHARS}")
    if action == "assign" and not _NAME.match(assignee):
        raise ValueError(f"assignee={assignee[:80]!r}: give a name (1-128 characters, starting alphanumeric)")
    if action == "resolve":
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome={outcome!r}: expected one of {OUTCOMES}")
        if outcome == "confirmed_failure" and not _MODE.match(mode):
            raise ValueError(f"mode={mode[:80]!r}: a confirmed failure needs its failure mode (e.g. coolant_pump)")
        if outcome != "confirmed_failure" and mode:
            raise ValueError(f"mode={mode[:80]!r}: only a confirmed failure has a mode (outcome={outcome!r})")


def apply_change(current: AlertState, action: str, *, by: str, now_ms: int, assignee: str = "", outcome: str = "",
                 mode: str = "", note: str = "") -> AlertState:
    """The state after ``action`` (validated by ``check_change``)."""
    check_change(current, action, assignee=assignee, outcome=outcome, mode=mode, note=note)
    changed = replace(current, state=ACTIONS[action], updated_ms=int(now_ms), updated_by=by,
                      note=note or current.note)
    if action == "assign":
        changed = replace(changed, assignee=assignee)
    if action == "resolve":
        changed = replace(changed, outcome=outcome, mode=mode)
    return changed


def _open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


class AlertStateLog:
    """The lifecycle log of one fleet (``uri``: the checkpoint URI; None keeps it in memory, not durable).

    Thread-safe within a process; one front door writes it (several front doors would need one writer).
    """

    def __init__(self, uri: str | None) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._states: dict[str, AlertState] = {}
        self._listeners: list[Callable[[Any, AlertState], None]] = []
        self.fs: pafs.FileSystem | None = None
        self.path = ""
        if uri is not None:
            self.fs, root = _open_filesystem(uri)
            self.fs.create_dir(root, recursive=True)
            self.path = f"{root}/{LOG_FILE}"
            self._states = replay(self._read_bytes())

    def _read_bytes(self) -> bytes:
        assert self.fs is not None
        try:
            with self.fs.open_input_stream(self.path) as source:
                return source.read()
        except FileNotFoundError:
            return b""
        except OSError as exc:  # some filesystems raise a plain OSError for a missing key
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                return b""
            raise

    def _append(self, state: AlertState) -> None:
        if self.fs is None:
            return
        line = (json.dumps(state.to_dict(), sort_keys=True) + "\n").encode()
        if isinstance(self.fs, pafs.LocalFileSystem):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line (crash mid-write) stays on its own, skipped on replay
            with os.fdopen(fd, "ab") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())  # durable before the change is answered
            return
        old = self._read_bytes()  # object stores cannot append: write the log back whole
        if old and not old.endswith(b"\n"):
            old += b"\n"
        with self.fs.open_output_stream(self.path) as out:
            out.write(old + line)

    def subscribe(self, listener: Callable[[Any, AlertState], None]) -> None:
        """Call ``listener(alert, new_state)`` after every durable change (e.g. feed the explanations index)."""
        self._listeners.append(listener)

    def get(self, alert: Any) -> AlertState:
        """The alert's state (``open`` if nobody changed it)."""
        return self._states.get(alert.alert_id) or AlertState.open(alert)

    def states(self) -> dict[str, AlertState]:
        return dict(self._states)

    def change(self, alert: Any, action: str, *, by: str, now_ms: int, assignee: str = "", outcome: str = "",
               mode: str = "", note: str = "") -> AlertState:
        """Apply ``action`` to ``alert``, durably; returns the new state. ValueError when not allowed."""
        with self._lock:
            new = apply_change(self.get(alert), action, by=by, now_ms=now_ms, assignee=assignee, outcome=outcome,
                               mode=mode, note=note)
            self._append(new)
            self._states[new.alert_id] = new
        for listener in self._listeners:
            try:
                listener(alert, new)
            except Exception as error:  # the change is durable already: a listener's failure must not undo it
                log.warning("alert state listener %r failed for alert_id=%r: %r", listener, new.alert_id, error)
        return new


def replay(data: bytes) -> dict[str, AlertState]:
    """Current state per alert id from the log's bytes (later lines win; a torn or foreign line is skipped)."""
    states: dict[str, AlertState] = {}
    for line in data.splitlines():
        try:
            state = AlertState(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a write cut short by a crash: that change was never answered
        if state.state in STATES:
            states[state.alert_id] = state
    return states


def read_states(uri: str) -> dict[str, AlertState]:
    """Every alert's current state under a checkpoint URI (empty when there is no log)."""
    return AlertStateLog(uri).states()


def outcome_labels(states: dict[str, AlertState]) -> list[dict[str, Any]]:
    """Resolved alerts as label rows (``LABEL_COLUMNS``), oldest alert first."""
    resolved = sorted((s for s in states.values() if s.state == "resolved"),
                      key=lambda s: (s.ts_ms, s.vehicle_id, s.alert_id))
    label = OUTCOME_LABEL
    return [{"alert_id": s.alert_id, "vehicle_id": s.vehicle_id, "rule": s.rule, "ts_ms": s.ts_ms,
             "outcome": s.outcome, "mode": s.mode, "label": "" if label[s.outcome] is None else label[s.outcome],
             "resolved_ms": s.updated_ms, "resolved_by": s.updated_by, "note": s.note} for s in resolved]


def write_outcome_labels(path: str | Path, states: dict[str, AlertState]) -> int:
    """Write the resolved outcomes as a CSV (``LABEL_COLUMNS``); returns the number of rows."""
    rows = outcome_labels(states)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def read_outcome_labels(path: str | Path) -> list[dict[str, Any]]:
    """The label CSV back, typed: ``ts_ms``/``resolved_ms`` int, ``label`` 1, 0 or None (sensor problem)."""
    rows = []
    with Path(path).open(newline="") as source:
        reader = csv.DictReader(source)
        missing = set(LABEL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not an outcome-label CSV (missing columns {sorted(missing)})")
        for row in reader:
            row["ts_ms"] = int(row["ts_ms"])
            row["resolved_ms"] = int(row["resolved_ms"])
            row["label"] = int(row["label"]) if row["label"] != "" else None
            rows.append(row)
    return rows
