"""Batched window close across twins (``twins.twin.ingest_many``): the same outcome as each twin alone."""
from __future__ import annotations

import numpy as np
import pytest

from simulation.whatif.scenarios import load_scenario
from training.windows import WindowAssembler
from twins.twin import SENSORS, VehicleTwin, ingest_many

WINDOW_MS = 3_600_000  # 60 min windows over 600 s frames, as the what-if twins run


class SequenceModel:
    """Like the trained LSTM-AE: sequences of window features; each row scored on its own (deterministic)."""

    signal_names = ("motor_rise_per_torque", "pack_rise_per_load", "cell_temp_max_mean")
    sequence_length = 4
    threshold = 0.05
    alert_threshold = 1.0

    def __init__(self) -> None:
        self.calls: list[int] = []

    @property
    def signal_error_reference(self) -> np.ndarray:
        """The fleet's normal error per signal: a uniform share of the alert error."""
        return np.full(len(self.signal_names), self.threshold * self.alert_threshold / len(self.signal_names))

    def score(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(sequences.shape[0])
        spread = sequences.max(axis=1) - sequences.min(axis=1)
        per_signal = (spread / (np.abs(sequences).mean(axis=1) + 1.0)) ** 2
        total = per_signal.sum(axis=1)
        return total, per_signal / np.maximum(total[:, None], 1e-12)


def _config():
    return load_scenario("baseline", overrides=["simulation.num_vehicles=4", "simulation.duration_days_per_vehicle=3",
                                                "twins.baseline_warmup_windows=6", "twins.fine_tune_every_windows=8",
                                                "twins.reorder_buffer_frames=8"]).config


def _generator_polls(config, polls: int, seed: int = 3) -> tuple[list[str], list[list[dict[str, np.ndarray]]]]:
    """Per poll, per vehicle: 6 h of generator frames, shuffled, with duplicates, late re-sends and bad values."""
    from simulation.whatif.runner import build_fleet
    from simulation.whatif.twin_detector import coarse_simulation, vehicle_frame_batches

    profiles, _ = build_fleet(config, seed)
    sim_cfg = coarse_simulation(config.simulation, 600.0)
    streams = [vehicle_frame_batches(p, sim_cfg, seed, 6 * 3600.0) for p in profiles]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(polls):
        per_vehicle = []
        for stream in streams:
            batch = next(stream).columns()
            rows = np.arange(batch["seq"].size)
            rows = np.concatenate([rows, rng.choice(rows, 4)])  # duplicates inside the batch
            rng.shuffle(rows)  # out of order
            cols = {k: v[rows].copy() for k, v in batch.items()}
            cols["values"][rng.integers(rows.size), rng.integers(len(SENSORS))] = np.nan
            cols["values"][rng.integers(rows.size), SENSORS.index("soc")] = 250.0  # impossible
            per_vehicle.append(cols)
        out.append(per_vehicle)
    return [p.vehicle_id for p in profiles], out


def _twins(config, ids: list[str], model) -> list[VehicleTwin]:
    return [VehicleTwin(v, config.twins, WINDOW_MS, WINDOW_MS, model) for v in ids]


def test_a_batched_step_of_many_twins_equals_each_twin_alone() -> None:
    config = _config()
    ids, polls = _generator_polls(config, polls=10)
    model = SequenceModel()
    together, alone = _twins(config, ids, model), _twins(config, ids, model)
    alerts_together, alerts_alone = [], []
    for k, poll in enumerate(polls):
        # Leave one vehicle out of a poll now and then: twins with nothing new take part too.
        batch = [(t, cols) for i, (t, cols) in enumerate(zip(together, poll, strict=False)) if (i + k) % 5 != 0]
        for step in ingest_many([t for t, _ in batch], [c for _, c in batch]):
            alerts_together.extend(step.alerts)
        for i, (twin, cols) in enumerate(zip(alone, poll, strict=False)):
            if (i + k) % 5 != 0:
                alerts_alone.extend(twin.ingest(cols).alerts)
    assert sum(t.windows_closed for t in together) > 100
    assert {a.rule for a in alerts_together} >= {"sensor_fault", "anomaly"}
    assert alerts_together == alerts_alone
    assert [a.alert_id for a in alerts_together] == [a.alert_id for a in alerts_alone]
    for a, b in zip(together, alone, strict=False):
        assert a.duplicates > 0
        assert a.to_bytes() == b.to_bytes()


def test_one_fleet_model_call_per_batched_step() -> None:
    config = _config()
    ids, polls = _generator_polls(config, polls=3)
    model = SequenceModel()
    twins = _twins(config, ids, model)
    for poll in polls:
        model.calls.clear()
        ingest_many(twins, poll)
        assert len(model.calls) == 1
    assert sum(model.calls) > 0


def test_the_step_reports_what_each_twin_did() -> None:
    config = _config()
    ids, polls = _generator_polls(config, polls=2)
    twins = _twins(config, ids, SequenceModel())
    steps = ingest_many(twins, polls[0])
    for twin, step, cols in zip(twins, steps, polls[0], strict=False):
        assert step.applied_seq == twin.applied_seq
        assert step.applied + step.duplicates + step.buffered == cols["seq"].size
        assert step.prediction_due == (twin.pending_prediction is not None)
    empty = {"seq": np.zeros(0, np.int64), "ts": np.zeros(0, np.int64), "values": np.zeros((0, len(SENSORS)))}
    assert ingest_many(twins[:1], [empty])[0].applied == 0


def test_a_twin_twice_in_one_step_is_refused() -> None:
    config = _config()
    ids, polls = _generator_polls(config, polls=1)
    twin = _twins(config, ids[:1], None)[0]
    with pytest.raises(ValueError, match="twice"):
        ingest_many([twin, twin], [polls[0][0], polls[0][0]])
    with pytest.raises(ValueError, match="batches"):
        ingest_many([twin], [])


def test_the_what_if_frames_equal_the_generator_stream_through_frame_batch() -> None:
    import pyarrow as pa

    from configs.frames import FrameBatch
    from simulation.generator import stream_vehicle_batches
    from simulation.whatif.runner import build_fleet
    from simulation.whatif.twin_detector import coarse_simulation, vehicle_frame_batches

    config = load_scenario("baseline", overrides=["simulation.num_vehicles=2", "simulation.duration_days_per_vehicle=2",
                                                  "simulation.sensor_fault_rate_per_day=1"]).config
    profiles, plans = build_fleet(config, 5)
    sim_cfg = coarse_simulation(config.simulation, 600.0)
    for profile, plan in zip(profiles, plans, strict=False):
        ours = list(vehicle_frame_batches(profile, sim_cfg, 5, 5 * 3600.0, events=list(plan.source_events)))
        arrow = list(stream_vehicle_batches(profile, sim_cfg, 5, 5 * 3600.0, events=list(plan.source_events)))
        assert len(ours) == len(arrow) > 4
        for mine, batch in zip(ours, arrow, strict=False):
            block, rejected = FrameBatch.from_columns(pa.Table.from_batches([batch]))
            assert not rejected
            np.testing.assert_array_equal(mine.seq, block.seq)
            np.testing.assert_array_equal(mine.ts, block.ts)
            np.testing.assert_array_equal(mine.values, block.values)  # NaN == NaN here
            assert mine.values.dtype == np.float32


def test_the_window_assembler_never_holds_views_of_what_was_pushed() -> None:
    asm = WindowAssembler(window_ms=20, stride_ms=20)
    ts = np.arange(0, 200, 5, dtype=np.int64)
    x = np.arange(ts.size, dtype=np.float64)
    asm.push(ts, {"x": x})
    assert asm.held_frames <= 4  # one window of frames, not the batch
    x[:] = -1.0  # the caller reuses its buffer
    closed = asm.push(np.array([200, 205], dtype=np.int64), {"x": np.array([40.0, 41.0])})
    assert [(end, cols["x"].tolist()) for end, cols in closed] == [(200, [37.0, 38.0, 39.0, 40.0])]


class CalmSequenceModel(SequenceModel):
    """Mostly below its alert level (the baseline then learns), with a few anomalies."""

    threshold = 1.0


@pytest.mark.parametrize("with_model", [True, False])
def test_the_outcome_does_not_depend_on_how_the_frames_are_split_into_steps(with_model: bool) -> None:
    """A step computes some per-window values only for its last window (nothing reads them earlier):
    one window per step, one poll per step and two polls per step must give the same alerts and state."""
    from simulation.whatif.runner import build_fleet
    from simulation.whatif.twin_detector import coarse_simulation, vehicle_frame_batches

    config = _config()
    profiles, _ = build_fleet(config, 3)
    sim_cfg = coarse_simulation(config.simulation, 600.0)
    model = CalmSequenceModel() if with_model else None
    outcomes = []
    for frames_per_step in (6, 36, 72):  # 1 h (one window), 6 h (a poll), 12 h
        alerts, states = [], []
        for profile in profiles:
            twin = VehicleTwin(profile.vehicle_id, config.twins, WINDOW_MS, WINDOW_MS, model)
            batches = list(vehicle_frame_batches(profile, sim_cfg, 3, 6 * 3600.0))
            cols = {k: np.concatenate([b.columns()[k] for b in batches]) for k in ("seq", "ts", "values")}
            named, ratios = set(), set()
            for a in range(0, cols["seq"].size, frames_per_step):
                alerts.extend(twin.ingest({k: v[a:a + frames_per_step] for k, v in cols.items()}).alerts)
                named.add(repr(twin.last_signals))
                ratios.add(twin.last_baseline_ratio)
            states.append(twin.to_bytes())
            assert twin.windows_closed > 60
            if frames_per_step == 6:  # every window is the last of its step: each names its own signals
                assert len(named) > 30 and len(ratios) > 30
            assert twin.normal_errors.shape[0] > 10 or not with_model  # the head's normal windows
        outcomes.append((alerts, states))
    assert any(a.rule == "anomaly" for a in outcomes[0][0]) or not with_model
    for alerts, states in outcomes[1:]:
        assert alerts == outcomes[0][0]
        assert states == outcomes[0][1]
