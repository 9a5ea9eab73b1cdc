"""Twins on Ray: thin actor shells around ``twins.host.TwinHost`` and the driver-side ``TwinFleet`` router.

    import ray
    from configs.settings import load_config
    from twins.hosting import TwinFleet
    ray.init()
    fleet = TwinFleet.create(load_config(), run_dir="runs/default", expected_vehicles=10_000)
    result = fleet.ingest(record_batch)        # acks / alerts / rejections
    fleet.summary("veh-00001"); fleet.alerts(AlertFilter(rule="anomaly")); fleet.close()

Hosting shapes: ``twins_per_actor == 1`` gives one named actor per vehicle (``evtwin-twin-<id>``, the
design card's shape; an idle actor costs tens of MB, so for small fleets); ``twins_per_actor > 1``
gives ``ceil(expected_vehicles / twins_per_actor)`` shard actors (``evtwin-shard-<k>``), a vehicle's shard
being ``route(vehicle_id, shards)``. Actors are created on first contact and found again by name
(``get_if_exists``); Ray restarts a dead actor (``max_restarts=-1``) and the new one restores each twin
from its checkpoint when it is next touched. ``TwinFleet.ingest`` re-sends a call that failed because
its actor died: duplicates are acknowledged and ignored, so every frame takes effect once.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import ray

from configs.settings import Config, TwinsConfig
from twins.host import FrameBlock, HostSettings, PredictionBatch, TwinHost, route, to_block
from twins.types import Alert, AlertFilter, IngestResult

NAMESPACE = "evtwin"
MODELS_APP = "evtwin-models"
_ALERT_LOG = 100_000
_RETRIES = 8  # with backoff: ~20 s for Ray to restart a host actor
_REACQUIRE_AFTER = 3  # attempts on a dead actor before asking for it again by name
# A call caught by an actor's death can, rarely, never resolve (seen when the kill races the restart);
# after this long it is re-sent like a failed call, which dedup by seq makes safe.
_CALL_TIMEOUT_S = 30.0


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


class ServePredictor:
    """Asks the Serve deployments (by handle) for risk and severity; never waits for the answer."""

    def __init__(self, app_name: str = MODELS_APP, top_k: int = 3) -> None:
        from ray import serve

        self.failure = serve.get_deployment_handle("FailurePredictor", app_name=app_name)
        self.severity = serve.get_deployment_handle("SeverityClassifier", app_name=app_name)
        self.top_k = top_k

    def submit(self, vehicle_ids: list[str], window_end_ms: list[int], X: np.ndarray) -> Any:
        return {"failure": self.failure.predict_rows.remote(X, self.top_k),
                "severity": self.severity.severity_rows.remote(X), "answers": {}}

    def poll(self, ticket: Any) -> PredictionBatch | None:
        answers = ticket["answers"]
        for key in ("failure", "severity"):
            if key not in answers:
                try:
                    answers[key] = ticket[key].result(timeout_s=0.001)
                except TimeoutError:
                    return None
        from serving.deployments import row_answers

        risk, modes, contributions, severity = row_answers(answers["failure"], answers["severity"])
        return PredictionBatch(risk=risk, mode=modes, contributions=contributions, severity=severity)


# ---------------------------------------------------------------------------- the actor shell
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class TwinHostActor:
    """Wiring only: every method forwards to ``TwinHost``."""

    def __init__(self, settings: HostSettings, run_dir: str | None, use_models: bool,
                 predictor_factory: Callable[[], Any] | None = None) -> None:
        model = _load_anomaly_model(run_dir)
        predictor = None
        if predictor_factory is not None:  # an in-process predictor built in the actor (the what-if)
            predictor = predictor_factory()
        elif use_models:
            try:
                predictor = ServePredictor()
            except Exception:  # Serve not deployed: twins run without predictions
                predictor = None
        self.host = TwinHost(settings, model, predictor, RayRunner() if model is not None else None)

    def ingest(self, block: FrameBlock) -> IngestResult:
        return self.host.ingest(block)

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
        import os
        return os.getpid()


def _load_anomaly_model(run_dir: str | None) -> Any:
    if run_dir is None:
        return None
    from training.artifacts import ArtifactMismatch, load_anomaly_model

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
                 use_models: bool = False, detached: bool = False,
                 predictor_factory: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.predictor_factory = predictor_factory
        self.cfg: TwinsConfig = settings.twins
        self.shards = shards
        self.run_dir = run_dir
        self.use_models = use_models
        self.detached = detached
        self.actors: dict[str, Any] = {}
        self.seen: set[str] = set()
        self.alert_log: deque[Alert] = deque(maxlen=_ALERT_LOG)
        self._alert_ids: set[str] = set()
        self.listeners: list[Callable[[list[Alert]], None]] = []
        self.resent_calls = 0
        self.reacquired = 0  # handles asked for again by name after an actor stayed dead

    @classmethod
    def create(cls, config: Config, run_dir: str | None = None, expected_vehicles: int | None = None,
               use_models: bool = False, detached: bool = False) -> "TwinFleet":
        twins = config.twins
        shards = 0
        if twins.twins_per_actor > 1:
            expected = expected_vehicles or config.simulation.num_vehicles
            shards = max(1, math.ceil(expected / twins.twins_per_actor))
        settings = HostSettings(twins=twins, window_ms=int(config.dataset.window_minutes * 60_000),
                                stride_ms=int(config.dataset.stride_minutes * 60_000),
                                checkpoint_uri=twins.checkpoint_uri)
        return cls(settings, shards, run_dir, use_models, detached)

    # ------------------------------------------------------------------ routing
    def host_name(self, vehicle_id: str) -> str:
        if self.shards == 0:
            return f"evtwin-twin-{vehicle_id}"
        return f"evtwin-shard-{route(vehicle_id, self.shards)}"

    def actor(self, name: str) -> Any:
        handle = self.actors.get(name)
        if handle is None:
            handle = TwinHostActor.options(
                name=name, namespace=NAMESPACE, get_if_exists=True,
                lifetime="detached" if self.detached else None,
            ).remote(self.settings, self.run_dir, self.use_models, self.predictor_factory)
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

    def ingest(self, batch: pa.Table | pa.RecordBatch | dict[str, Any] | FrameBlock) -> IngestResult:
        """Apply a batch (any vehicles, any order). Returns durable acks, new alerts and refusals."""
        result = IngestResult()
        if isinstance(batch, FrameBlock):
            block = batch
        else:
            block, rejected = to_block(batch)
            result.rejected.extend(rejected)
        by_host: dict[str, list[int]] = {}
        for i, vehicle_id in enumerate(block.vehicle_ids):
            by_host.setdefault(self.host_name(vehicle_id), []).append(i)
        self.seen.update(block.vehicle_ids)
        pending = {name: block.select(idx) if len(by_host) > 1 else block for name, idx in by_host.items()}
        for attempt in range(_RETRIES):
            calls = {name: self.actor(name).ingest.remote(part) for name, part in pending.items()}
            failed: dict[str, FrameBlock] = {}
            for name, ref in calls.items():
                try:
                    result.merge(ray.get(ref, timeout=_CALL_TIMEOUT_S))
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
            time.sleep(min(0.1 * 2**attempt, 5.0))  # a restarting actor needs a worker process (~2 s)
        else:
            raise RuntimeError(f"host actors {sorted(pending)} failed {_RETRIES} times in a row")
        self._record(result.alerts)
        return result

    def _record(self, alerts: list[Alert]) -> None:
        fresh = [a for a in alerts if a.alert_id not in self._alert_ids]
        for alert in fresh:
            self._alert_ids.add(alert.alert_id)
            self.alert_log.append(alert)
        if fresh:
            for listener in self.listeners:
                listener(fresh)

    def subscribe(self, listener: Callable[[list[Alert]], None]) -> None:
        """Call ``listener(new_alerts)`` whenever an ingest produces alerts not seen before."""
        self.listeners.append(listener)

    # ------------------------------------------------------------------ queries
    def summary(self, vehicle_id: str) -> dict[str, Any] | None:
        return ray.get(self.actor(self.host_name(vehicle_id)).summary.remote(vehicle_id))

    def list_twins(self) -> list[str]:
        from twins.store import CheckpointStore
        return sorted(self.seen | set(CheckpointStore(self.settings.checkpoint_uri).list()))

    def alerts(self, flt: AlertFilter | None = None) -> list[Alert]:
        flt = flt or AlertFilter()
        matched = [a for a in self.alert_log if flt.matches(a)]
        return matched[-flt.limit:]

    def checkpoint_all(self) -> int:
        return sum(ray.get([a.checkpoint_all.remote() for a in self.actors.values()]))

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
