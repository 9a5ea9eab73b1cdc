"""Twins on Ray: thin actor shells around ``twins.host.TwinHost`` and the driver-side ``TwinFleet`` router.

    import ray
    from configs.settings import load_config
    from twins.hosting import TwinFleet
    ray.init()
    fleet = TwinFleet.create(load_config(), run_dir="runs/default", expected_vehicles=10_000)
    result = fleet.ingest(record_batch)        # acks / alerts / rejections
    fleet.summary("veh-00001"); fleet.alerts(AlertFilter(rule="anomaly")); fleet.close()

Hosting shapes: ``twins_per_actor > 1`` (the default, 256) opens shard actors as vehicles arrive
(``twins.host.Placement``: one host until it holds ``twins_per_actor`` twins, then the next, at most
``twins.max_host_actors``), named ``evtwin-shard-<router id>-<k>``; each loads the models once and scores
its twins in batches. ``twins_per_actor == 1`` gives one named actor per vehicle (``evtwin-twin-<id>``, the
design card's shape; every actor loads the models, so for small fleets). ``TwinFleet(settings, shards=k)``
routes by hash over k fixed shards (``route(vehicle_id, k)``; the what-if).
Actors are created by telemetry only (``ingest``) and found again by
name (``get_if_exists``); lookups (``summary``) ask a live host, else read the checkpoint, and never start
an actor. Ray restarts a dead actor (``max_restarts=-1``) and the new one restores each twin from its
checkpoint when it is next touched. A host without traffic for ``twins.idle_release_s`` is checkpointed
and killed; its next frame starts it again from the checkpoints. Alert history lives in the
``AlertStore`` beside the checkpoints, so ``alerts`` answers across restarts. ``TwinFleet.ingest``
re-sends a call that failed because its actor died: duplicates are acknowledged and ignored, so every
frame takes effect once.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray

from configs.frames import FrameBatch
from configs.settings import Config, TwinsConfig
from training.artifacts import ArtifactMismatch, load_anomaly_model
from twins.host import HostSettings, Placement, Predictor, TwinHost, checkpoint_summary, route
from twins.metrics import RaySink, TwinMetrics
from twins.store import AlertStore, CheckpointStore
from twins.types import Alert, AlertFilter, IngestResult

NAMESPACE = "evtwin"
# Builds a host's predictor inside the actor (a handle to a model service cannot travel pickled).
PredictorFactory = Callable[[], Predictor]
_ALERT_LOG = 100_000
_RETRIES = 8  # with backoff: ~20 s for Ray to restart a host actor
_REACQUIRE_AFTER = 3  # attempts on a dead actor before asking for it again by name
# A call caught by an actor's death can, rarely, never resolve (seen when the kill races the restart);
# after this long it is re-sent like a failed call, which dedup by seq makes safe.
_CALL_TIMEOUT_S = 30.0
_POLL_S = 0.25  # how often a waiting call looks at TwinFleet.stopping


class FleetStopping(RuntimeError):
    """The fleet is shutting down: the batch was not (entirely) applied and is not acknowledged."""


# ---------------------------------------------------------------------------- injected services on Ray
class RayRunner:
    """Runs functions as Ray tasks (the per-vehicle fine-tune) and polls them without blocking."""

    def __init__(self) -> None:
        self._remote = ray.remote(num_cpus=0.25, max_retries=1)(_call)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._remote.remote(fn, *args)

    def poll(self, ticket: Any) -> tuple[bool, Any]:
        ready, _ = ray.wait([ticket], timeout=0)
        return (True, ray.get(ticket)) if ready else (False, None)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


# ---------------------------------------------------------------------------- the actor shell
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class TwinHostActor:
    """Wiring only: every method forwards to ``TwinHost``."""

    def __init__(self, settings: HostSettings, run_dir: str | None,
                 predictor_factory: PredictorFactory | None) -> None:
        model = _load_anomaly_model(run_dir)
        predictor = None
        if predictor_factory is not None:
            try:
                predictor = predictor_factory()
            except Exception as error:  # the model services are not there: twins run without predictions
                logging.getLogger(__name__).warning("twins run without predictions: %r", error)
                predictor = None
        self.host = TwinHost(settings, model, predictor, RayRunner() if model is not None else None)
        self.metrics = TwinMetrics(RaySink(), host=ray.get_runtime_context().get_actor_name() or "host")

    def ingest(self, block: FrameBatch) -> IngestResult:
        return self.metrics.ingest(self.host, block)  # host.ingest, measured (twins/metrics.py)

    def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        return self.host.summary(vehicle_id)

    def alerts(self, flt: AlertFilter) -> list[Alert]:
        return self.host.alerts(flt)

    def checkpoint_all(self) -> int:
        return self.host.checkpoint_all()

    def drain(self, timeout_s: float) -> list[Alert]:
        return self.host.drain(timeout_s)

    def stats(self) -> dict[str, Any]:
        return self.host.stats()

    def twin_bytes(self, vehicle_id: str) -> bytes:
        return self.host.twin(vehicle_id).to_bytes()

    def pid(self) -> int:
        return os.getpid()


def _load_anomaly_model(run_dir: str | None) -> Any:
    if run_dir is None:
        return None
    try:
        return load_anomaly_model(run_dir)
    except FileNotFoundError:
        return None  # no trained LSTM-AE: twins score with their statistical baseline only
    except ArtifactMismatch as error:  # a stale artefact: degrade instead of killing the host
        logging.getLogger(__name__).warning("anomaly model not used: %s", error)
        return None


# ---------------------------------------------------------------------------- the driver-side router
class TwinFleet:
    """Routes batches to host actors (one call per actor per batch) and answers queries.

    The gRPC server calls only this class. Create it after ``ray.init``.
    """

    def __init__(self, settings: HostSettings, shards: int, run_dir: str | None = None,
                 predictor_factory: PredictorFactory | None = None, detached: bool = False,
                 placement: Placement | None = None) -> None:
        """``shards``: 0 = one actor per vehicle, k > 0 = k shards routed by hash; ignored with a ``placement``
        (hosts opened as vehicles arrive, named for this router so a restarted one never shares hosts with
        the old one's live twins)."""
        self.settings = settings
        self.predictor_factory = predictor_factory
        self.cfg: TwinsConfig = settings.twins
        self.shards = shards
        self.placement = placement
        self.router_id = uuid.uuid4().hex[:8]
        self.run_dir = run_dir
        self.predictor_factory = predictor_factory
        self.detached = detached
        self.actors: dict[str, Any] = {}
        self.seen: set[str] = set()
        self.alert_log: deque[Alert] = deque(maxlen=_ALERT_LOG)
        self._alert_ids: dict[str, None] = {}  # ids in alert_log, oldest first: bounded with it
        self.listeners: list[Callable[[list[Alert]], None]] = []
        self.resent_calls = 0
        self.reacquired = 0  # handles asked for again by name after an actor stayed dead
        self.released = 0  # idle hosts checkpointed and killed
        self.clock: Callable[[], float] = time.monotonic
        self.last_used: dict[str, float] = {}  # host name -> last ingest that reached it
        self._history_loaded = False  # alerts raised before this fleet started, read on the first query
        # Set from another thread at shutdown: the call in flight gives up within _POLL_S, nothing is retried.
        self.stopping = threading.Event()

    @classmethod
    def create(cls, config: Config, run_dir: str | None = None, expected_vehicles: int | None = None,
               predictor_factory: PredictorFactory | None = None, detached: bool = False) -> TwinFleet:
        """``run_dir`` gives the LSTM-AE (None: baselines only); ``predictor_factory`` a picklable zero-argument
        callable each host actor calls once to build its ``twins.host.Predictor`` (e.g.
        ``serving.predictor.ServePredictor``; None: no risk predictions)."""
        twins = config.twins
        settings = HostSettings(twins=twins, window_ms=config.dataset.window_ms, stride_ms=config.dataset.stride_ms,
                                checkpoint_uri=twins.checkpoint_uri)
        if twins.twins_per_actor == 1:
            return cls(settings, 0, run_dir, predictor_factory, detached)
        # Hosts grow with the fleet met (not simulation.num_vehicles); ``expected_vehicles`` only spreads the
        # first vehicles over more hosts at once.
        min_hosts = math.ceil(expected_vehicles / twins.twins_per_actor) if expected_vehicles else 1
        placement = Placement(twins.twins_per_actor, twins.max_host_actors, min_hosts=min_hosts)
        return cls(settings, 0, run_dir, predictor_factory, detached, placement=placement)

    # ------------------------------------------------------------------ routing
    def host_name(self, vehicle_id: str) -> str | None:
        """The name of the vehicle's host; None when hosts are placed as vehicles arrive and this one never did."""
        if self.placement is not None:
            host = self.placement.host_of(vehicle_id)
            return None if host is None else self._placed_name(host)
        if self.shards == 0:
            return f"evtwin-twin-{vehicle_id}"
        return f"evtwin-shard-{route(vehicle_id, self.shards)}"

    def _placed_name(self, host: int) -> str:
        return f"evtwin-shard-{self.router_id}-{host}"

    def _place(self, vehicle_id: str) -> str:
        """The vehicle's host for telemetry (placing it on first contact)."""
        if self.placement is not None:
            return self._placed_name(self.placement.place(vehicle_id))
        return self.host_name(vehicle_id)  # type: ignore[return-value]

    def host_names(self) -> list[str]:
        """The hosts this router has placed vehicles on (live or released)."""
        if self.placement is None:
            return sorted(self.actors)
        return [self._placed_name(k) for k in range(len(self.placement.loads))]

    def _existing(self, name: str) -> Any | None:
        """A live host's handle (ours, or a named actor another router created), never a new actor."""
        handle = self.actors.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:  # no such actor: released, never created, or dead for good
                return None
            self.actors[name] = handle
        return handle

    def release_idle(self) -> list[str]:
        """Checkpoint and kill hosts without traffic for ``twins.idle_release_s`` (their next frame restores them)."""
        horizon = self.clock() - self.cfg.idle_release_s
        idle = [name for name, used in self.last_used.items() if used < horizon and name in self.actors]
        for name in idle:
            handle = self.actors[name]
            try:
                ray.get(handle.checkpoint_all.remote(), timeout=_CALL_TIMEOUT_S)
            except (ray.exceptions.RayError, OSError):
                continue  # not checkpointed: keep it (every acked frame is durable anyway); try again later
            ray.kill(handle, no_restart=True)
            del self.actors[name], self.last_used[name]
            self.released += 1
        return idle

    def actor(self, name: str) -> Any:
        """The host's handle, starting it if needed: for telemetry only (``ingest``), never for a lookup."""
        handle = self.actors.get(name)
        if handle is None:
            handle = TwinHostActor.options(
                name=name, namespace=NAMESPACE, get_if_exists=True,
                lifetime="detached" if self.detached else None,
            ).remote(self.settings, self.run_dir, self.predictor_factory)
            self.actors[name] = handle
        return handle

    def _reacquire(self, name: str) -> None:
        """A fresh handle by name: the restarted actor, or a new one restoring from checkpoints when Ray will not
        restart the old one (seen once in CI: a killed actor reported "all references removed" and stayed dead).
        The stale handle is held until the new one exists, so no reference gap lets Ray reap a restarting actor."""
        stale = self.actors.pop(name, None)
        self.actor(name)
        self.reacquired += 1
        del stale

    def ingest(self, batch: pa.Table | pa.RecordBatch | dict[str, Any] | FrameBatch) -> IngestResult:
        """Apply a batch (any vehicles, any order). Returns durable acks, new alerts and refusals."""
        result = IngestResult()
        if isinstance(batch, FrameBatch):
            block = batch
        else:
            block, rejected = FrameBatch.from_columns(batch)
            result.rejected.extend(rejected)
        by_host: dict[str, list[int]] = {}
        for i, vehicle_id in enumerate(block.vehicle_ids):
            by_host.setdefault(self._place(vehicle_id), []).append(i)
        self.release_idle()
        self.seen.update(block.vehicle_ids)
        pending = {name: block.select(idx) if len(by_host) > 1 else block for name, idx in by_host.items()}
        for attempt in range(_RETRIES):
            self._check_stopping()
            calls = {name: self.actor(name).ingest.remote(part) for name, part in pending.items()}
            failed: dict[str, FrameBatch] = {}
            for name, outcome in self._gather(calls).items():
                try:
                    if isinstance(outcome, Exception):
                        raise outcome
                    result.merge(outcome)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                        ray.exceptions.GetTimeoutError) as error:
                    # The actor died mid-call: whatever it had checkpointed is acknowledged on re-send,
                    # the rest is applied again; dedup by seq makes that exactly-once in effect.
                    failed[name] = pending[name]
                    if isinstance(error, ray.exceptions.ActorDiedError) and attempt + 1 >= _REACQUIRE_AFTER:
                        self._reacquire(name)
            if not failed:
                break
            self.resent_calls += len(failed)
            pending = failed
            # A restarting actor needs a worker process (~2 s); a shutdown does not wait for it.
            if self.stopping.wait(min(0.1 * 2**attempt, 5.0)):
                self._check_stopping()
        else:
            raise RuntimeError(f"host actors {sorted(pending)} failed {_RETRIES} times in a row")
        now = self.clock()  # idle time counts from the last answer (starting an actor takes seconds)
        self.last_used.update((name, now) for name in by_host)
        self._record(result.alerts)
        return result

    def stop_ingest(self) -> None:
        """Shutting down (thread-safe): the ingest in flight gives up within ``_POLL_S``, none is retried."""
        self.stopping.set()

    def _check_stopping(self) -> None:
        if self.stopping.is_set():
            raise FleetStopping("the twin fleet is shutting down: batch not acknowledged (re-send it)")

    def _gather(self, calls: dict[str, Any]) -> dict[str, Any]:
        """Each call's answer, or its exception (``GetTimeoutError`` after ``_CALL_TIMEOUT_S``); waits in short
        slices so a shutdown stops waiting on actors that are still starting."""
        names = {ref: name for name, ref in calls.items()}
        outcomes: dict[str, Any] = {}
        deadline = time.monotonic() + _CALL_TIMEOUT_S
        while names:
            self._check_stopping()
            left = deadline - time.monotonic()
            if left <= 0:
                for name in names.values():
                    outcomes[name] = ray.exceptions.GetTimeoutError(f"host {name}: no answer in {_CALL_TIMEOUT_S} s")
                break
            ready, _ = ray.wait(list(names), num_returns=len(names), timeout=min(_POLL_S, left))
            for ref in ready:
                name = names.pop(ref)
                try:
                    outcomes[name] = ray.get(ref)
                except ray.exceptions.RayError as error:
                    outcomes[name] = error
        return outcomes

    def _record(self, alerts: list[Alert]) -> None:
        fresh = self._record_quietly(alerts)
        if fresh:
            for listener in self.listeners:
                listener(fresh)

    def _record_quietly(self, alerts: list[Alert]) -> list[Alert]:
        """Add alerts not seen before to the bounded log (ids bounded with it); returns them."""
        fresh = [a for a in alerts if a.alert_id not in self._alert_ids]
        fresh = list({a.alert_id: a for a in fresh}.values())
        for alert in fresh:
            if len(self.alert_log) == self.alert_log.maxlen:
                self._alert_ids.pop(self.alert_log[0].alert_id, None)
            self._alert_ids[alert.alert_id] = None
            self.alert_log.append(alert)
        return fresh

    def subscribe(self, listener: Callable[[list[Alert]], None]) -> None:
        """Call ``listener(new_alerts)`` whenever an ingest produces alerts not seen before."""
        self.listeners.append(listener)

    # ------------------------------------------------------------------ queries
    def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        """A live host's answer, else the checkpoint's; None for an unknown vehicle. Never creates a twin."""
        name = self.host_name(vehicle_id)
        handle = None if name is None else self._existing(name)
        if handle is not None:
            return ray.get(handle.summary.remote(vehicle_id))
        data = CheckpointStore(self.settings.checkpoint_uri).get(vehicle_id)
        return None if data is None else checkpoint_summary(data, self.cfg)

    def list_twins(self) -> list[str]:
        return sorted(self.seen | set(CheckpointStore(self.settings.checkpoint_uri).list()))

    def alerts(self, flt: AlertFilter | None = None) -> list[Alert]:
        flt = flt or AlertFilter()
        if not self._history_loaded:
            history = AlertStore(self.settings.checkpoint_uri).read_all()
            live = list(self.alert_log)
            self.alert_log.clear()
            self._alert_ids.clear()
            self._record_quietly(history + live)
            self._history_loaded = True
        matched = [a for a in self.alert_log if flt.matches(a)]
        return matched[-flt.limit:]

    def checkpoint_all(self, timeout_s: float | None = None) -> int:
        return sum(ray.get([a.checkpoint_all.remote() for a in self.actors.values()], timeout=timeout_s))

    def drain(self, timeout_s: float = 5.0) -> list[Alert]:
        """Wait (bounded) for predictions and fine-tunes in flight; returns the alerts they raised."""
        alerts = [a for part in ray.get([h.drain.remote(timeout_s) for h in self.actors.values()]) for a in part]
        self._record(alerts)
        return alerts

    def stats(self) -> dict[str, Any]:
        per_host = ray.get([a.stats.remote() for a in self.actors.values()])
        total: dict[str, Any] = {"hosts": len(self.actors), "resent_calls": self.resent_calls,
                                 "reacquired": self.reacquired}
        for stats in per_host:
            for key, value in stats.items():
                total[key] = total.get(key, 0) + int(value)
        return total

    def close(self, checkpoint: bool = True) -> None:
        """Checkpoint (graceful shutdown) and release the host actors."""
        if checkpoint and self.actors:
            self.checkpoint_all()
        for handle in self.actors.values():
            ray.kill(handle, no_restart=True)
        self.actors.clear()
        self.last_used.clear()
