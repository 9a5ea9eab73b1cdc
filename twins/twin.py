"""``VehicleTwin``: the pure, per-vehicle state machine (no Ray, no gRPC, no wall clock).

    frames --validate--> --dedup/reorder by seq--> --windows--> FeatureState --> scores --> alerts

* Validation: every sensor value outside the telemetry contract (NaN, inf, impossible) is a sensor
  fault; a fault episode raises one ``sensor_fault`` alert. The frame is still applied: the feature
  function is NaN-aware (and scores data quality), and the LSTM-AE gets the bad value replaced by the
  signal's last good value, so no model ever sees NaN.
* Ordering is by ``seq`` only, from ``first_seq`` (or, for a counter first seen elsewhere, from the
  oldest frame once the reorder buffer is full). ``seq <= applied`` is a duplicate (acknowledged, ignored) unless it lies in
  a gap that was given up on, then it is refused as ``late``. Frames after a gap wait in a reorder
  buffer of ``reorder_buffer_frames``; when it overflows the gap is skipped.
* Windows come from ``training.windows.WindowAssembler`` and features from
  ``training.features.FeatureState``: the same code as the offline pipeline.
* Scores per closed window: the fleet LSTM-AE error through the per-vehicle head (``personalise``), and
  the vehicle's own baseline (``baseline``), which learns only from windows it did not flag.
* Learning (baseline, head) is judged against the fleet model's validated level 1.0, not the operator's
  ``anomaly_alert_level``; every step reports its windows' scores (``TwinStep.windows``). The head learns
  the twin's first ``anomaly_warmup_windows`` windows (its first head is fitted from them, inline, when the
  hold ends), then only windows usual for the vehicle's own feature baseline (every ``_z`` within 3).
* Alerts: ``training.alerting`` (the decision the offline evaluation uses too): hysteresis
  (``anomaly_consecutive_windows`` to fire, below ``anomaly_clear_ratio`` to clear) plus a cooldown in
  frame time, after a cold-start hold of ``anomaly_warmup_windows``; ids are
  ``alert_id(vehicle, rule, triggering seq)``.

Batching never changes the outcome: ingesting frames one by one or in one call gives the same state,
and so does stepping many twins together. ``ingest_many(twins, batches)`` is the one ingestion path
(``VehicleTwin.ingest`` is it with one twin): frame handling is per twin, closing windows is done for
all twins at once (``training.features.update_many`` per round of windows, ONE fleet-model call for
every closed window of every twin), then the decisions per twin, in time order.
"""
from __future__ import annotations

import functools
import io
import json
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from configs.frames import frames_matrix
from configs.schema import SCHEMA
from configs.settings import TwinsConfig
from training.alerting import AlertPolicy, AlertState, per_signal_errors
from training.features import BASELINE_LEARN_Z, FEATURE_NAMES, FeatureState, update_many
from training.windows import WindowAssembler
from twins.baseline import EwmaBaseline, baseline_from_state
from twins.personalise import PersonalHead, fit_personal_head
from twins.types import Alert, Rejection, TwinStep, WindowScore, alert_id

FORMAT_VERSION = 1
_MAGIC = b"EVTWIN1\n"
SENSORS: tuple[str, ...] = SCHEMA.sensor_names
N_SENSORS = len(SENSORS)
_MIDPOINTS = ((SCHEMA.lower_bounds + SCHEMA.upper_bounds) / 2.0)
_MAX_SKIPPED_RANGES = 256
_MAX_OPEN_ALERTS = 32
_NORMAL_ERRORS_KEPT = 512
_NO_SEQ = -(2**62)
# Learning (baseline, personal head) is judged against the fleet model's validated alert level (score 1),
# not the operator's ``anomaly_alert_level``: what a twin learns, and so its scores, do not depend on where
# its alerts are set, except that a window its own gate flagged is never learned either (at level 1, the
# default and the bench's, the two coincide, so an offline sweep of levels is the twin's decision).
LEARNING_REFERENCE_LEVEL = 1.0


class AnomalyModel(Protocol):
    """What the twin needs from the trained LSTM-AE (``training.artifacts.load_anomaly_model``)."""

    threshold: float
    signal_names: tuple[str, ...]
    sequence_length: int

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _feature_state_factory() -> Any:
    return FeatureState()


def _feature_state_from_bytes(data: bytes) -> Any:
    return FeatureState.from_bytes(data)


def feature_names() -> tuple[str, ...]:
    return FEATURE_NAMES


@functools.cache
def _own_z_index() -> tuple[np.ndarray, float]:
    """Positions of the per-vehicle z-score features, and the |z| band their baseline learns from."""
    return np.array([i for i, name in enumerate(feature_names()) if name.endswith("_z")]), BASELINE_LEARN_Z


def usual_for_vehicle(features: np.ndarray) -> np.ndarray:
    """Per row of a (windows x features) matrix: every trend z-score (against the vehicle's own feature
    baseline) within the band that baseline itself learns from. Computed for a whole round of windows at once."""
    index, band = _own_z_index()
    return np.abs(features[:, index]).max(axis=1) <= band


def forward_fill(values: np.ndarray, invalid: np.ndarray, last_good: np.ndarray) -> np.ndarray:
    """Replace invalid entries by the signal's previous good value (``last_good`` before the batch).

    >>> v = np.array([[1.0], [np.nan], [3.0], [np.nan]], dtype=np.float32)
    >>> forward_fill(v, np.isnan(v), np.array([0.5])).ravel().tolist()
    [1.0, 1.0, 3.0, 3.0]
    """
    out = values.copy()
    for j in np.flatnonzero(invalid.any(axis=0)):
        rows = np.arange(len(values))
        source = np.maximum.accumulate(np.where(invalid[:, j], -1, rows))
        fill = last_good[j] if np.isfinite(last_good[j]) else _MIDPOINTS[j]
        out[:, j] = np.where(source >= 0, values[np.maximum(source, 0), j], fill)
    return out


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
        self.assembler = WindowAssembler(window_ms=self.window_ms, stride_ms=self.stride_ms)
        self.features = _feature_state_factory()
        self.baseline = EwmaBaseline(half_life=cfg.baseline_half_life_windows, warmup=cfg.baseline_warmup_windows)
        n_signals = len(anomaly_model.signal_names) if anomaly_model is not None else 0
        self.head = PersonalHead.identity(n_signals)
        self.normal_errors = np.zeros((0, n_signals), dtype=np.float32)
        self._new_normal_errors: list[np.ndarray] = []  # rows for normal_errors, added at the step's last window
        self.windows_since_tune = 0
        # ordering
        self.applied_seq = _NO_SEQ
        self.skipped: list[list[int]] = []  # [lo, hi] inclusive seq ranges given up on
        self.buf_seq = np.zeros(0, dtype=np.int64)
        self.buf_ts = np.zeros(0, dtype=np.int64)
        self.buf_values = np.zeros((0, N_SENSORS), dtype=np.float32)
        # signal hygiene
        self.last_good = np.full(N_SENSORS, np.nan)
        self.last_fault_ts = _NO_SEQ
        self.fault_cooldown_until = _NO_SEQ
        self.fault_counts = np.zeros(N_SENSORS, dtype=np.int64)
        # anomaly gate: the same decision function as the offline evaluation (training.alerting)
        self.anomaly_gate = AlertState()
        self.last_score = 0.0
        self.last_fleet_ratio = 0.0
        self.last_baseline_ratio = 0.0
        self.last_signals: list[list[Any]] = []
        self.last_features: np.ndarray | None = None
        self.last_window_end = _NO_SEQ
        self.sequence_rows = np.zeros((0, n_signals), dtype=np.float32)  # frame history for the LSTM-AE
        # predictions
        self.next_prediction_ms = _NO_SEQ
        self.pending_prediction: tuple[int, int] | None = None  # (window_end_ms, seq at that window)
        self.risk: dict[int, float] = {}
        self.risk_window_end = _NO_SEQ
        self.risk_gate = AlertState()
        # bookkeeping
        self.last_ts = _NO_SEQ
        self.frames_applied = 0
        self.duplicates = 0
        self.windows_closed = 0
        self.open_alerts: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ ingestion
    def ingest(self, columns: Mapping[str, Any]) -> TwinStep:
        """Take frames of this vehicle (``seq``, ``ts`` int64 ms, sensor columns), any order, any count.

        The batch path (``ingest_many``) with one twin: there is no other.
        """
        return ingest_many([self], [columns])[0]

    def _receive(self, columns: Mapping[str, Any], step: TwinStep) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Frame handling (validate, dedup, reorder, window assembly): the windows these frames closed."""
        seq = np.asarray(columns["seq"], dtype=np.int64)
        ts = np.asarray(columns["ts"], dtype=np.int64)
        values = frames_matrix(columns, seq.size)
        if seq.size > 1 and not bool((seq[1:] > seq[:-1]).all()):  # in order and unique: nothing to sort
            order = np.argsort(seq, kind="stable")
            seq, ts, values = seq[order], ts[order], values[order]
            first = np.ones(seq.size, dtype=bool)
            first[1:] = seq[1:] != seq[:-1]
            step.duplicates += int((~first).sum())
            if not first.all():
                seq, ts, values = seq[first], ts[first], values[first]
        if seq[0] <= self.applied_seq:
            old = seq <= self.applied_seq
            self._refuse_or_ack_old(seq[old], step)
            seq, ts, values = seq[~old], ts[~old], values[~old]
        self._merge_into_buffer(seq, ts, values, step)
        return self._release_buffer(step)

    def _finish(self, step: TwinStep) -> None:
        """What the step reports once its windows are closed."""
        step.applied_seq = self.applied_seq
        step.buffered = int(self.buf_seq.size)
        self.duplicates += step.duplicates
        step.prediction_due = self.pending_prediction is not None
        step.fine_tune_due = self.fine_tune_due()

    def _refuse_or_ack_old(self, seqs: np.ndarray, step: TwinStep) -> None:
        late = np.zeros(seqs.size, dtype=bool)
        for lo, hi in self.skipped:
            late |= (seqs >= lo) & (seqs <= hi)
        step.duplicates += int((~late).sum())
        for s in seqs[late]:
            step.rejected.append(Rejection(self.vehicle_id, int(s), "late",
                                           f"seq {int(s)} arrived after its gap was skipped "
                                           f"(reorder buffer holds {self.cfg.reorder_buffer_frames} frames)"))

    def _merge_into_buffer(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray, step: TwinStep) -> None:
        if seq.size == 0:
            return
        if self.buf_seq.size == 0:
            # Copies: the input may be a view of the caller's batch (kept alive, or changed later).
            self.buf_seq, self.buf_ts, self.buf_values = seq.copy(), ts.copy(), values.copy()
            return
        dup = np.isin(seq, self.buf_seq)
        step.duplicates += int(dup.sum())
        seq, ts, values = seq[~dup], ts[~dup], values[~dup]
        all_seq = np.concatenate([self.buf_seq, seq])
        order = np.argsort(all_seq, kind="stable")
        self.buf_seq = all_seq[order]
        self.buf_ts = np.concatenate([self.buf_ts, ts])[order]
        self.buf_values = np.concatenate([self.buf_values, values])[order]

    def _release_buffer(self, step: TwinStep) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Apply the contiguous run after ``applied_seq``; skip gaps when the buffer overflows."""
        if self.buf_seq.size == 0:
            return []
        limit = self.cfg.reorder_buffer_frames
        if self.applied_seq == _NO_SEQ:
            # First contact: a counter starts at ``first_seq``; one that starts elsewhere (a resumed
            # client, a new server) starts at its oldest frame once the reorder buffer is full.
            if self.buf_seq[0] > self.cfg.first_seq and self.buf_seq.size <= limit:
                return []
            self.applied_seq = int(self.buf_seq[0]) - 1
        # Frames that must go because the buffer is full: the oldest ``overflow`` ones, gaps and all.
        overflow = max(0, self.buf_seq.size - limit)
        expected = self.applied_seq + 1 + np.arange(self.buf_seq.size)
        contiguous = self.buf_seq == expected
        run = self.buf_seq.size if contiguous.all() else int(np.argmin(contiguous))
        take = max(run, overflow)
        if take < self.buf_seq.size and take == overflow and overflow > 0:
            # Continue with whatever is contiguous after the forced part.
            tail = self.buf_seq[take:]
            chain = tail == (self.buf_seq[take - 1] + 1 + np.arange(tail.size))
            take += tail.size if chain.all() else int(np.argmin(chain))
        if take == 0:
            return []
        seq, ts, values = self.buf_seq[:take], self.buf_ts[:take], self.buf_values[:take]
        # Copies, not views: a view would keep the whole batch alive in a resident twin.
        self.buf_seq, self.buf_ts, self.buf_values = (self.buf_seq[take:].copy(), self.buf_ts[take:].copy(),
                                                      self.buf_values[take:].copy())
        self._record_gaps(seq)
        return self._apply(seq, ts, values, step)

    def _record_gaps(self, seq: np.ndarray) -> None:
        if seq[-1] - self.applied_seq == seq.size:
            return  # contiguous: no gap
        previous = np.concatenate([[self.applied_seq], seq[:-1]])
        for gap in np.flatnonzero(seq - previous > 1):
            self.skipped.append([int(previous[gap]) + 1, int(seq[gap]) - 1])
        del self.skipped[:-_MAX_SKIPPED_RANGES]

    def _apply(self, seq: np.ndarray, ts: np.ndarray, values: np.ndarray,
               step: TwinStep) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Frames in seq order, no duplicates: validate, then window (closing is ``_close_windows``)."""
        invalid = SCHEMA.out_of_range(values)
        clean = values
        if invalid.any():
            self._sensor_faults(seq, ts, invalid, step)
            clean = forward_fill(values, invalid, self.last_good)
        self.last_good = clean[-1].astype(np.float64)
        self.applied_seq = int(seq[-1])
        self.last_ts = max(self.last_ts, int(ts.max()))
        self.frames_applied += int(seq.size)
        step.applied += int(seq.size)
        # Features get the raw values (the feature function is NaN-aware and scores data quality
        # itself, exactly as offline); the LSTM-AE gets cleaned values, never NaN.
        data = {"values": values, "seq": seq, "ts": ts}
        if self._model_reads_frames():
            data["clean"] = clean[:, self._model_index(SENSORS)]
        return self.assembler.push(ts, data)

    # ------------------------------------------------------------------ sensor faults
    def _sensor_faults(self, seq: np.ndarray, ts: np.ndarray, invalid: np.ndarray, step: TwinStep) -> None:
        rows = np.flatnonzero(invalid.any(axis=1))
        self.fault_counts += invalid.sum(axis=0)
        clear_ms = int(self.cfg.sensor_fault_clear_minutes * 60_000)
        fault_ts = ts[rows]
        previous = np.concatenate([[self.last_fault_ts], np.maximum.accumulate(fault_ts)[:-1]])
        episode_starts = rows[(fault_ts - previous) > clear_ms]
        self.last_fault_ts = max(self.last_fault_ts, int(fault_ts.max()))
        for r in episode_starts:
            if int(ts[r]) < self.fault_cooldown_until:
                continue
            fields = [SENSORS[j] for j in np.flatnonzero(invalid[r])]
            self.fault_cooldown_until = int(ts[r]) + self._cooldown_ms()
            self._emit(step, "sensor_fault", int(ts[r]), int(seq[r]), 1.0,
                       [(f, 1.0 / len(fields)) for f in fields],
                       f"impossible or missing values on {', '.join(fields)}")

    # ------------------------------------------------------------------ windows
    def _model_rows(self, windows: list[tuple[int, dict[str, np.ndarray]]],
                    features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the LSTM-AE reads of the closed windows, stacked, and the rows per window: each
        window's cleaned frames, or (the trained model) its feature vector."""
        if self._model_reads_frames():
            blocks = [window["clean"] for _, window in windows]
            return np.concatenate(blocks), np.array([b.shape[0] for b in blocks])
        return features[:, self._model_index(feature_names())], np.ones(len(windows), dtype=np.int64)

    def _sequences(self, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(windows, L, signals) model input ending at each window; advances the frame history.

        Each sequence is the last L rows up to its window (front padded with the oldest row while the
        history is shorter, as the offline sequences are).
        """
        assert self.model is not None
        length = int(self.model.sequence_length)
        history = np.concatenate([self.sequence_rows, rows])
        ends = self.sequence_rows.shape[0] + np.cumsum(counts)
        index = np.maximum(ends[:, None] - length + np.arange(length), 0)
        self.sequence_rows = history[-length:].copy()
        return history[index]

    def _close_window(self, end_ms: int, last_seq: int, features: np.ndarray, usual: bool, fleet_ratio: float,
                      signal_errors: np.ndarray | None, top_signals: "_TopSignals | None", row: int,
                      last_of_step: bool, step: TwinStep) -> None:
        """One closed window's decisions (sequential per twin: each may change the baseline and gates).

        What nothing reads before the next window is computed only for the last window of the step or
        where an alert needs it (the baseline ratio when the fleet model decides, the named signals):
        the state after the step is the same as if every window had computed it.
        """
        self.windows_closed += 1
        self.last_features = features
        self.last_window_end = int(end_ms)
        cfg = self.cfg
        needs_baseline = self.model is None or (cfg.personalise and cfg.baseline_veto and self.baseline.ready)
        baseline_ratio = (self.baseline.score_one(features) / cfg.baseline_z_threshold
                          if needs_baseline or last_of_step else None)
        if self.model is None:
            score = baseline_ratio
        elif needs_baseline:
            score = min(self._personal_fleet_ratio(signal_errors, fleet_ratio), baseline_ratio)
        elif cfg.personalise:
            score = self._personal_fleet_ratio(signal_errors, fleet_ratio)
        else:
            score = fleet_ratio
        self.last_score, self.last_fleet_ratio = float(score), fleet_ratio
        step.windows.append(WindowScore(int(end_ms), float(fleet_ratio), float(score), self.head.version))
        if baseline_ratio is not None:
            self.last_baseline_ratio = baseline_ratio
        signals = _WindowSignals(self, features, top_signals, row)
        # Cold-start hold: the gate only starts once the twin has closed its warm-up windows (it then
        # starts fresh, exactly as an offline gate over the windows after warm-up would).
        warm = self.windows_closed > cfg.anomaly_warmup_windows
        fired = warm and self._anomaly_gate(score, end_ms, last_seq, step, signals)
        if last_of_step:
            self.last_signals = signals.get()
        # Protected learning: a window the twin doubts at the reference level, or one its own gate flagged
        # (at another operator level), never becomes part of its normal.
        flagged = fired or self.anomaly_gate.active or score >= LEARNING_REFERENCE_LEVEL
        if not flagged:
            self.baseline.learn_one(features)
        in_hold = not warm
        if signal_errors is not None and (in_hold or (not flagged and usual)):
            # The head learns the vehicle's first day (it cannot alert then: its normal, by assumption), then
            # only windows it did not doubt that its own feature baseline finds usual: a part failing slowly
            # drifts out of its own baseline before its error is learned as normal.
            self._new_normal_errors.append(signal_errors[None, :])
            self.windows_since_tune += 1
        first_head_due = (in_hold and self.windows_closed == cfg.anomaly_warmup_windows and cfg.personalise
                          and self.head.version == 0 and signal_errors is not None)
        if (last_of_step or first_head_due) and self._new_normal_errors:
            self.normal_errors = np.vstack([self.normal_errors, *self._new_normal_errors])[-_NORMAL_ERRORS_KEPT:]
            self._new_normal_errors = []
        if first_head_due:
            # Inline (a quantile over a day of windows), so the head is in force from the first window that
            # may alert; the periodic refits run as Ray tasks (``twins.host``).
            self.install_head(fit_personal_head(*self.fine_tune_inputs(), 1, *self.head_settings()))
        if fired or end_ms >= self.next_prediction_ms:
            self.pending_prediction = (int(end_ms), last_seq)
            self.next_prediction_ms = int(end_ms) + int(cfg.prediction_interval_minutes * 60_000)

    def _model_reads_frames(self) -> bool:
        """The LSTM-AE reads either raw frame signals or (the trained one) window feature sequences."""
        return self.model is not None and all(n in SENSORS for n in self.model.signal_names)

    def _model_index(self, names: tuple[str, ...]) -> np.ndarray:
        assert self.model is not None
        cached = getattr(self, "_index_cache", None)
        if cached is None or cached[0] is not names:
            cached = (names, np.array([names.index(n) for n in self.model.signal_names], dtype=np.int64))
            self._index_cache = cached
        return cached[1]

    def _alert_error(self) -> float:
        """Reconstruction error at which the fleet model alerts (threshold x validated alert level)."""
        assert self.model is not None
        return float(self.model.threshold) * float(getattr(self.model, "alert_threshold", 1.0))

    def _personal_fleet_ratio(self, signal_errors: np.ndarray | None, fleet_ratio: float) -> float:
        if signal_errors is None or self.head.version == 0:
            return fleet_ratio
        return self.head.apply(signal_errors) / self._alert_error()

    def _baseline_signals(self, features: np.ndarray) -> list[list[Any]]:
        """Driving signals without a fleet-model error: the features furthest from the twin's baseline."""
        z = np.abs(self.baseline.zscores(features))
        if not z.any():
            return []
        fnames = feature_names()
        top = np.argsort(-z)[:3]
        total = float(z[top].sum()) or 1.0
        return [[fnames[i], round(float(z[i]) / total, 4)] for i in top]

    def _anomaly_gate(self, score: float, end_ms: int, seq: int, step: TwinStep,
                      signals: "_WindowSignals | None" = None) -> bool:
        """The anomaly alert gate; an alert names ``signals`` (default: the twin's last named ones)."""
        if not self.anomaly_gate.step(int(end_ms), score, self.anomaly_policy):
            return False
        if signals is not None:
            self.last_signals = signals.get()
        names = ", ".join(str(s[0]) for s in self.last_signals) or "features"
        self._emit(step, "anomaly", int(end_ms), seq, score, [tuple(s) for s in self.last_signals],
                   f"anomaly score {score:.2f}x threshold, driven by {names}")
        return True

    def _cooldown_ms(self) -> int:
        return int(self.cfg.alert_cooldown_minutes * 60_000)

    def _emit(self, step: TwinStep, rule: str, ts_ms: int, seq: int, score: float,
              signals: list[tuple[str, float]], message: str, **extra: Any) -> Alert:
        alert = Alert(alert_id=alert_id(self.vehicle_id, rule, seq), vehicle_id=self.vehicle_id, rule=rule,
                      ts_ms=int(ts_ms), seq=int(seq), score=round(float(score), 6),
                      signals=tuple((str(n), float(s)) for n, s in signals), message=message, **extra)
        step.alerts.append(alert)
        self.open_alerts = (self.open_alerts + [alert.to_dict()])[-_MAX_OPEN_ALERTS:]
        return alert

    # ------------------------------------------------------------------ predictions
    def take_prediction_request(self) -> tuple[int, np.ndarray] | None:
        """(window_end_ms, features) if a prediction is due; it stays due until ``apply_prediction``."""
        if self.pending_prediction is None or self.last_features is None:
            return None
        return self.pending_prediction[0], self.last_features

    def apply_prediction(self, window_end_ms: int, risk: dict[int, float], severity: int | None = None,
                         mode: str | None = None, contributions: list[tuple[str, float]] | None = None) -> list[Alert]:
        """Record a model answer for the pending request; may raise a ``failure_risk`` alert."""
        step = TwinStep(applied_seq=self.applied_seq)
        if self.pending_prediction is None or window_end_ms > self.pending_prediction[0] \
                or window_end_ms <= self.risk_window_end:
            return []  # nothing asked, or an answer already superseded
        seq = self.pending_prediction[1]
        if window_end_ms == self.pending_prediction[0]:
            self.pending_prediction = None
        # An answer for an older window still counts; the newer request stays due.
        self.risk = {int(h): float(p) for h, p in risk.items()}
        self.risk_window_end = int(window_end_ms)
        headline = self.risk[min(self.risk)] if self.risk else 0.0
        policy = AlertPolicy(threshold=self.cfg.risk_alert_threshold, consecutive=1,
                             clear_ratio=self.cfg.anomaly_clear_ratio, cooldown_ms=self._cooldown_ms())
        if self.risk_gate.step(int(window_end_ms), headline, policy):
            signals = [(f, float(v)) for f, v in (contributions or [])]
            self._emit(step, "failure_risk", window_end_ms, seq, headline, signals,
                       f"failure risk {headline:.0%} within {min(self.risk)} days"
                       + (f", most likely {mode}" if mode else ""),
                       mode=mode, risk=dict(self.risk), severity=severity)
        return step.alerts

    # ------------------------------------------------------------------ personalisation
    def fine_tune_due(self) -> bool:
        """Every ``fine_tune_every_windows`` normal windows (the first head is fitted inline when the
        cold-start hold ends; with no hold, it is due like the others)."""
        if self.model is None or not self.cfg.personalise:
            return False
        return self.windows_since_tune >= self.cfg.fine_tune_every_windows

    def head_settings(self) -> tuple[float, float | None, float]:
        """``fit_personal_head``'s (quantile, max_offset, prior_windows) from the twin's config, in that
        order (runners pass arguments by position)."""
        cfg = self.cfg
        return cfg.head_quantile, cfg.head_max_offset, cfg.head_prior_windows

    def fine_tune_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(own normal per-signal errors, fleet per-signal reference) for ``fit_personal_head``."""
        assert self.model is not None
        reference = getattr(self.model, "signal_error_reference", None)
        if reference is None:
            # A model trained before the reference was recorded: a uniform share of the alert error
            # (far above a typical signal's normal error, so the head's cap barely limits it). Retrain.
            n = len(self.model.signal_names)
            # The loader warned about it once (training.artifacts.AnomalyModel).
            reference = np.full(n, self._alert_error() / n)
        return self.normal_errors.copy(), np.asarray(reference, dtype=np.float64)

    def install_head(self, head: PersonalHead) -> None:
        if head.version <= self.head.version or head.offsets.shape != self.head.offsets.shape:
            return  # stale or foreign result: keep the newer head
        self.head = head
        self.windows_since_tune = 0

    # ------------------------------------------------------------------ queries
    def summary(self) -> dict[str, Any]:
        baseline: dict[str, list[float]] = {}
        if self.baseline.mean is not None and self.baseline.ready:
            std = self.baseline.std()
            names = feature_names()
            baseline = {names[i]: [round(float(self.baseline.mean[i]), 6), round(float(std[i]), 6)]
                        for i in range(min(len(names), self.baseline.mean.size))}
        return {
            "vehicle_id": self.vehicle_id,
            "applied_seq": None if self.applied_seq == _NO_SEQ else self.applied_seq,
            "last_ts_ms": None if self.last_ts == _NO_SEQ else self.last_ts,
            "frames_applied": self.frames_applied,
            "duplicates": self.duplicates,
            "buffered": int(self.buf_seq.size),
            "windows_closed": self.windows_closed,
            "anomaly_score": round(self.last_score, 6),
            "fleet_ratio": round(self.last_fleet_ratio, 6),
            "baseline_ratio": round(self.last_baseline_ratio, 6),
            "anomaly_active": self.anomaly_gate.active,
            "signals": self.last_signals,
            "baseline": baseline,
            "risk": {str(h): p for h, p in self.risk.items()},
            "risk_window_end_ms": None if self.risk_window_end == _NO_SEQ else self.risk_window_end,
            "prediction_due": self.pending_prediction is not None,
            "open_alerts": list(self.open_alerts),
            "head_version": self.head.version,
            "sensor_faults": {SENSORS[j]: int(c) for j, c in enumerate(self.fault_counts) if c},
        }

    # ------------------------------------------------------------------ state
    _SCALARS = ("applied_seq", "last_fault_ts", "fault_cooldown_until", "last_score", "last_fleet_ratio",
                "last_baseline_ratio", "last_window_end", "next_prediction_ms", "risk_window_end", "last_ts", "frames_applied", "duplicates", "windows_closed",
                "windows_since_tune")
    _ARRAYS = ("buf_seq", "buf_ts", "buf_values", "last_good", "fault_counts", "normal_errors", "sequence_rows")

    def to_bytes(self) -> bytes:
        """Versioned explicit format: magic, then an npz (no pickle) with a JSON header inside."""
        meta: dict[str, Any] = {name: getattr(self, name) for name in self._SCALARS}
        meta.update(format=FORMAT_VERSION, vehicle_id=self.vehicle_id, window_ms=self.window_ms,
                    stride_ms=self.stride_ms, skipped=self.skipped, last_signals=self.last_signals,
                    pending_prediction=self.pending_prediction, risk={str(k): v for k, v in self.risk.items()},
                    open_alerts=self.open_alerts, head_version=self.head.version,
                    has_features=self.last_features is not None, cfg=self.cfg.model_dump(mode="json"),
                    gates={name: [g.run, g.active, g.last_alert_ms] for name, g in
                           (("anomaly", self.anomaly_gate), ("risk", self.risk_gate))})
        baseline_meta, baseline_arrays = self.baseline.to_state()
        meta["baseline"] = baseline_meta
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        arrays.update({f"baseline__{k}": v for k, v in baseline_arrays.items()})
        arrays["head_offsets"] = self.head.offsets
        if self.last_features is not None:
            arrays["last_features"] = self.last_features
        arrays["assembler"] = np.frombuffer(self.assembler.to_bytes(), dtype=np.uint8)
        arrays["feature_state"] = np.frombuffer(self.features.to_bytes(), dtype=np.uint8)
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        buf.write(_MAGIC)
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, anomaly_model: AnomalyModel | None = None,
                   cfg: TwinsConfig | None = None) -> "VehicleTwin":
        if not data.startswith(_MAGIC):
            raise ValueError("not a twin checkpoint (bad magic)")
        with np.load(io.BytesIO(data[len(_MAGIC):]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta["format"] != FORMAT_VERSION:
            raise ValueError(f"twin checkpoint format {meta['format']} not supported (expected {FORMAT_VERSION})")
        twin = cls(meta["vehicle_id"], cfg or TwinsConfig.model_validate(meta["cfg"]), meta["window_ms"],
                   meta["stride_ms"], anomaly_model)
        for name in cls._SCALARS:
            setattr(twin, name, meta[name])
        for name in cls._ARRAYS:
            setattr(twin, name, arrays[name].copy())
        twin.skipped = [list(map(int, r)) for r in meta["skipped"]]
        twin.last_signals = meta["last_signals"]
        pending = meta["pending_prediction"]
        twin.pending_prediction = None if pending is None else (int(pending[0]), int(pending[1]))
        twin.risk = {int(k): float(v) for k, v in meta["risk"].items()}
        twin.open_alerts = meta["open_alerts"]
        for name, attr in (("anomaly", "anomaly_gate"), ("risk", "risk_gate")):
            run, active, last = meta["gates"][name]
            setattr(twin, attr, AlertState(run=int(run), active=bool(active),
                                           last_alert_ms=None if last is None else int(last)))
        twin.head = PersonalHead(offsets=arrays["head_offsets"].copy(), version=int(meta["head_version"]))
        twin.last_features = arrays["last_features"].copy() if meta["has_features"] else None
        baseline_arrays = {k[len("baseline__"):]: v for k, v in arrays.items() if k.startswith("baseline__")}
        twin.baseline = baseline_from_state(meta["baseline"], baseline_arrays)
        twin.assembler = WindowAssembler.from_bytes(arrays["assembler"].tobytes())
        twin.features = _feature_state_from_bytes(arrays["feature_state"].tobytes())
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
    for twin, batch, step, any_frames in zip(twins, batches, steps, received):
        if any_frames:
            closed = twin._receive(batch, step)
            if closed:
                closings.append((twin, step, closed))
    if closings:
        _close_windows(closings)
    for twin, step, any_frames in zip(twins, steps, received):
        if any_frames:
            twin._finish(step)
    return steps


def _close_windows(closings: list[tuple[VehicleTwin, TwinStep, list[tuple[int, dict[str, np.ndarray]]]]]) -> None:
    """Close the windows of many twins: features per round, ONE fleet-model call, then decisions in order.

    Features never depend on decisions, so batching changes nothing but the cost. Round ``k`` takes the
    ``k``-th closed window of every twin that has one (a state advances once per round, in time order).
    """
    rounds = max(len(closed) for _, _, closed in closings)
    per_twin: list[list[np.ndarray]] = [[] for _ in closings]
    usual: list[list[bool]] = [[] for _ in closings]
    for k in range(rounds):
        members = [i for i, (_, _, closed) in enumerate(closings) if len(closed) > k]
        X = update_many([closings[i][0].features for i in members], [int(closings[i][2][k][0]) for i in members],
                        [closings[i][2][k][1]["values"] for i in members])  # finite float32 rows
        round_usual = usual_for_vehicle(X).tolist()
        for row, i in zip(range(len(members)), members):
            per_twin[i].append(X[row])
            usual[i].append(round_usual[row])
    features = [np.stack(rows) for rows in per_twin]  # one small matrix per twin (no view of the round)
    # The fleet model: every scored window of every twin in one call, rows in (twin, window) order.
    scored = [i for i, (twin, _, _) in enumerate(closings) if twin.model is not None]
    ratios: dict[int, np.ndarray] = {}
    errors_by_twin: dict[int, np.ndarray] = {}
    row_of_twin: dict[int, int] = {}  # first row of the twin's windows in top_signals
    top_signals: _TopSignals | None = None
    if scored:
        sequences = [closings[i][0]._sequences(*closings[i][0]._model_rows(closings[i][2], features[i]))
                     for i in scored]
        groups = _group_by_model([closings[i][0].model for i in scored])
        for model, members in groups:
            batch = np.concatenate([sequences[j] for j in members]).astype(np.float32)
            errors, shares = model.score(batch)
            errors = np.asarray(errors, dtype=np.float64).reshape(-1)
            shares = np.asarray(shares, dtype=np.float64).reshape(errors.size, -1)
            signal_errors = per_signal_errors(errors, shares)
            top = _TopSignals(signal_errors, tuple(model.signal_names))
            top_signals = top if top_signals is None else top_signals.extended(top)
            offset = 0
            for j in members:
                i = scored[j]
                n = sequences[j].shape[0]
                twin = closings[i][0]
                ratios[i] = errors[offset:offset + n] / twin._alert_error()
                errors_by_twin[i] = signal_errors[offset:offset + n]
                row_of_twin[i] = top_signals.size - top.size + offset
                offset += n
    for i, (twin, step, closed) in enumerate(closings):
        last = len(closed) - 1
        if i in ratios:
            ratio_list, first_row, top = ratios[i].tolist(), row_of_twin[i], top_signals
            for k, (end_ms, window) in enumerate(closed):
                twin._close_window(int(end_ms), int(window["seq"][-1]), features[i][k], usual[i][k], ratio_list[k],
                                   errors_by_twin[i][k], top, first_row + k, k == last, step)
        else:
            for k, (end_ms, window) in enumerate(closed):
                twin._close_window(int(end_ms), int(window["seq"][-1]), features[i][k], usual[i][k], 0.0, None, None, 0,
                                   k == last, step)


def _group_by_model(models: list[Any]) -> list[tuple[Any, list[int]]]:
    """Positions per distinct model object (normally one: the fleet model), first appearance order."""
    groups: dict[int, tuple[Any, list[int]]] = {}
    for j, model in enumerate(models):
        groups.setdefault(id(model), (model, []))[1].append(j)
    return list(groups.values())


class _TopSignals:
    """Per row of a batch of per-signal errors: the three signals with the largest share of the error.

    ``row(r)`` builds row ``r``'s ``[[name, share], ...]`` (None when there is no error: the twin then
    names the features furthest from its own baseline) only when asked: most windows never name theirs.
    """

    def __init__(self, signal_errors: np.ndarray, names: tuple[str, ...]) -> None:
        totals = signal_errors.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = signal_errors / totals[:, None]
        top = np.argsort(-shares, axis=1)[:, :3]
        self.parts = [(0, names, top, np.take_along_axis(shares, top, axis=1), totals)]
        self.size = int(totals.size)

    def extended(self, other: "_TopSignals") -> "_TopSignals":
        """This batch's rows followed by ``other``'s (another model's)."""
        self.parts += [(self.size + start, *rest) for start, *rest in other.parts]
        self.size += other.size
        return self

    def row(self, r: int) -> list[list[Any]] | None:
        for start, names, top, top_shares, totals in reversed(self.parts):
            if r >= start:
                r -= start
                if not totals[r] > 0:
                    return None
                return [[names[c], round(v, 4)] for c, v in zip(top[r].tolist(), top_shares[r].tolist())]
        raise IndexError(r)


class _WindowSignals:
    """The signals that drive one window's score, computed at most once and only if asked for."""

    __slots__ = ("twin", "features", "top", "r", "value")

    def __init__(self, twin: VehicleTwin, features: np.ndarray, top: _TopSignals | None, r: int) -> None:
        self.twin, self.features, self.top, self.r, self.value = twin, features, top, r, None

    def get(self) -> list[list[Any]]:
        if self.value is None:
            named = self.top.row(self.r) if self.top is not None else None
            self.value = named if named is not None else self.twin._baseline_signals(self.features)
        return self.value


TwinFactory = Callable[[str], VehicleTwin]
