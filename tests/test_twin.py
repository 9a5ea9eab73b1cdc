"""VehicleTwin: the pure per-vehicle state machine (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.settings import TwinsConfig, load_config
from training.features import vehicle_feature_matrix
from twins.baseline import EwmaBaseline, WelfordBaseline
from twins.personalise import PersonalHead
from twins.synthetic import synthetic_frames, take
from twins.twin import SENSORS, VehicleTwin
from twins.types import alert_id

WINDOW_MS = 600_000  # 10 min = 60 frames at 10 s
FRAMES_PER_WINDOW = 60


def twins_cfg(**overrides: object) -> TwinsConfig:
    base = {"baseline_warmup_windows": 10, "alert_cooldown_minutes": 120, "reorder_buffer_frames": 16,
            "prediction_interval_minutes": 30, "fine_tune_every_windows": 10, "anomaly_warmup_windows": 3}
    base.update(overrides)
    return load_config(overrides=[f"twins.{k}={str(v).lower() if isinstance(v, bool) else v}"
                                  for k, v in base.items()]).twins


def new_twin(cfg: TwinsConfig | None = None, model: object = None, vehicle_id: str = "veh-1") -> VehicleTwin:
    return VehicleTwin(vehicle_id, cfg or twins_cfg(), WINDOW_MS, WINDOW_MS, model)


def state_without_counters(twin: VehicleTwin) -> bytes:
    clone = VehicleTwin.from_bytes(twin.to_bytes())
    clone.duplicates = 0
    return clone.to_bytes()


class FakeAnomalyModel:
    """Reconstruction error = squared distance of two window features (the window means of two sensors)
    from fixed levels (deterministic)."""

    signal_names = ("cell_temp_max_mean", "motor_temp_mean")
    sequence_length = 8
    threshold = 1.0
    signal_error_reference = np.array([0.5, 0.5])  # the fleet's normal error per signal

    def __init__(self, levels: tuple[float, float]) -> None:
        self.levels = np.array(levels)
        self.seen_nan = False

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.seen_nan |= bool(np.isnan(sequences).any())
        per_signal = ((sequences.mean(axis=1) - self.levels) ** 2) / 4.0
        total = per_signal.sum(axis=1)
        shares = per_signal / np.maximum(total[:, None], 1e-12)
        return total, shares


# ------------------------------------------------------------------------ ordering, dedup, batching
def test_batching_does_not_change_the_state() -> None:
    frames = synthetic_frames("veh-1", 7 * FRAMES_PER_WINDOW + 13)
    whole, single, chunks = new_twin(), new_twin(), new_twin()
    whole.ingest(frames)
    for i in range(frames["seq"].size):
        single.ingest(take(frames, slice(i, i + 1)))
    for lo in range(0, frames["seq"].size, 37):
        chunks.ingest(take(frames, slice(lo, lo + 37)))
    assert whole.windows_closed == 7
    assert whole.to_bytes() == single.to_bytes() == chunks.to_bytes()


def test_duplicate_frames_are_acknowledged_and_ignored() -> None:
    frames = synthetic_frames("veh-1", 3 * FRAMES_PER_WINDOW + 5)
    twin = new_twin()
    twin.ingest(frames)
    before = state_without_counters(twin)
    step = twin.ingest(take(frames, slice(10, 100)))
    assert step.applied == 0 and step.duplicates == 90 and not step.rejected and not step.alerts
    assert step.applied_seq == frames["seq"][-1]
    assert state_without_counters(twin) == before


def test_duplicates_inside_one_batch_count_once() -> None:
    frames = synthetic_frames("veh-1", 50)
    doubled = take(frames, np.concatenate([np.arange(50), np.arange(20, 30)]))
    twin = new_twin()
    step = twin.ingest(doubled)
    assert step.applied == 50 and step.duplicates == 10 and twin.frames_applied == 50


def test_shuffles_within_the_reorder_buffer_reach_the_in_order_state() -> None:
    frames = synthetic_frames("veh-1", 3 * FRAMES_PER_WINDOW)
    rng = np.random.default_rng(3)
    order = np.arange(frames["seq"].size)
    for lo in range(0, order.size, 8):  # local shuffles: never more than 8 frames early
        rng.shuffle(order[lo:lo + 8])
    in_order, shuffled = new_twin(), new_twin()
    in_order.ingest(frames)
    for lo in range(0, order.size, 5):
        shuffled.ingest(take(frames, order[lo:lo + 5]))
    assert shuffled.to_bytes() == in_order.to_bytes()


def test_frames_after_a_gap_wait_in_the_buffer_until_it_fills() -> None:
    frames = synthetic_frames("veh-1", 40)
    twin = new_twin(twins_cfg(reorder_buffer_frames=16))
    twin.ingest(take(frames, slice(0, 10)))
    step = twin.ingest(take(frames, slice(11, 20)))  # seq 11 missing
    assert step.applied == 0 and step.buffered == 9 and step.applied_seq == 10
    step = twin.ingest(take(frames, slice(10, 11)))
    assert step.applied == 10 and step.applied_seq == 20 and step.buffered == 0


def test_a_gap_longer_than_the_buffer_is_skipped_and_the_late_frame_refused() -> None:
    frames = synthetic_frames("veh-1", 60)
    twin = new_twin(twins_cfg(reorder_buffer_frames=4))
    twin.ingest(take(frames, slice(0, 10)))
    step = twin.ingest(take(frames, slice(12, 30)))  # 11 and 12 missing, 18 frames > buffer of 4
    assert step.applied_seq == 30 and step.buffered == 0 and step.applied == 18
    step = twin.ingest(take(frames, slice(10, 12)))
    assert [r.code for r in step.rejected] == ["late", "late"] and [r.seq for r in step.rejected] == [11, 12]
    assert step.applied == 0 and twin.frames_applied == 28


def test_zero_buffer_refuses_nothing_in_order() -> None:
    frames = synthetic_frames("veh-1", 30)
    twin = new_twin(twins_cfg(reorder_buffer_frames=0))
    step = twin.ingest(frames)
    assert step.applied == 30 and not step.rejected


def test_order_is_by_seq_not_by_device_clock() -> None:
    frames = synthetic_frames("veh-1", 2 * FRAMES_PER_WINDOW + 5)
    skewed = dict(frames)
    skewed["ts"] = frames["ts"].copy()
    skewed["ts"][30] -= 3_600_000  # a clock jump backwards on one frame
    twin = new_twin()
    twin.ingest(take(skewed, slice(None, None, -1)))  # sent newest first
    assert twin.applied_seq == frames["seq"][-1] and twin.frames_applied == frames["seq"].size


# ------------------------------------------------------------------------ validation, sensor faults
def test_impossible_values_raise_one_alert_per_sensor_and_nothing_reaches_the_model_as_nan() -> None:
    model = FakeAnomalyModel((45.0, 45.0))
    frames = synthetic_frames("veh-1", 4 * FRAMES_PER_WINDOW)
    frames["cell_temp_max"][70:100] = np.nan  # 5 minutes without a reading: shorter than a dropout
    frames["pack_voltage"][80] = 5_000.0
    frames["motor_temp"][90] = np.inf
    twin = new_twin(model=model)
    step = twin.ingest(frames)
    faults = [(a.seq, a.signals[0][0], a.mode) for a in step.alerts if a.rule == "sensor_fault"]
    assert faults == [(81, "pack_voltage", "out_of_range"), (91, "motor_temp", "out_of_range")]
    assert not model.seen_nan
    assert not np.isinf(twin.last_features).any()  # a feature without any input is NaN (missing), never inf
    assert np.isfinite(twin.last_features[twin.scorer.feature_index]).all()
    assert twin.summary()["sensor_faults"] == {"pack_voltage": 1, "motor_temp": 1}


def test_a_sensor_the_vehicle_never_sends_is_not_fitted_and_never_a_fault() -> None:
    frames = synthetic_frames("veh-1", 2 * FRAMES_PER_WINDOW + 1)
    del frames["soc"]
    twin = new_twin()
    step = twin.ingest(frames)
    assert step.applied == frames["seq"].size
    assert [a.rule for a in step.alerts] == []
    summary = twin.summary()
    assert "soc" not in summary["fitted_sensors"] and "pack_voltage" in summary["fitted_sensors"]
    assert summary["sensor_faults"] == {}


def test_a_new_fault_episode_after_the_cooldown_raises_a_second_alert() -> None:
    cfg = twins_cfg(alert_cooldown_minutes=30, sensor_fault_clear_minutes=10)
    frames = synthetic_frames("veh-1", 1000)
    for start in (100, 110, 400):  # 100 and 110 are one episode; 400 is 50 min later
        frames["soc"][start] = -5.0
    twin = new_twin(cfg)
    step = twin.ingest(frames)
    assert [a.seq for a in step.alerts if a.rule == "sensor_fault"] == [101, 401]


# ------------------------------------------------------------------------ features online == offline
def test_online_features_equal_the_offline_pipeline() -> None:
    frames = synthetic_frames("veh-1", 9 * FRAMES_PER_WINDOW + 7)
    frames["soc"][100:130] = np.nan  # data-quality features must agree too
    ends, offline = vehicle_feature_matrix(frames, WINDOW_MS, WINDOW_MS)
    twin = new_twin()
    online = []
    for i in range(frames["seq"].size):
        closed = twin.windows_closed
        twin.ingest(take(frames, slice(i, i + 1)))
        if twin.windows_closed > closed:
            online.append((twin.last_window_end, twin.last_features.copy()))
    assert [e for e, _ in online] == ends.tolist()
    np.testing.assert_array_equal(np.stack([f for _, f in online]), offline)


# ------------------------------------------------------------------------ anomalies, alerts, baseline
def _drift(frames: dict[str, np.ndarray], name: str, start: int, amount: float) -> None:
    frames[name] = frames[name].copy()
    frames[name][start:] += np.float32(amount)


def test_sustained_anomaly_gives_one_alert_with_a_stable_id_and_its_signals() -> None:
    frames = synthetic_frames("veh-1", 30 * FRAMES_PER_WINDOW)
    _drift(frames, "motor_temp", 15 * FRAMES_PER_WINDOW, 25.0)
    twin = new_twin()
    step = twin.ingest(frames)
    anomalies = [a for a in step.alerts if a.rule == "anomaly"]
    assert len(anomalies) == 1
    alert = anomalies[0]
    assert alert.alert_id == alert_id("veh-1", "anomaly", alert.seq)
    assert any("motor" in name for name, _ in alert.signals)
    assert alert.ts_ms >= frames["ts"][15 * FRAMES_PER_WINDOW]
    replay = new_twin()
    assert [a.alert_id for a in replay.ingest(frames).alerts] == [a.alert_id for a in step.alerts]


def test_hysteresis_needs_consecutive_windows_then_holds_then_cools_down() -> None:
    twin = new_twin(twins_cfg(anomaly_consecutive_windows=2, anomaly_clear_ratio=0.7, alert_cooldown_minutes=70))
    fired = []
    scores = [1.2, 0.5, 1.2, 0.5,  # never two in a row: nothing
              1.2, 1.3,            # fires on the second
              0.8, 1.5, 0.9,       # still active (not below 0.7): no second alert
              0.5, 1.2, 1.2,       # cleared, but within the 70 min cooldown
              0.5, 1.2, 1.2]       # after the cooldown: fires again
    for i, score in enumerate(scores):
        from twins.types import TwinStep
        step = TwinStep(applied_seq=i)
        if twin._anomaly_gate(score, end_ms=i * WINDOW_MS, seq=i, step=step):
            fired.append(i)
    assert fired == [5, 14]


def test_baseline_never_learns_from_windows_it_flagged() -> None:
    frames = synthetic_frames("veh-1", 30 * FRAMES_PER_WINDOW)
    _drift(frames, "motor_temp", 15 * FRAMES_PER_WINDOW, 25.0)
    twin = new_twin()
    twin.ingest(take(frames, slice(0, 15 * FRAMES_PER_WINDOW + 1)))
    learned_before, mean_before = twin.baseline.n, twin.baseline.mean.copy()
    twin.ingest(take(frames, slice(15 * FRAMES_PER_WINDOW + 1, None)))
    assert twin.anomaly_gate.active
    assert twin.baseline.n == learned_before
    np.testing.assert_array_equal(twin.baseline.mean, mean_before)


def test_prediction_is_due_on_schedule_and_after_an_anomaly() -> None:
    frames = synthetic_frames("veh-1", 4 * FRAMES_PER_WINDOW + 1)
    twin = new_twin(twins_cfg(prediction_interval_minutes=30, risk_alert_threshold=0.5))
    step = twin.ingest(frames)
    assert step.prediction_due
    end_ms, features = twin.take_prediction_request()
    assert features.shape == twin.last_features.shape
    alerts = twin.apply_prediction(end_ms, {7: 0.8, 14: 0.9, 30: 0.95}, severity=2, mode="coolant_pump",
                                   contributions=[("coolant_dt_mean", 1.2)])
    assert [a.rule for a in alerts] == ["failure_risk"] and alerts[0].risk == {7: 0.8, 14: 0.9, 30: 0.95}
    assert twin.take_prediction_request() is None
    assert twin.apply_prediction(end_ms, {7: 0.9}) == []  # stale answer: ignored


# ------------------------------------------------------------------------ personalisation head
def test_fine_tune_head_is_versioned_and_never_raises_the_score() -> None:
    frames = synthetic_frames("veh-1", 8 * FRAMES_PER_WINDOW)
    model = FakeAnomalyModel((float(frames["cell_temp_max"].mean()), float(frames["motor_temp"].mean())))
    twin = new_twin(twins_cfg(fine_tune_every_windows=5, anomaly_warmup_windows=0), model=model)
    twin.ingest(frames)
    assert twin.head.version == 0 and twin.fine_tune_due()  # no hold: the first head is due like the others
    errors, reference = twin.fine_tune_inputs()
    assert errors.shape[1] == 2 and reference.shape == (2,)
    twin.install_head(PersonalHead(offsets=np.array([0.5, 0.0]), version=1))
    assert twin.head.version == 1 and not twin.fine_tune_due()
    twin.install_head(PersonalHead(offsets=np.array([3.0, 0.0]), version=1))  # stale version: ignored
    assert twin.head.offsets.tolist() == [0.5, 0.0]
    personal = twin._personal_fleet_ratio(np.array([2.0, 1.0]), 3.0)
    assert personal == pytest.approx(2.5) and personal <= 3.0
    restored = VehicleTwin.from_bytes(twin.to_bytes(), model)
    assert restored.head.version == 1 and restored.head.offsets.tolist() == [0.5, 0.0]


class FeatureSequenceModel:
    """Like the trained LSTM-AE: reads sequences of window *feature* vectors (error = drift of one feature)."""

    signal_names = ("motor_rise_per_torque", "pack_rise_per_load")
    sequence_length = 3
    threshold = 1.0
    alert_threshold = 2.0

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.reference: np.ndarray | None = None

    @property
    def signal_error_reference(self) -> np.ndarray:
        """The fleet's normal error per signal: a uniform share of the alert error."""
        return np.full(len(self.signal_names), self.threshold * self.alert_threshold / len(self.signal_names))

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.shapes.append(sequences.shape)
        if self.reference is None:
            self.reference = sequences[0, 0].copy()
        per_signal = (sequences[:, -1] - self.reference) ** 2
        total = per_signal.sum(axis=1)
        return total, per_signal / np.maximum(total[:, None], 1e-12)


def test_the_fleet_model_gets_sequences_of_window_features_and_its_alert_level() -> None:
    model = FeatureSequenceModel()
    frames = synthetic_frames("veh-1", 30 * FRAMES_PER_WINDOW)
    _drift(frames, "motor_temp", 15 * FRAMES_PER_WINDOW, 40.0)
    twin = new_twin(twins_cfg(personalise=False), model=model)
    alerts = [a for a in twin.ingest(frames).alerts if a.rule == "anomaly"]
    assert {shape[1:] for shape in model.shapes} == {(3, 2)}
    assert sum(shape[0] for shape in model.shapes) == twin.windows_closed  # one call per ingest, not per window
    assert len(alerts) == 1 and alerts[0].signals[0][0] == "motor_rise_per_torque"
    assert alerts[0].seq > 15 * FRAMES_PER_WINDOW
    assert twin.last_fleet_ratio == pytest.approx(twin.last_score)  # error / (threshold x alert_threshold)


# ------------------------------------------------------------------------ state round trip
def test_restore_then_continue_equals_uninterrupted() -> None:
    model = FakeAnomalyModel((45.0, 45.0))
    frames = synthetic_frames("veh-1", 12 * FRAMES_PER_WINDOW + 3)
    frames["soc"][200] = np.nan
    straight = new_twin(model=model)
    straight.ingest(frames)
    first = new_twin(model=model)
    first.ingest(take(frames, slice(0, 333)))
    resumed = VehicleTwin.from_bytes(first.to_bytes(), model)
    resumed.ingest(take(frames, slice(333, None)))
    assert resumed.to_bytes() == straight.to_bytes()


def test_a_foreign_blob_is_refused() -> None:
    with pytest.raises(ValueError, match="magic"):
        VehicleTwin.from_bytes(b"\x80\x04pickle")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_orders_duplicates_and_bad_values_never_crash_nor_apply_twice(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3 * FRAMES_PER_WINDOW), label="n")
    frames = synthetic_frames("veh-h", n, seed=data.draw(st.integers(0, 3)))
    bad = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(SENSORS),
                                       st.sampled_from([np.nan, np.inf, -np.inf, 1e9, -1e9])), max_size=10))
    for row, name, value in bad:
        frames[name][row] = value
    sends = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3 * n), label="sends")
    cfg = twins_cfg(reorder_buffer_frames=data.draw(st.integers(0, 20)))
    twin = new_twin(cfg)
    applied = 0
    for lo in range(0, len(sends), 7):
        step = twin.ingest(take(frames, np.array(sends[lo:lo + 7])))
        applied += step.applied
        assert all(r.code == "late" for r in step.rejected)
        restored = VehicleTwin.from_bytes(twin.to_bytes())
        assert restored.to_bytes() == twin.to_bytes()
    assert applied == twin.frames_applied <= len(set(sends))
    assert twin.last_features is None or not np.isinf(twin.last_features).any()  # NaN: missing, never inf
    # Everything re-sent once more: no new effect.
    before = state_without_counters(twin)
    again = twin.ingest(take(frames, np.array(sorted(set(sends)))))
    assert again.applied == 0 or again.applied <= len(set(sends)) - applied
    if again.applied == 0:
        assert state_without_counters(twin) == before


# ------------------------------------------------------------------------ baseline (learn_one / score_one)
@pytest.mark.parametrize("make", [lambda: EwmaBaseline(half_life=20, warmup=5), lambda: WelfordBaseline(warmup=5)],
                         ids=["ewma", "welford"])
class TestBaselineContract:
    def test_scores_zero_until_warm(self, make) -> None:
        b = make()
        for _ in range(4):
            b.learn_one(np.ones(3))
        assert not b.ready and b.score_one(np.full(3, 100.0)) == 0.0

    def test_outlier_scores_higher_than_typical(self, make) -> None:
        b, rng = make(), np.random.default_rng(0)
        for _ in range(50):
            b.learn_one(rng.normal(10, 1, size=4))
        assert b.score_one(np.full(4, 10.0)) < 1.0 < 5.0 < b.score_one(np.array([10, 10, 10, 30.0]))

    def test_state_round_trips(self, make) -> None:
        from twins.baseline import baseline_from_state
        b, rng = make(), np.random.default_rng(1)
        for _ in range(12):
            b.learn_one(rng.normal(size=3))
        c = baseline_from_state(*b.to_state())
        x = rng.normal(size=3)
        assert c.score_one(x) == b.score_one(x)


# ------------------------------------------------------------------------ cold start, learning reference
def _anomalies(twin: VehicleTwin, frames: dict[str, np.ndarray]) -> list:
    return [a for a in twin.ingest(frames).alerts if a.rule == "anomaly"]


def test_no_anomaly_alert_until_the_twin_has_closed_its_warm_up_windows() -> None:
    frames = synthetic_frames("veh-1", 30 * FRAMES_PER_WINDOW)
    _drift(frames, "motor_temp", 15 * FRAMES_PER_WINDOW, 40.0)
    early = _anomalies(new_twin(twins_cfg(personalise=False, anomaly_warmup_windows=3), FeatureSequenceModel()), frames)
    held = new_twin(twins_cfg(personalise=False, anomaly_warmup_windows=20), FeatureSequenceModel())
    late = _anomalies(held, frames)
    assert len(early) == 1 and early[0].ts_ms < frames["ts"][20 * FRAMES_PER_WINDOW]
    assert len(late) == 1 and late[0].ts_ms > frames["ts"][20 * FRAMES_PER_WINDOW]
    silent = new_twin(twins_cfg(personalise=False, anomaly_warmup_windows=30), FeatureSequenceModel())
    assert _anomalies(silent, frames) == [] and silent.last_score > 1.0  # scored, just not alerted
    with pytest.raises(Exception, match="anomaly_warmup_windows"):
        twins_cfg(anomaly_warmup_windows=-1)


def test_learning_does_not_depend_on_the_operators_alert_level() -> None:
    frames = synthetic_frames("veh-1", 30 * FRAMES_PER_WINDOW)
    _drift(frames, "motor_temp", 15 * FRAMES_PER_WINDOW, 40.0)
    alerting = new_twin(twins_cfg(anomaly_alert_level=1.0), FeatureSequenceModel())
    lenient = new_twin(twins_cfg(anomaly_alert_level=1e9), FeatureSequenceModel())
    assert len(_anomalies(alerting, frames)) == 1 and _anomalies(lenient, frames) == []
    assert lenient.baseline.n == alerting.baseline.n < lenient.windows_closed  # drifted windows never learned
    np.testing.assert_array_equal(lenient.baseline.mean, alerting.baseline.mean)
    np.testing.assert_array_equal(lenient.normal_errors, alerting.normal_errors)
    assert lenient.normal_errors.shape[0] < lenient.windows_closed


def test_a_vehicle_off_the_fleet_models_normal_is_calibrated_when_its_hold_ends_and_still_alarms_on_a_drift() -> None:
    frames = synthetic_frames("veh-1", 40 * FRAMES_PER_WINDOW)
    _drift(frames, "motor_temp", 25 * FRAMES_PER_WINDOW, 40.0)
    # The fleet model expects motor_temp 3 K lower than this vehicle runs: a chronic error above its alert level.
    levels = (float(frames["cell_temp_max"].mean()), float(frames["motor_temp"][:FRAMES_PER_WINDOW * 20].mean()) - 3.0)

    def run(personalise: bool) -> tuple[VehicleTwin, list, list]:
        model = FakeAnomalyModel(levels)
        model.signal_error_reference = np.array([0.01, 0.01])
        twin = new_twin(twins_cfg(personalise=personalise, anomaly_warmup_windows=4, fine_tune_every_windows=10), model)
        steps = [twin.ingest(take(frames, slice(k, k + 5 * FRAMES_PER_WINDOW)))
                 for k in range(0, 40 * FRAMES_PER_WINDOW, 5 * FRAMES_PER_WINDOW)]
        return twin, [w for step in steps for w in step.windows], [a for step in steps for a in step.alerts
                                                                    if a.rule == "anomaly"]

    _, fleet_windows, fleet_alerts = run(False)
    twin, windows, alerts = run(True)
    drift_ms = int(frames["ts"][25 * FRAMES_PER_WINDOW])
    assert all(w.fleet_ratio > 1.0 for w in fleet_windows[4:20])  # the fleet model alarms from day one
    assert fleet_alerts and fleet_alerts[0].ts_ms < drift_ms
    # The first head is fitted inline from the hold's windows, in force from the first window that may alert.
    assert [w.head_version for w in windows[:5]] == [0, 0, 0, 0, 1]
    assert all(w.score < 1.0 for w in windows[4:20])
    assert len(alerts) == 1 and alerts[0].ts_ms > drift_ms  # the drift still alarms
    # The drifted windows were never learned as normal.
    assert twin.normal_errors.shape[0] < twin.windows_closed
    assert twin.normal_errors[:, 1].max() < 10.0  # a drifted window's motor error is ~460


def test_after_the_hold_the_head_learns_only_windows_usual_for_the_vehicles_own_feature_baseline(monkeypatch) -> None:
    import twins.twin
    from training.features import BASELINE_LEARN_Z, FEATURE_NAMES

    features = np.zeros((3, len(FEATURE_NAMES)), dtype=np.float32)
    features[1, FEATURE_NAMES.index("coolant_dt_per_flow_z")] = BASELINE_LEARN_Z + 0.5
    features[2, FEATURE_NAMES.index("coolant_dt_per_flow_z")] = -BASELINE_LEARN_Z
    features[2, FEATURE_NAMES.index("coolant_dt_per_flow_ema1d")] = 1e6  # levels are the fleet model's business
    assert twins.twin.usual_for_vehicle(features).tolist() == [True, False, True]

    frames = synthetic_frames("veh-1", 20 * FRAMES_PER_WINDOW)
    model = FakeAnomalyModel((float(frames["cell_temp_max"].mean()), float(frames["motor_temp"].mean())))
    learned = {}
    for usual in (True, False):
        monkeypatch.setattr(twins.twin, "usual_for_vehicle", lambda X, usual=usual: np.full(len(X), usual))
        twin = new_twin(twins_cfg(anomaly_warmup_windows=4), model)
        twin.ingest(frames)
        learned[usual] = twin.normal_errors.shape[0]
    assert learned[False] == 4 < learned[True]  # after the hold, only usual windows


def test_the_fleet_reference_comes_from_the_model_and_a_model_without_one_is_refused() -> None:
    frames = synthetic_frames("veh-1", 3 * FRAMES_PER_WINDOW)
    model = FakeAnomalyModel((45.0, 45.0))
    model.signal_error_reference = np.array([0.1, 0.3])
    twin = new_twin(model=model)
    twin.ingest(frames)
    _, reference = twin.fine_tune_inputs()
    assert reference.tolist() == [0.1, 0.3]
    model.signal_error_reference = None  # a model trained before the reference was recorded
    with pytest.raises(ValueError, match="signal_error_reference"):
        new_twin(model=model)
    assert new_twin(twins_cfg(personalise=False), model=model).head.version == 0  # fleet scores need none


def test_a_model_reading_raw_frame_signals_is_refused_with_the_signal_named() -> None:
    model = FakeAnomalyModel((45.0, 45.0))
    model.signal_names = ("cell_temp_max", "motor_temp_mean")
    with pytest.raises(ValueError, match="cell_temp_max"):
        new_twin(model=model)


def test_each_step_reports_its_windows_scores_and_replaying_them_gives_the_twins_alerts() -> None:
    from training.alerting import AlertPolicy, alert_indices

    frames = synthetic_frames("veh-1", 30 * FRAMES_PER_WINDOW)
    _drift(frames, "motor_temp", 15 * FRAMES_PER_WINDOW, 40.0)
    cfg = twins_cfg(personalise=False)
    twin = new_twin(cfg, FeatureSequenceModel())
    steps = [twin.ingest(take(frames, slice(k, k + 7 * FRAMES_PER_WINDOW)))
             for k in range(0, 30 * FRAMES_PER_WINDOW, 7 * FRAMES_PER_WINDOW)]
    windows = [w for step in steps for w in step.windows]
    assert len(windows) == twin.windows_closed and windows[-1].score == twin.last_score
    assert all(w.fleet_ratio == w.score and w.head_version == 0 for w in windows)
    ends = np.array([w.end_ms for w in windows])[cfg.anomaly_warmup_windows:]
    scores = np.array([w.score for w in windows])[cfg.anomaly_warmup_windows:]
    policy = AlertPolicy(threshold=cfg.anomaly_alert_level, consecutive=cfg.anomaly_consecutive_windows,
                         clear_ratio=cfg.anomaly_clear_ratio, cooldown_ms=int(cfg.alert_cooldown_minutes * 60_000))
    alerts = [a.ts_ms for step in steps for a in step.alerts if a.rule == "anomaly"]
    assert len(alerts) == 1 and ends[alert_indices(ends, scores, policy)].tolist() == alerts
