"""``VehicleTwin``: the pure, per-vehicle state machine (no Ray, no gRPC, no wall clock).

    frames --validate--> --dedup/reorder by seq--> --windows--> FeatureState --> scores --> alerts

The twin is composed of parts that each own, and save, their own state:

* ``twins.reorder.ReorderBuffer``: dedup and ordering by ``seq`` (a bounded reorder buffer; a gap given
  up on answers its late frames ``late``).
* ``twins.faults.SensorFaultTracker``: the vehicle's signal profile (a sensor it never reports is not
  fitted and never faulty) and, per fitted sensor, out-of-range, spike, stuck, dropout and drift faults in
  episodes; an episode raises one ``sensor_fault`` alert naming the sensor, its kind in ``Alert.mode``. The
  frame is still applied: the feature function is NaN-aware, and the fleet model reads window features.
* ``training.windows.WindowAssembler`` and ``training.features.FeatureState``: windows and features, the
  same code as the offline pipeline.
* ``twins.scoring.FleetScorer``: the fleet LSTM-AE's sequences of window features, through the vehicle's
  personal head (``twins.personalise``); ``twins.baseline.EwmaBaseline``: the vehicle's own baseline,
  which learns only from windows it did not flag.
* ``twins.schedule.PredictionSchedule``: when the failure model is asked, and the ``failure_risk`` gate.

Per closed window (a ``ClosedWindow`` record), the twin decides: learning (baseline, head) is judged
against the fleet model's validated level 1.0, not the operator's ``anomaly_alert_level``; every step
reports its windows' scores (``TwinStep.windows``). The head learns the twin's first
``anomaly_warmup_windows`` windows (its first head is fitted from them, inline, when the hold ends), then
only windows usual for the vehicle's own feature baseline (every ``_z`` within 3). Alerts:
``training.alerting`` (the decision the offline evaluation uses too): hysteresis
(``anomaly_consecutive_windows`` to fire, below ``anomaly_clear_ratio`` to clear) plus a cooldown in frame
time, after a cold-start hold of ``anomaly_warmup_windows``; ids are ``alert_id(vehicle, rule, seq)``.

Batching never changes the outcome: ingesting frames one by one or in one call gives the same state,
and so does stepping many twins together. ``ingest_many(twins, batches)`` is the one ingestion path
(``VehicleTwin.ingest`` is it with one twin): frame handling is per twin, closing windows is done for
all twins at once (``training.features.update_many`` per round of windows, ONE fleet-model call for
every closed window of every twin), then the decisions per twin, in time order.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from configs.frames import frames_matrix
from configs.schema import SCHEMA
from configs.settings import TwinsConfig
from training.alerting import AlertPolicy, AlertState
from training.features import BASELINE_LEARN_Z, FEATURE_NAMES, FeatureState, update_many
from training.windows import WindowAssembler
from twins.baseline import EwmaBaseline, baseline_from_state
from twins.faults import KINDS, FaultKind, FaultSettings, SensorFaultTracker
from twins.personalise import PersonalHead, fit_personal_head
from twins.reorder import NO_SEQ, ReorderBuffer
from twins.schedule import PredictionSchedule, gate_from_state, gate_state
from twins.scoring import AnomalyModel, FleetScorer, TopSignals, score_windows
from twins.types import Alert, Rejection, Rule, TwinStep, WindowScore, alert_id

__all__ = ["FORMAT_VERSION", "SENSORS", "AnomalyModel", "ClosedWindow", "TwinFactory", "VehicleTwin",
           "frames_matrix", "ingest_many", "usual_for_vehicle"]

# 2: the state is composed of its parts' states (reorder, faults, scorer, schedule, baseline, ...).
FORMAT_VERSION = 2
_MAGIC = b"EVTWIN1\n"
SENSORS: tuple[str, ...] = SCHEMA.sensor_names
N_SENSORS = len(SENSORS)
_MAX_OPEN_ALERTS = 32
# Learning (baseline, personal head) is judged against the fleet model's validated alert level (score 1),
# not the operator's ``anomaly_alert_level``: what a twin learns, and so its scores, do not depend on where
# its alerts are set, except that a window its own gate flagged is never learned either (at level 1, the
# default and the bench's, the two coincide, so an offline sweep of levels is the twin's decision).
LEARNING_REFERENCE_LEVEL = 1.0
_FAULT_TEXT = {
    FaultKind.OUT_OF_RANGE: "reading outside its physical range",
    FaultKind.SPIKE: "spike (a jump away and straight back no physical signal makes)",
    FaultKind.STUCK: "stuck (the same reading while the vehicle is active)",
    FaultKind.DROPOUT: "dropout (no reading for longer than twins.sensor_dropout_minutes)",
    FaultKind.DRIFT: "drift against its redundant sensors",
}
_OWN_Z_INDEX = np.array([i for i, name in enumerate(FEATURE_NAMES) if name.endswith("_z")])


def usual_for_vehicle(features: np.ndarray) -> np.ndarray:
    """Per row of a (windows x features) matrix: every trend z-score (against the vehicle's own feature
    baseline) within the band that baseline itself learns from. Computed for a whole round of windows at once."""
    return ~(np.abs(features[:, _OWN_Z_INDEX]) > BASELINE_LEARN_Z).any(axis=1)  # a missing z (NaN) doubts nothing


@dataclass
class ClosedWindow:
    """One closed window of one twin, with what the batched step computed for it."""

    end_ms: int
    last_seq: int  # seq of the window's last frame (the seq an alert on the window names)
    features: np.ndarray
    usual: bool  # every own-baseline z-score within its learning band (``usual_for_vehicle``)
    last_of_step: bool  # the step's last window: it computes what the twin reports after the step
    fleet_ratio: float = 0.0  # fleet-model error / its alert error (0 without a model)
    signal_errors: np.ndarray | None = None  # per-signal fleet-model errors (None without a model)
    top_signals: TopSignals | None = None
    row: int = 0  # this window's row in ``top_signals``


class VehicleTwin:
    """One vehicle's twin. ``ingest(columns)`` (or ``ingest_many`` for several twins) is the only way frames get in."""

    def __init__(self, vehicle_id: str, cfg: TwinsConfig, window_ms: int, stride_ms: int,
                 anomaly_model: AnomalyModel | None = None) -> None:
        self.vehicle_id = vehicle_id
        self.cfg = cfg
        self.anomaly_policy = AlertPolicy.for_twins(cfg, cfg.anomaly_alert_level)
        self.window_ms = int(window_ms)
        self.stride_ms = int(stride_ms)
        self.model = anomaly_model
        # the parts, each with its own state
        self.reorder = ReorderBuffer(cfg.reorder_buffer_frames, cfg.first_seq, N_SENSORS, cfg.seq_restart_tolerance_ms)
        self.faults = SensorFaultTracker(SCHEMA.lower_bounds, SCHEMA.upper_bounds,
                                         FaultSettings.from_config(cfg, SENSORS, vehicle_id))
        self.assembler = WindowAssembler(window_ms=self.window_ms, stride_ms=self.stride_ms)
        self.features = FeatureState()
        self.baseline = EwmaBaseline(half_life=cfg.baseline_half_life_windows, warmup=cfg.baseline_warmup_windows)
        self.scorer = FleetScorer(anomaly_model, cfg) if anomaly_model is not None else None
        self.schedule = PredictionSchedule(int(cfg.prediction_interval_minutes * 60_000))
        # the anomaly decision and what the twin reports
        self.anomaly_gate = AlertState()
        self.last_score = 0.0
        self.last_fleet_ratio = 0.0
        self.last_baseline_ratio = 0.0
        self.last_signals: list[list[Any]] = []
        self.last_features: np.ndarray | None = None
        self.last_window_end = NO_SEQ
        self.last_ts = NO_SEQ
        self.frames_applied = 0
        self.duplicates = 0
        # The write-ahead log position this state includes (twins/wal.py; "" = none): set on a snapshot.
        self.log_position = ""
        self.windows_closed = 0
        self.open_alerts: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ views of the parts
    @property
    def applied_seq(self) -> int:
        return self.reorder.applied_seq

    @property
    def applied_mark(self) -> tuple[int, int]:
        """(seq, ts) of the newest applied frame: what an ack covers. After a counter restart seq falls back
        while ts moves on; until the new epoch applies a frame it is the last frame of the epoch before."""
        reorder = self.reorder
        if reorder.applied_seq == NO_SEQ and reorder.history:
            return int(reorder.history[-1][1]), int(reorder.epoch_start_ts)
        return reorder.applied_seq, reorder.applied_ts

    @property
    def buf_seq(self) -> np.ndarray:
        """The seqs waiting in the reorder buffer."""
        return self.reorder.seq

    @property
    def head(self) -> PersonalHead:
        return self.scorer.head if self.scorer is not None else PersonalHead.identity(0)

    @property
    def normal_errors(self) -> np.ndarray:
        return self.scorer.normal_errors if self.scorer is not None else np.zeros((0, 0), dtype=np.float32)

    @property
    def pending_prediction(self) -> tuple[int, int] | None:
        return self.schedule.pending

    # ------------------------------------------------------------------ ingestion
    def ingest(self, columns: Mapping[str, Any]) -> TwinStep:
        """Take frames of this vehicle (``seq``, ``ts`` int64 ms, sensor columns), any order, any count.

        The batch path (``ingest_many``) with one twin: there is no other.
        """
        return ingest_many([self], [columns])[0]

    def _receive(self, columns: Mapping[str, Any], step: TwinStep) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Frame handling (dedup, reorder, validate, window assembly): the windows these frames closed."""
        seq = np.asarray(columns["seq"], dtype=np.int64)
        released, duplicates, late = self.reorder.receive(seq, np.asarray(columns["ts"], dtype=np.int64),
                                                          frames_matrix(columns, seq.size))
        step.duplicates += duplicates
        for s in late:
            step.rejected.append(Rejection(self.vehicle_id, int(s), "late",
                                           f"seq {int(s)} arrived after its gap was skipped "
                                           f"(reorder buffer holds {self.cfg.reorder_buffer_frames} frames)"))
        if released is None:
            return []
        return self._apply(*released, step)

    def _apply(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray,
               step: TwinStep) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Frames in seq order, no duplicates: validate, then window (closing is ``_close_windows``)."""
        for episode in self.faults.observe(seq, ts, values):
            sensor = SENSORS[episode.sensor]
            self._emit(step, Rule.SENSOR_FAULT, episode.ts_ms, episode.seq, 1.0, [(sensor, 1.0)],
                       f"sensor {sensor}: {_FAULT_TEXT[episode.kind]}", id_key=f"{sensor}:{episode.kind}",
                       mode=episode.kind)
        self.last_ts = max(self.last_ts, int(ts.max()))
        self.frames_applied += int(seq.size)
        step.applied += int(seq.size)
        # Features get the raw values: the feature function is NaN-aware and scores data quality itself,
        # exactly as offline.
        return self.assembler.push(ts, {"values": values, "seq": seq, "ts": ts})

    def _finish(self, step: TwinStep) -> None:
        """What the step reports once its windows are closed."""
        step.applied_seq = self.applied_seq
        step.buffered = self.reorder.size
        self.duplicates += step.duplicates
        step.prediction_due = self.schedule.pending is not None
        step.fine_tune_due = self.fine_tune_due()

    # ------------------------------------------------------------------ windows
    def _close_window(self, window: ClosedWindow, step: TwinStep) -> None:
        """One closed window's decisions (sequential per twin: each may change the baseline and gates).

        What nothing reads before the next window is computed only for the last window of the step or
        where an alert needs it (the baseline ratio when the fleet model decides, the named signals):
        the state after the step is the same as if every window had computed it.
        """
        self.windows_closed += 1
        self.last_features = window.features
        self.last_window_end = window.end_ms
        cfg, scorer, errors = self.cfg, self.scorer, window.signal_errors
        needs_baseline = scorer is None or (cfg.personalise and cfg.baseline_veto and self.baseline.ready)
        baseline_ratio = (self.baseline.score_one(window.features) / cfg.baseline_z_threshold
                          if needs_baseline or window.last_of_step else None)
        if scorer is None or errors is None:
            score = baseline_ratio
        elif needs_baseline:
            score = min(scorer.personal_ratio(errors, window.fleet_ratio), baseline_ratio)
        elif cfg.personalise:
            score = scorer.personal_ratio(errors, window.fleet_ratio)
        else:
            score = window.fleet_ratio
        self.last_score, self.last_fleet_ratio = float(score), window.fleet_ratio
        step.windows.append(WindowScore(window.end_ms, float(window.fleet_ratio), float(score), self.head.version))
        if baseline_ratio is not None:
            self.last_baseline_ratio = baseline_ratio
        signals = _WindowSignals(self, window)
        # Cold-start hold: the gate only starts once the twin has closed its warm-up windows (it then
        # starts fresh, exactly as an offline gate over the windows after warm-up would).
        warm = self.windows_closed > cfg.anomaly_warmup_windows
        fired = warm and self._anomaly_gate(score, window.end_ms, window.last_seq, step, signals)
        if window.last_of_step:
            self.last_signals = signals.get()
        # Protected learning: a window the twin doubts at the reference level, or one its own gate flagged
        # (at another operator level), never becomes part of its normal.
        flagged = fired or self.anomaly_gate.active or score >= LEARNING_REFERENCE_LEVEL
        if not flagged:
            self.baseline.learn_one(window.features)
        if scorer is not None and errors is not None:
            self._learn_head(scorer, errors, warm, flagged, window)
        self.schedule.after_window(window.end_ms, window.last_seq, fired)

    def _learn_head(self, scorer: FleetScorer, errors: np.ndarray, warm: bool, flagged: bool,
                    window: ClosedWindow) -> None:
        in_hold = not warm
        if in_hold or (not flagged and window.usual):
            # The head learns the vehicle's first day (it cannot alert then: its normal, by assumption), then
            # only windows it did not doubt that its own feature baseline finds usual: a part failing slowly
            # drifts out of its own baseline before its error is learned as normal.
            scorer.learn_normal(errors)
        first_head_due = (in_hold and self.windows_closed == self.cfg.anomaly_warmup_windows and self.cfg.personalise
                          and scorer.head.version == 0)
        if window.last_of_step or first_head_due:
            scorer.flush_normal()
        if first_head_due:
            # Inline (a quantile over a day of windows), so the head is in force from the first window that
            # may alert; the periodic refits run as Ray tasks (``twins.host``).
            self.install_head(fit_personal_head(*self.fine_tune_inputs(), 1, *self.head_settings()))

    def _baseline_signals(self, features: np.ndarray) -> list[list[Any]]:
        """Driving signals without a fleet-model error: the features furthest from the twin's baseline."""
        z = np.abs(self.baseline.zscores(features))
        if not z.any():
            return []
        top = np.argsort(-z)[:3]
        total = float(z[top].sum()) or 1.0
        return [[FEATURE_NAMES[i], round(float(z[i]) / total, 4)] for i in top]

    def _anomaly_gate(self, score: float, end_ms: int, seq: int, step: TwinStep,
                      signals: _WindowSignals | None = None) -> bool:
        """The anomaly alert gate; an alert names ``signals`` (default: the twin's last named ones)."""
        if not self.anomaly_gate.step(int(end_ms), score, self.anomaly_policy):
            return False
        if signals is not None:
            self.last_signals = signals.get()
        names = ", ".join(str(s[0]) for s in self.last_signals) or "features"
        self._emit(step, Rule.ANOMALY, int(end_ms), seq, score, [tuple(s) for s in self.last_signals],
                   f"anomaly score {score:.2f}x threshold, driven by {names}")
        return True

    def _personal_fleet_ratio(self, signal_errors: np.ndarray | None, fleet_ratio: float) -> float:
        if signal_errors is None or self.scorer is None:
            return fleet_ratio
        return self.scorer.personal_ratio(signal_errors, fleet_ratio)

    def _cooldown_ms(self) -> int:
        return int(self.cfg.alert_cooldown_minutes * 60_000)

    def _emit(self, step: TwinStep, rule: Rule, ts_ms: int, seq: int, score: float,
              signals: list[tuple[str, float]], message: str, id_key: str = "", **extra: Any) -> Alert:
        # A seq repeats in a later counter epoch: the epoch is part of the id there.
        epoch = self.reorder.epoch_of(int(ts_ms))
        key = ":".join(part for part in (f"e{epoch}" if epoch else "", id_key) if part)
        alert = Alert(alert_id=alert_id(self.vehicle_id, rule, seq, key), vehicle_id=self.vehicle_id, rule=rule,
                      ts_ms=int(ts_ms), seq=int(seq), score=round(float(score), 6),
                      signals=tuple((str(n), float(s)) for n, s in signals), message=message, **extra)
        step.alerts.append(alert)
        self.open_alerts = (self.open_alerts + [alert.to_dict()])[-_MAX_OPEN_ALERTS:]
        return alert

    # ------------------------------------------------------------------ predictions
    def take_prediction_request(self) -> tuple[int, np.ndarray] | None:
        """(window_end_ms, features) if a prediction is due; it stays due until ``apply_prediction``."""
        if self.schedule.pending is None or self.last_features is None:
            return None
        return self.schedule.pending[0], self.last_features

    def apply_prediction(self, window_end_ms: int, risk: dict[int, float], severity: int | None = None,
                         mode: str | None = None, contributions: list[tuple[str, float]] | None = None) -> list[Alert]:
        """Record a model answer for the pending request; may raise a ``failure_risk`` alert."""
        policy = AlertPolicy(threshold=self.cfg.risk_alert_threshold, consecutive=1,
                             clear_ratio=self.cfg.anomaly_clear_ratio, cooldown_ms=self._cooldown_ms())
        decision = self.schedule.answer(window_end_ms, risk, policy)
        if decision is None or not decision.fired:
            return []  # nothing asked, an answer already superseded, or no alert
        step = TwinStep(applied_seq=self.applied_seq)
        horizon = min(self.schedule.risk)
        self._emit(step, Rule.FAILURE_RISK, window_end_ms, decision.seq, decision.headline,
                   [(f, float(v)) for f, v in (contributions or [])],
                   f"failure risk {decision.headline:.0%} within {horizon} days"
                   + (f", most likely {mode}" if mode else ""),
                   mode=mode, risk=dict(self.schedule.risk), severity=severity)
        return step.alerts

    # ------------------------------------------------------------------ personalisation
    def fine_tune_due(self) -> bool:
        """Every ``fine_tune_every_windows`` normal windows (the first head is fitted inline when the
        cold-start hold ends; with no hold, it is due like the others)."""
        return self.scorer is not None and self.scorer.fine_tune_due()

    def head_settings(self) -> tuple[float, float | None, float]:
        """``fit_personal_head``'s (quantile, max_offset, prior_windows) from the twin's config, in that
        order (runners pass arguments by position)."""
        cfg = self.cfg
        return cfg.head_quantile, cfg.head_max_offset, cfg.head_prior_windows

    def fine_tune_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(own normal per-signal errors, fleet per-signal reference) for ``fit_personal_head``."""
        if self.scorer is None:
            raise ValueError(f"twin {self.vehicle_id}: no anomaly model, nothing to fine-tune")
        return self.scorer.fine_tune_inputs()

    def install_head(self, head: PersonalHead) -> None:
        if self.scorer is not None:
            self.scorer.install_head(head)

    # ------------------------------------------------------------------ queries
    def summary(self) -> dict[str, Any]:
        baseline: dict[str, list[float]] = {}
        if self.baseline.mean is not None and self.baseline.ready:
            std = self.baseline.std()
            baseline = {FEATURE_NAMES[i]: [round(float(self.baseline.mean[i]), 6), round(float(std[i]), 6)]
                        for i in range(min(len(FEATURE_NAMES), self.baseline.mean.size))}
        schedule = self.schedule
        return {
            "vehicle_id": self.vehicle_id,
            "applied_seq": None if self.applied_seq == NO_SEQ else self.applied_seq,
            "last_ts_ms": None if self.last_ts == NO_SEQ else self.last_ts,
            "frames_applied": self.frames_applied,
            "duplicates": self.duplicates,
            "buffered": self.reorder.size,
            "windows_closed": self.windows_closed,
            "anomaly_score": round(self.last_score, 6),
            "fleet_ratio": round(self.last_fleet_ratio, 6),
            "baseline_ratio": round(self.last_baseline_ratio, 6),
            "anomaly_active": self.anomaly_gate.active,
            "signals": self.last_signals,
            "baseline": baseline,
            "risk": {str(h): p for h, p in schedule.risk.items()},
            "risk_window_end_ms": None if schedule.risk_window_end == NO_SEQ else schedule.risk_window_end,
            "prediction_due": schedule.pending is not None,
            "open_alerts": list(self.open_alerts),
            "head_version": self.head.version,
            # Real faults only: faulty frames and episodes of fitted sensors (a field never sent is not fitted).
            "sensor_faults": {SENSORS[j]: int(c) for j, c in enumerate(self.faults.counts) if c},
            "sensor_fault_episodes": {SENSORS[j]: {str(KINDS[k]): int(self.faults.episodes[j, k])
                                                   for k in np.flatnonzero(self.faults.episodes[j])}
                                      for j in np.flatnonzero(self.faults.episodes.sum(axis=1))},
            "open_sensor_faults": [f"{SENSORS[j]}:{kind}" for j, kind in self.faults.open_faults()],
            "fitted_sensors": [SENSORS[j] for j in np.flatnonzero(self.faults.fitted)],
            "seq_epoch": self.reorder.epoch,
        }

    # ------------------------------------------------------------------ state
    _SCALARS = ("last_score", "last_fleet_ratio", "last_baseline_ratio", "last_window_end", "last_ts",
                "frames_applied", "duplicates", "windows_closed")

    def to_bytes(self) -> bytes:
        """Versioned explicit format: magic, then an npz (no pickle) holding a JSON header ("meta": the twin's
        own fields and each part's meta under ``parts``) and every part's arrays as ``<part>__<name>``."""
        parts: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {
            "reorder": self.reorder.to_state(),
            "faults": self.faults.to_state(),
            "baseline": self.baseline.to_state(),
            "schedule": (self.schedule.to_state(), {}),
            "assembler": ({}, {"bytes": np.frombuffer(self.assembler.to_bytes(), dtype=np.uint8)}),
            "features": ({}, {"bytes": np.frombuffer(self.features.to_bytes(), dtype=np.uint8)}),
        }
        if self.scorer is not None:
            parts["scorer"] = self.scorer.to_state()
        own = {name: getattr(self, name) for name in self._SCALARS}
        own.update(last_signals=self.last_signals, open_alerts=self.open_alerts,
                   anomaly_gate=gate_state(self.anomaly_gate))
        if self.log_position:  # only in logged snapshots: other checkpoints keep their bytes
            own["log_position"] = self.log_position
        meta = {"format": FORMAT_VERSION, "vehicle_id": self.vehicle_id, "window_ms": self.window_ms,
                "stride_ms": self.stride_ms, "cfg": self.cfg.model_dump(mode="json"), "twin": own,
                "parts": {name: part_meta for name, (part_meta, _) in parts.items()}}
        arrays = {f"{name}__{key}": value for name, (_, part_arrays) in parts.items()
                  for key, value in part_arrays.items()}
        if self.last_features is not None:
            arrays["twin__last_features"] = self.last_features
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        buf.write(_MAGIC)
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, anomaly_model: AnomalyModel | None = None,
                   cfg: TwinsConfig | None = None) -> VehicleTwin:
        if not data.startswith(_MAGIC):
            raise ValueError("not a twin checkpoint (bad magic)")
        with np.load(io.BytesIO(data[len(_MAGIC):]), allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
        meta = json.loads(stored.pop("meta").tobytes())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"twin checkpoint format {meta.get('format')} is not supported: this code reads format "
                             f"{FORMAT_VERSION} only (rebuild the twin from its telemetry)")
        arrays: dict[str, dict[str, np.ndarray]] = {}
        for key, value in stored.items():
            part, name = key.split("__", 1)
            arrays.setdefault(part, {})[name] = value
        parts = meta["parts"]
        twin = cls(meta["vehicle_id"], cfg or TwinsConfig.model_validate(meta["cfg"]), meta["window_ms"],
                   meta["stride_ms"], anomaly_model)
        c = twin.cfg
        own = meta["twin"]
        for name in cls._SCALARS:
            setattr(twin, name, own[name])
        twin.last_signals = own["last_signals"]
        twin.open_alerts = own["open_alerts"]
        twin.log_position = own.get("log_position", "")
        twin.anomaly_gate = gate_from_state(own["anomaly_gate"])
        last_features = arrays.get("twin", {}).get("last_features")
        twin.last_features = None if last_features is None else last_features.copy()
        twin.reorder = ReorderBuffer.from_state(parts["reorder"], arrays["reorder"], c.reorder_buffer_frames,
                                                c.first_seq, c.seq_restart_tolerance_ms)
        if twin.reorder.applied_ts == NO_SEQ and twin.reorder.applied_seq != NO_SEQ:
            twin.reorder.applied_ts = twin.last_ts  # saved before counter epochs: one epoch so far
        twin.faults = SensorFaultTracker.from_state(parts["faults"], arrays["faults"], SCHEMA.lower_bounds,
                                                    SCHEMA.upper_bounds,
                                                    FaultSettings.from_config(c, SENSORS, twin.vehicle_id))
        twin.baseline = baseline_from_state(parts["baseline"], arrays.get("baseline", {}))
        twin.schedule = PredictionSchedule.from_state(parts["schedule"], twin.schedule.interval_ms)
        twin.assembler = WindowAssembler.from_bytes(arrays["assembler"]["bytes"].tobytes())
        twin.features = FeatureState.from_bytes(arrays["features"]["bytes"].tobytes())
        if anomaly_model is not None and "scorer" in parts:
            twin.scorer = FleetScorer.from_state(parts["scorer"], arrays["scorer"], anomaly_model, c)
        return twin


def ingest_many(twins: Sequence[VehicleTwin], batches: Sequence[Mapping[str, Any]]) -> list[TwinStep]:
    """Frames for many twins in one step: the same outcome as ``twin.ingest(batch)`` for each, cheaper.

    Frame handling (validation, dedup, reorder, window assembly) is per twin; closing the windows is
    done for all twins together (``_close_windows``). Every twin appears at most once.
    """
    if len(twins) != len(batches):
        raise ValueError(f"ingest_many: {len(twins)} twins but {len(batches)} batches")
    if len({id(t) for t in twins}) != len(twins):
        raise ValueError("ingest_many: a twin appears twice (its frames would be handled before its own windows close)")
    steps = [TwinStep(applied_seq=twin.applied_seq) for twin in twins]
    received = [len(batch["seq"]) > 0 for batch in batches]
    closings = []
    for twin, batch, step, any_frames in zip(twins, batches, steps, received, strict=False):
        if any_frames:
            closed = twin._receive(batch, step)
            if closed:
                closings.append((twin, step, closed))
    if closings:
        _close_windows(closings)
    for twin, step, any_frames in zip(twins, steps, received, strict=False):
        if any_frames:
            twin._finish(step)
    return steps


def _close_windows(closings: list[tuple[VehicleTwin, TwinStep, list[tuple[int, dict[str, np.ndarray]]]]]) -> None:
    """Close the windows of many twins: features per round, ONE fleet-model call, then decisions in order.

    Features never depend on decisions, so batching changes nothing but the cost. Round ``k`` takes the
    ``k``-th closed window of every twin that has one (a state advances once per round, in time order).
    """
    records: list[list[ClosedWindow]] = [[] for _ in closings]
    rounds = max(len(closed) for _, _, closed in closings)
    for k in range(rounds):
        members = [i for i, (_, _, closed) in enumerate(closings) if len(closed) > k]
        X = update_many([closings[i][0].features for i in members], [int(closings[i][2][k][0]) for i in members],
                        [closings[i][2][k][1]["values"] for i in members])  # finite float32 rows
        round_usual = usual_for_vehicle(X).tolist()
        for row, i in enumerate(members):
            end_ms, window = closings[i][2][k]
            records[i].append(ClosedWindow(int(end_ms), int(window["seq"][-1]), X[row].copy(), round_usual[row],
                                           last_of_step=k == len(closings[i][2]) - 1))
    # The fleet model: every closed window of every twin with a model, one call per model object.
    scored = [i for i, (twin, _, _) in enumerate(closings) if twin.scorer is not None]
    if scored:
        results = score_windows([closings[i][0].scorer for i in scored],
                                [np.stack([w.features for w in records[i]]) for i in scored])
        for i, result in zip(scored, results, strict=False):
            for k, window in enumerate(records[i]):
                window.fleet_ratio = result.fleet_ratios[k]
                window.signal_errors = result.signal_errors[k]
                window.top_signals, window.row = result.top, result.first_row + k
    for (twin, step, _), windows in zip(closings, records, strict=False):
        for window in windows:
            twin._close_window(window, step)


class _WindowSignals:
    """The signals that drive one window's score, computed at most once and only if asked for."""

    __slots__ = ("twin", "window", "value")

    def __init__(self, twin: VehicleTwin, window: ClosedWindow) -> None:
        self.twin, self.window, self.value = twin, window, None

    def get(self) -> list[list[Any]]:
        if self.value is None:
            top = self.window.top_signals
            named = top.row(self.window.row) if top is not None else None
            self.value = named if named is not None else self.twin._baseline_signals(self.window.features)
        return self.value


TwinFactory = Callable[[str], VehicleTwin]
