"""The production detector of the predictive policy: generator frames through real twins and models.

Each simulated vehicle's telemetry comes from the generator (``simulation.generator.simulate_vehicle``,
at the coarser ``whatif.twin_frame_interval_s``), cut into one batch per poll period exactly as
``simulation.generator.stream_vehicle_batches`` cuts it, but kept as the numpy matrix a host actor
makes of a record batch (``twins.host.to_block``): the same frames without the Arrow round trip (a
test checks both give the same columns). All vehicles' frames of one poll go through their
``twins.twin.VehicleTwin``s in one batched step (``twins.twin.ingest_many``: windows closed together,
one LSTM-AE call), with the same outcome as ingesting each twin alone. When a twin asks for a
prediction, the trained failure model (``training.artifacts.load_failure_model``, the artefact the
Serve deployment loads) answers in one batched call per poll, and ``apply_prediction`` decides the
``failure_risk`` alert, as the host does. Alerts become risk signals: a ``failure_risk`` alert
carries its risk; an ``anomaly`` alert carries ``whatif.anomaly_alert_risk``; sensor faults are data
problems, not vehicle problems, and are ignored. Nothing here reads the ground truth.

The stream shows the same failures the SimPy model runs (the plan's, passed to the generator as
``events``); when the workshop repairs one, the vehicle's simulation goes on without it after the
frames its twin has already seen (rewound to the start of that day, not re-run from day 0), so a
repaired part stops degrading the signals while the vehicle keeps its history (SOC, wear, odometer).
Limitation: the stream does not know when the vehicle is off the road (it keeps its own trip plan).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from configs.settings import AmbientWindow, Config, SimulationConfig
from simulation.whatif.detectors import RiskSignal
from simulation.whatif.plans import MS_PER_DAY, FailureSpec, VehiclePlan
from simulation.whatif.runner import with_ambient_offset

ANOMALY_RULE = "anomaly"
RISK_RULE = "failure_risk"


@dataclass(frozen=True)
class FrameBatch:
    """Frames of one vehicle in time order: ``seq``, ``ts`` (int64 ms) and ``values`` (rows x sensors, float32)."""

    seq: np.ndarray
    ts: np.ndarray
    values: np.ndarray

    @property
    def first_ts(self) -> int:
        return int(self.ts[0])

    @property
    def last_ts(self) -> int:
        return int(self.ts[-1])

    def columns(self) -> dict[str, np.ndarray]:
        """The twin's input (``twins.twin.frames_matrix`` reads ``values``)."""
        return {"seq": self.seq, "ts": self.ts, "values": self.values}


def vehicle_frame_batches(profile: Any, sim_cfg: SimulationConfig, seed: int, batch_seconds: float,
                          events: list[Any] | None = None) -> "VehicleFrameStream":
    """``stream_vehicle_batches`` as numpy: batch ``k`` holds the frames in ``[start + k*batch, start + (k+1)*batch)``.

    The values are what ``twins.host.to_block`` makes of the record batches (sensors cast to float32).
    """
    return VehicleFrameStream(profile, sim_cfg, seed, batch_seconds, events)


class VehicleFrameStream:
    """One vehicle's frame batches from a resumable generator simulation (``VehicleSimulation``).

    ``resume`` replaces the failures after a repair: the batches after the last one already taken
    come from the simulation rewound to the start of the day that holds them, with the new failures.
    """

    def __init__(self, profile: Any, sim_cfg: SimulationConfig, seed: int, batch_seconds: float,
                 events: list[Any] | None = None) -> None:
        from simulation.fleet import observation_window
        from simulation.generator import VehicleSimulation

        if batch_seconds <= 0:
            raise ValueError(f"batch_seconds must be > 0 (got {batch_seconds})")
        self.start_ms, _ = observation_window(sim_cfg)
        self.batch_ms = int(round(batch_seconds * 1000))
        # A batch not yet taken starts at most one batch before the newest simulated day, plus a day.
        keep_days = -(-self.batch_ms // MS_PER_DAY) + 2
        self.simulation = VehicleSimulation(profile, sim_cfg, seed, events, keep_days=keep_days)
        self._ready: list[FrameBatch] = []  # complete batches of the simulated days, oldest last
        self._pending: list[FrameBatch] = []  # the newest batch, possibly continued by the next day
        self._pending_id: int | None = None
        self._first_id = 0  # batches before this one were taken before a resume

    def __iter__(self) -> "VehicleFrameStream":
        return self

    def __next__(self) -> FrameBatch:
        from twins.twin import frames_matrix

        while not self._ready:
            chunk = next(self.simulation, None)
            if chunk is None:
                if not self._pending:
                    raise StopIteration
                self._ready.append(_joined(self._pending))
                self._pending = []
                break
            values = frames_matrix(chunk.columns, chunk.num_rows)
            ids = (chunk.ts_ms - self.start_ms) // self.batch_ms
            cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
            complete: list[FrameBatch] = []
            for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), chunk.num_rows]):
                batch_id = int(ids[a])
                if batch_id < self._first_id:
                    continue
                if self._pending and batch_id != self._pending_id:
                    complete.append(_joined(self._pending))
                    self._pending = []
                self._pending.append(FrameBatch(chunk.seq[a:b], chunk.ts_ms[a:b], values[a:b]))
                self._pending_id = batch_id
            self._ready = complete[::-1]
        return self._ready.pop()

    def resume(self, events: list[Any], after_ms: int) -> None:
        """From the first batch after the one holding ``after_ms`` (the last frame taken) on, simulate with ``events``."""
        first_id = max(0, (int(after_ms) - self.start_ms) // self.batch_ms + 1)
        first_ms = self.start_ms + first_id * self.batch_ms
        self.simulation.replace_events(events, self.simulation.day_of(first_ms))
        self._ready, self._pending, self._pending_id = [], [], None
        self._first_id = first_id


def _joined(batches: list[FrameBatch]) -> FrameBatch:
    if len(batches) == 1:
        return batches[0]
    return FrameBatch(np.concatenate([b.seq for b in batches]), np.concatenate([b.ts for b in batches]),
                      np.concatenate([b.values for b in batches]))


class _SplicedStream:
    """Batches of one vehicle; inside an ambient window they come from that window's (hotter) stream.

    Every stream is the generator's own stream for one ambient offset; all advance together so that
    batch k of each covers the same time span (the generator aligns batches to the window start).
    """

    def __init__(self, streams: list[VehicleFrameStream], windows: Sequence[AmbientWindow], start_ms: int) -> None:
        self._streams = streams
        self._spans = [(start_ms + int(w.start_day * MS_PER_DAY),
                        start_ms + int((w.start_day + w.duration_days) * MS_PER_DAY)) for w in windows]

    def __iter__(self) -> "_SplicedStream":
        return self

    def __next__(self) -> FrameBatch:
        batches = [next(s) for s in self._streams]  # StopIteration ends the splice too
        if len(batches) == 1:
            return batches[0]
        first_ts = batches[0].first_ts
        for k, (lo, hi) in enumerate(self._spans):
            if lo <= first_ts < hi:
                return batches[k + 1]
        return batches[0]

    def resume(self, events: list[Any], after_ms: int) -> None:
        for stream in self._streams:
            stream.resume(events, after_ms)


def coarse_simulation(sim_cfg: SimulationConfig, frame_interval_s: float) -> SimulationConfig:
    """The scenario's simulation config with the twins' (coarser) frame interval."""
    return sim_cfg.model_copy(update={"frame_interval_s": max(frame_interval_s, sim_cfg.frame_interval_s)})


class TwinDetector:
    """Streams every vehicle's frames through its twin, up to the time the policy asks about."""

    def __init__(self, profiles: Sequence[Any], config: Config, seed: int, *, plans: Sequence[VehiclePlan] = (),
                 anomaly_model: Any = None, failure_model: Any = None) -> None:
        from twins.twin import VehicleTwin

        whatif = config.whatif
        self.seed = seed
        self.sim_cfg = sim_cfg = coarse_simulation(config.simulation, whatif.twin_frame_interval_s)
        self.window_cfgs = [with_ambient_offset(sim_cfg, w.offset_c) for w in whatif.ambient_windows]
        self.windows = whatif.ambient_windows
        self.start_ms = _start_ms(sim_cfg)
        self.batch_seconds = whatif.detector_poll_hours * 3600.0
        # Predictions at most once per poll: the policy cannot act on them more often.
        interval = max(config.twins.prediction_interval_minutes, whatif.detector_poll_hours * 60.0)
        twins_cfg = config.twins.model_copy(update={"prediction_interval_minutes": interval})
        window_ms = int(config.dataset.window_minutes * 60_000)
        stride_ms = int(config.dataset.stride_minutes * 60_000)
        self.failure_model = failure_model
        self.anomaly_model = anomaly_model
        self.anomaly_risk = whatif.anomaly_alert_risk
        self.risk_alert_threshold = config.twins.risk_alert_threshold
        self.twins: dict[str, Any] = {}
        self.streams: dict[str, _SplicedStream] = {}
        self.pending: dict[str, FrameBatch] = {}
        self.frames = 0
        self.restarts = 0
        self.alerts_by_rule: dict[str, int] = {}
        self.profiles = {p.vehicle_id: p for p in profiles}
        plan_by_id = {p.vehicle_id: p for p in plans}
        # The failures the stream shows: the plan's (the same ones the SimPy model runs), else sampled.
        self.events: dict[str, list[Any] | None] = {
            vid: list(plan_by_id[vid].source_events) if vid in plan_by_id else None for vid in self.profiles}
        self.consumed_until: dict[str, int] = {}
        for vehicle_id in self.profiles:
            self.streams[vehicle_id] = self._open_stream(vehicle_id)
            self.twins[vehicle_id] = VehicleTwin(vehicle_id, twins_cfg, window_ms, stride_ms, anomaly_model)

    def _open_stream(self, vehicle_id: str) -> _SplicedStream:
        """The vehicle's frames from the generator (one stream per ambient offset, spliced by time)."""
        from simulation.fleet import sample_profile

        profile = self.profiles[vehicle_id]
        events = self.events[vehicle_id]
        streams = [vehicle_frame_batches(profile, self.sim_cfg, self.seed, self.batch_seconds, events=events)]
        streams += [vehicle_frame_batches(sample_profile(wc, self.seed, profile.index), wc, self.seed,
                                          self.batch_seconds, events=events) for wc in self.window_cfgs]
        return _SplicedStream(streams, self.windows, self.start_ms)

    @classmethod
    def from_run(cls, profiles: Sequence[Any], config: Config, seed: int, models_dir: str | None,
                 plans: Sequence[VehiclePlan] = ()) -> "TwinDetector":
        """Twins with the trained anomaly and failure models of ``models_dir`` (a run directory)."""
        if models_dir is None:
            raise FileNotFoundError("the twin detector needs a trained run directory (with models/)")
        from training.artifacts import load_anomaly_model, load_failure_model

        try:
            anomaly_model = load_anomaly_model(models_dir)
        except FileNotFoundError:
            anomaly_model = None  # twins then score with their own statistical baseline
        return cls(profiles, config, seed, plans=plans, anomaly_model=anomaly_model,
                   failure_model=load_failure_model(models_dir))

    def observe(self, until_ms: int) -> list[RiskSignal]:
        from twins.twin import ingest_many

        due: dict[str, list[FrameBatch]] = {}
        for vehicle_id in self.twins:
            while True:
                batch = self.pending.pop(vehicle_id, None)
                if batch is None:
                    batch = next(self.streams[vehicle_id], None)
                    if batch is None:
                        break
                last_ms = batch.last_ts
                # A resumed stream starts after the frames the twin has taken (VehicleFrameStream.resume).
                assert last_ms > self.consumed_until.get(vehicle_id, -1), (vehicle_id, last_ms)
                if last_ms > until_ms:
                    self.pending[vehicle_id] = batch  # not yet happened
                    break
                self.consumed_until[vehicle_id] = last_ms
                due.setdefault(vehicle_id, []).append(batch)
        signals: list[RiskSignal] = []
        if due:
            # Every vehicle's new frames in one batched step, as a host actor ingests a block.
            batches = {vehicle_id: _joined(parts) for vehicle_id, parts in due.items()}
            steps = ingest_many([self.twins[v] for v in batches], [b.columns() for b in batches.values()])
            self.frames += sum(int(b.seq.size) for b in batches.values())
            for step in steps:
                signals.extend(self._signals(step.alerts))
        requests: list[tuple[str, int, np.ndarray]] = []
        if self.failure_model is not None:
            for vehicle_id, twin in self.twins.items():
                request = twin.take_prediction_request()
                if request is not None:
                    requests.append((vehicle_id, int(request[0]), request[1]))
        if requests:
            signals.extend(self._predict(requests))
        return sorted(signals, key=lambda x: (x.ts_ms, x.vehicle_id, x.source))

    def stats(self) -> dict[str, Any]:
        models = [name for name, model in (("LSTM-AE", self.anomaly_model), ("failure model", self.failure_model))
                  if model is not None]
        return {"frames": self.frames, "restarts": self.restarts, "alerts_by_rule": dict(self.alerts_by_rule),
                "models": models}

    def _predict(self, requests: list[tuple[str, int, np.ndarray]]) -> list[RiskSignal]:
        X = np.stack([features for _, _, features in requests]).astype(np.float32)
        risk_by_horizon = self.failure_model.predict(X)
        modes: list[str | None] = [None] * len(requests)
        if risk_by_horizon:  # name the likely mode only where an alert may follow (saves a model call)
            shortest = min(risk_by_horizon)
            rows = np.flatnonzero(np.asarray(risk_by_horizon[shortest]) >= self.risk_alert_threshold)
            if rows.size:
                for row, mode in zip(rows.tolist(), self._likely_modes(X[rows], shortest)):
                    modes[row] = mode
        signals = []
        for i, (vehicle_id, end_ms, _) in enumerate(requests):
            risk = {int(h): float(p[i]) for h, p in risk_by_horizon.items()}
            alerts = self.twins[vehicle_id].apply_prediction(end_ms, risk, mode=modes[i])
            signals.extend(self._signals(alerts))
        return signals

    def _likely_modes(self, X: np.ndarray, horizon: int) -> list[str | None]:
        """The most likely failure mode per row, where the model was trained per mode."""
        predict_modes = getattr(self.failure_model, "predict_modes", None)
        per_mode = predict_modes(X).get(horizon) if predict_modes is not None else None
        if not per_mode:
            return [None] * X.shape[0]
        names = sorted(per_mode)
        stacked = np.stack([np.asarray(per_mode[n]) for n in names], axis=1)
        return [names[j] for j in np.argmax(stacked, axis=1)]

    def _signals(self, alerts: Sequence[Any]) -> list[RiskSignal]:
        out = []
        for alert in alerts:
            self.alerts_by_rule[alert.rule] = self.alerts_by_rule.get(alert.rule, 0) + 1
            if alert.rule == RISK_RULE:
                out.append(RiskSignal(alert.vehicle_id, int(alert.ts_ms), float(alert.score), RISK_RULE, alert.mode))
            elif alert.rule == ANOMALY_RULE:
                out.append(RiskSignal(alert.vehicle_id, int(alert.ts_ms), self.anomaly_risk, ANOMALY_RULE, alert.mode))
        return out

    def notify_repair(self, vehicle_id: str, at_ms: int, events: Sequence[FailureSpec]) -> None:
        """The repaired failures stop degrading the signals: the vehicle's simulation resumes from the start
        of the repair's day without them and sends only frames after those the twin has already seen."""
        current = self.events.get(vehicle_id)
        if current is None:
            return  # no plan given: the stream keeps its own sampled failures
        repaired = {(e.mode, e.onset_ms, e.failure_ms) for e in events}
        kept = [e for e in current if (str(e.mode), int(e.onset_ms), int(e.failure_ms)) not in repaired]
        if len(kept) == len(current):
            return
        self.events[vehicle_id] = kept
        self.pending.pop(vehicle_id, None)
        self.streams[vehicle_id].resume(kept, self.consumed_until.get(vehicle_id, -1))
        self.restarts += 1


class ShardedTwinDetector:
    """The fleet's twins split over Ray actors (routed by the twins' stable hash), stepped together.

    Each poll sends one ``observe`` to every shard at once, so the twins of one replication use as
    many cores as there are shards; a repair goes to the vehicle's shard before its next poll (Ray
    runs one caller's calls to an actor in order). Signals are merged in the order ``TwinDetector``
    gives them, so the result equals the one-process detector's.
    """

    def __init__(self, profiles: Sequence[Any], config: Config, seed: int, *, plans: Sequence[VehiclePlan] = (),
                 models_dir: str | None = None, shards: int = 2) -> None:
        import ray

        from twins.host import route

        self._started_ray = False
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            self._started_ray = True
        groups: dict[int, list[Any]] = {}
        for profile in profiles:
            groups.setdefault(route(profile.vehicle_id, shards), []).append(profile)
        plan_by_id = {p.vehicle_id: p for p in plans}
        # num_cpus=0: the shards share the CPUs granted to their replication.
        shard_cls = ray.remote(num_cpus=0)(_TwinShard)
        self.route = {p.vehicle_id: k for k, group in groups.items() for p in group}
        self.actors = {k: shard_cls.remote(group, config, seed, [plan_by_id[p.vehicle_id] for p in group
                                                                 if p.vehicle_id in plan_by_id], models_dir)
                       for k, group in groups.items()}

    def observe(self, until_ms: int) -> list[RiskSignal]:
        import ray

        merged = [s for batch in ray.get([a.observe.remote(until_ms) for a in self.actors.values()]) for s in batch]
        return sorted(merged, key=lambda x: (x.ts_ms, x.vehicle_id, x.source))

    def notify_repair(self, vehicle_id: str, at_ms: int, events: Sequence[FailureSpec]) -> None:
        self.actors[self.route[vehicle_id]].notify_repair.remote(vehicle_id, at_ms, list(events))

    def stats(self) -> dict[str, Any]:
        import ray

        total: dict[str, Any] = {"frames": 0, "restarts": 0, "alerts_by_rule": {}, "models": []}
        for part in ray.get([a.stats.remote() for a in self.actors.values()]):
            total["models"] = part["models"]
            total["frames"] += part["frames"]
            total["restarts"] += part["restarts"]
            for rule, n in part["alerts_by_rule"].items():
                total["alerts_by_rule"][rule] = total["alerts_by_rule"].get(rule, 0) + n
        return total

    def close(self) -> None:
        import ray

        for actor in self.actors.values():
            ray.kill(actor)
        self.actors = {}
        if self._started_ray:
            ray.shutdown()


class _TwinShard:
    """The contents of one shard actor: a ``TwinDetector`` over some vehicles."""

    def __init__(self, profiles: Sequence[Any], config: Config, seed: int, plans: Sequence[VehiclePlan],
                 models_dir: str | None) -> None:
        if models_dir is None:
            self.detector = TwinDetector(profiles, config, seed, plans=plans)
        else:
            self.detector = TwinDetector.from_run(profiles, config, seed, models_dir, plans)

    def observe(self, until_ms: int) -> list[RiskSignal]:
        return self.detector.observe(until_ms)

    def notify_repair(self, vehicle_id: str, at_ms: int, events: Sequence[FailureSpec]) -> None:
        self.detector.notify_repair(vehicle_id, at_ms, events)

    def stats(self) -> dict[str, Any]:
        return self.detector.stats()


def _start_ms(sim_cfg: SimulationConfig) -> int:
    from simulation.fleet import observation_window

    return observation_window(sim_cfg)[0]
