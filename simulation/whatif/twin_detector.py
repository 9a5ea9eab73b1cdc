"""The production detector of the predictive policy: generator frames through the twin host and real models.

Each simulated vehicle's telemetry comes from the generator (``simulation.generator.VehicleSimulation``,
at the coarser ``whatif.twin_frame_interval_s``), cut into one batch per poll period exactly as
``simulation.generator.stream_vehicle_batches`` cuts it, but kept as the numpy matrix a host makes of a
record batch (``configs.frames.FrameBatch.from_columns``): the same frames without the Arrow round trip (a test checks
both give the same columns), each poll's batch a one-vehicle ``FrameBatch`` (``VehicleChunk.frames`` sliced). Each
poll, every vehicle's new frames go to the one twin host as one ``FrameBatch.concat`` of the vehicles' batches
(the only adapter): ``twins.host.TwinHost`` in this process, or the Ray
``twins.hosting.TwinFleet`` when ``whatif.twin_shards > 1`` (its host actors, routed by the twins'
stable hash). Predictions go through ``twins.predictor.LocalPredictor`` (``training.predictions``, the
path the Serve deployments use) and are drained in the same poll, so an alert is seen when its window
closes. Alerts become risk signals: a ``failure_risk`` alert carries its risk; an ``anomaly`` alert
carries ``whatif.anomaly_alert_risk``; sensor faults are data problems, not vehicle problems, and are
ignored. Nothing here reads the ground truth.

The what-if's twins differ from a served fleet's in three settings: predictions at most once per poll
(the policy cannot act on them more often), no periodic personal-head fine-tunes (on Ray they would
finish whenever the task does, and replications must be reproducible; the first head is still fitted
inline), and no checkpoints (``checkpoint_uri=None``: a replication is re-run, not recovered, and
writing every twin twice per poll would cost more than the twins themselves).

The stream shows the same failures the SimPy model runs (the plan's, passed to the generator as
``events``); when the workshop repairs one, the vehicle's simulation goes on without it after the
frames its twin has already seen (rewound to the start of that day, not re-run from day 0), so a
repaired part stops degrading the signals while the vehicle keeps its history (SOC, wear, odometer).
Limitation: the stream does not know when the vehicle is off the road (it keeps its own trip plan).
"""
from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import ray

from configs.frames import FrameBatch
from configs.settings import AmbientWindow, Config, SimulationConfig
from simulation.fleet import observation_window, sample_profile
from simulation.generator import VehicleSimulation
from simulation.whatif.detectors import RiskSignal
from simulation.whatif.plans import MS_PER_DAY, FailureSpec, VehiclePlan
from training.artifacts import load_anomaly_model, load_failure_model
from twins.host import HostSettings, TwinHost, route
from twins.hosting import TwinFleet
from twins.predictor import LocalPredictor
from twins.twin import VehicleTwin
from twins.types import Alert, IngestResult

ANOMALY_RULE = "anomaly"
RISK_RULE = "failure_risk"
# Periodic fine-tunes never fall due (see the module docstring); the first head is fitted inline.
_NO_PERIODIC_FINE_TUNE = 2**31 - 1
# drain's bound: the in-process predictor answers at once; on Ray, a poll waits for its host actors.
_DRAIN_TIMEOUT_S = 60.0


def vehicle_frame_batches(profile: Any, sim_cfg: SimulationConfig, seed: int, batch_seconds: float,
                          events: list[Any] | None = None) -> VehicleFrameStream:
    """``stream_vehicle_batches`` as numpy: batch ``k`` holds the frames in ``[start + k*batch, start + (k+1)*batch)``.

    The values are what ``configs.frames.FrameBatch.from_columns`` makes of the record batches (sensors cast to float32).
    """
    return VehicleFrameStream(profile, sim_cfg, seed, batch_seconds, events)


class VehicleFrameStream:
    """One vehicle's frame batches from a resumable generator simulation (``VehicleSimulation``).

    ``resume`` replaces the failures after a repair: the batches after the last one already taken
    come from the simulation rewound to the start of the day that holds them, with the new failures.
    """

    def __init__(self, profile: Any, sim_cfg: SimulationConfig, seed: int, batch_seconds: float,
                 events: list[Any] | None = None) -> None:
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

    def __iter__(self) -> VehicleFrameStream:
        return self

    def __next__(self) -> FrameBatch:
        while not self._ready:
            chunk = next(self.simulation, None)
            if chunk is None:
                if not self._pending:
                    raise StopIteration
                self._ready.append(FrameBatch.concat(self._pending))
                self._pending = []
                break
            day = chunk.frames()
            ids = (chunk.ts_ms - self.start_ms) // self.batch_ms
            cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
            complete: list[FrameBatch] = []
            for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), chunk.num_rows], strict=False):
                batch_id = int(ids[a])
                if batch_id < self._first_id:
                    continue
                if self._pending and batch_id != self._pending_id:
                    complete.append(FrameBatch.concat(self._pending))
                    self._pending = []
                self._pending.append(day.slice_rows(a, b))
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


class _SplicedStream:
    """Batches of one vehicle; inside an ambient window they come from that window's (hotter) stream.

    Every stream is the generator's own stream for one ambient offset; all advance together so that
    batch k of each covers the same time span (the generator aligns batches to the window start).
    """

    def __init__(self, streams: list[VehicleFrameStream], windows: Sequence[AmbientWindow], start_ms: int) -> None:
        self._streams = streams
        self._spans = [(start_ms + int(w.start_day * MS_PER_DAY),
                        start_ms + int((w.start_day + w.duration_days) * MS_PER_DAY)) for w in windows]

    def __iter__(self) -> _SplicedStream:
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


def with_ambient_offset(sim_cfg: SimulationConfig, extra_c: float) -> SimulationConfig:
    levers = sim_cfg.levers.model_copy(update={"ambient_offset_c": sim_cfg.levers.ambient_offset_c + extra_c})
    return sim_cfg.model_copy(update={"levers": levers})


class Hosting(Protocol):
    """The twin host the detector drives: ``twins.host.TwinHost`` or ``twins.hosting.TwinFleet``."""

    def ingest(self, block: FrameBatch) -> IngestResult: ...
    def drain(self, timeout_s: float) -> list[Alert]: ...


class TwinDetector:
    """Streams every vehicle's frames through the twin host, up to the time the policy asks about.

    ``TwinDetector(...)`` hosts the twins in this process (``TwinHost``) with the given models;
    ``on_ray`` hosts them on Ray actors (``TwinFleet``); ``from_run`` loads a trained run and picks by
    ``whatif.twin_shards``. Call ``close`` when done (it releases the Ray actors).
    """

    def __init__(self, profiles: Sequence[Any], config: Config, seed: int, *, plans: Sequence[VehiclePlan] = (),
                 anomaly_model: Any = None, failure_model: Any = None,
                 hosting: Callable[[HostSettings], Hosting] | None = None) -> None:
        whatif = config.whatif
        self.seed = seed
        self.sim_cfg = sim_cfg = coarse_simulation(config.simulation, whatif.twin_frame_interval_s)
        self.window_cfgs = [with_ambient_offset(sim_cfg, w.offset_c) for w in whatif.ambient_windows]
        self.windows = whatif.ambient_windows
        self.start_ms = observation_window(sim_cfg)[0]
        self.batch_seconds = whatif.detector_poll_hours * 3600.0
        self.failure_model = failure_model
        self.anomaly_model = anomaly_model
        self.anomaly_risk = whatif.anomaly_alert_risk
        self.settings = host_settings(config)
        if hosting is None:
            predictor = None if failure_model is None else LocalPredictor(
                (failure_model, None), top_k=0, mode_threshold=config.twins.risk_alert_threshold)
            self.hosting: Hosting = TwinHost(self.settings, anomaly_model, predictor)
        else:
            self.hosting = hosting(self.settings)
        self._started_ray = False
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

    @classmethod
    def from_run(cls, profiles: Sequence[Any], config: Config, seed: int, models_dir: str | None,
                 plans: Sequence[VehiclePlan] = ()) -> TwinDetector:
        """Twins with the trained anomaly and failure models of ``models_dir`` (a run directory), hosted in
        this process, or on ``whatif.twin_shards`` Ray actors when that is more than one."""
        if models_dir is None:
            raise FileNotFoundError("the twin detector needs a trained run directory (with models/)")
        if config.whatif.twin_shards > 1:
            return cls.on_ray(profiles, config, seed, plans=plans, models_dir=models_dir,
                              shards=config.whatif.twin_shards)
        try:
            anomaly_model = load_anomaly_model(models_dir)
        except FileNotFoundError:
            anomaly_model = None  # twins then score with their own statistical baseline
        return cls(profiles, config, seed, plans=plans, anomaly_model=anomaly_model,
                   failure_model=load_failure_model(models_dir))

    @classmethod
    def on_ray(cls, profiles: Sequence[Any], config: Config, seed: int, *, plans: Sequence[VehiclePlan] = (),
               models_dir: str | None = None, failure_model: Any = None, shards: int = 2) -> TwinDetector:
        """The twins on ``shards`` host actors of a ``TwinFleet`` (routed by ``twins.host.route``); all shards step
        together in each poll. Each actor loads the anomaly and failure models of ``models_dir`` itself, or is sent
        ``failure_model`` (pickled; no anomaly model then). Starts Ray if needed."""
        if shards < 1:
            raise ValueError(f"shards must be >= 1 (got {shards})")
        if models_dir is not None and failure_model is not None:
            raise ValueError("give models_dir or failure_model, not both")
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        anomaly_model = None
        threshold = config.twins.risk_alert_threshold
        factory: Callable[[], LocalPredictor] | None = None
        if models_dir is not None:
            try:
                anomaly_model = load_anomaly_model(models_dir)  # the actors load their own; here for stats()
            except FileNotFoundError:
                anomaly_model = None
            failure_model = load_failure_model(models_dir)
            factory = functools.partial(_run_predictor, models_dir, threshold)
        elif failure_model is not None:
            factory = functools.partial(LocalPredictor, (failure_model, None), 0, threshold)
        detector = cls(profiles, config, seed, plans=plans, anomaly_model=anomaly_model, failure_model=failure_model,
                       hosting=lambda settings: _ReplicationFleet(settings, shards, models_dir,
                                                                  predictor_factory=factory))
        detector._started_ray = started_ray
        return detector

    def _open_stream(self, vehicle_id: str) -> _SplicedStream:
        """The vehicle's frames from the generator (one stream per ambient offset, spliced by time)."""
        profile = self.profiles[vehicle_id]
        events = self.events[vehicle_id]
        streams = [vehicle_frame_batches(profile, self.sim_cfg, self.seed, self.batch_seconds, events=events)]
        streams += [vehicle_frame_batches(sample_profile(wc, self.seed, profile.index), wc, self.seed,
                                          self.batch_seconds, events=events) for wc in self.window_cfgs]
        return _SplicedStream(streams, self.windows, self.start_ms)

    @property
    def twins(self) -> dict[str, VehicleTwin]:
        """The resident twins of the in-process host (empty on Ray: they live in the actors)."""
        return self.hosting.twins if isinstance(self.hosting, TwinHost) else {}

    def observe(self, until_ms: int) -> list[RiskSignal]:
        due: list[FrameBatch] = []  # vehicle by vehicle, each vehicle's batches in time order
        for vehicle_id in self.profiles:
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
                due.append(batch)
        if not due:
            return []
        # Every vehicle's new frames in one call; the predictions it asks for are answered in the same poll.
        block = FrameBatch.concat(due)
        alerts = self.hosting.ingest(block).alerts
        alerts += self.hosting.drain(_DRAIN_TIMEOUT_S)
        self.frames += block.rows
        return sorted(self._signals(alerts), key=lambda x: (x.ts_ms, x.vehicle_id, x.source))

    def stats(self) -> dict[str, Any]:
        models = [name for name, model in (("LSTM-AE", self.anomaly_model), ("failure model", self.failure_model))
                  if model is not None]
        return {"frames": self.frames, "restarts": self.restarts, "alerts_by_rule": dict(self.alerts_by_rule),
                "models": models}

    def _signals(self, alerts: Sequence[Alert]) -> list[RiskSignal]:
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

    def close(self) -> None:
        """Release the host actors (on Ray; nothing to do in process)."""
        if isinstance(self.hosting, TwinFleet):
            self.hosting.close(checkpoint=False)
            if self._started_ray:
                ray.shutdown()


def host_settings(config: Config) -> HostSettings:
    """The what-if's twin settings (see the module docstring for how they differ from a served fleet's)."""
    whatif = config.whatif
    # Predictions at most once per poll: the policy cannot act on them more often.
    interval = max(config.twins.prediction_interval_minutes, whatif.detector_poll_hours * 60.0)
    twins_cfg = config.twins.model_copy(update={"prediction_interval_minutes": interval,
                                                "fine_tune_every_windows": _NO_PERIODIC_FINE_TUNE})
    return HostSettings(twins=twins_cfg, window_ms=int(config.dataset.window_minutes * 60_000),
                        stride_ms=int(config.dataset.stride_minutes * 60_000), checkpoint_uri=None)


def _run_predictor(models_dir: str, mode_threshold: float) -> LocalPredictor:
    """Built inside each host actor: the run's failure model only (the what-if reads no severity or contributions)."""
    return LocalPredictor((load_failure_model(models_dir), None), top_k=0, mode_threshold=mode_threshold)


class _ReplicationFleet(TwinFleet):
    """A ``TwinFleet`` whose actor names belong to one detector, so replications sharing a cluster never share twins."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name_prefix = f"evtwin-whatif-{uuid.uuid4().hex[:12]}"

    def host_name(self, vehicle_id: str) -> str:
        return f"{self.name_prefix}-{route(vehicle_id, max(self.shards, 1))}"
