"""Wiring for ``evtwin serve``: Ray (started or joined), model services, twins, and the backend over them.

Backends (``--backend``):
- ``ray``: twins on Ray actors (``twins.hosting.TwinFleet``), model services on Ray Serve when the run has
  trained models. The product's shape; ``--address`` joins an existing cluster instead of starting one.
- ``local``: the same twins in the server process (``twins.host.TwinHost``), no Ray; small fleets, tests.
- ``memory``: ingest only (dedup, acks, sensor-fault alerts); measures the front door alone.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configs.settings import Config, ServingConfig, TwinsConfig
from serving.backend import FleetBackend, LocalTwinsBackend, MemoryFleet, TwinFleetBackend
from serving.deployments import deploy_models
from serving.predictor import ServePredictor
from training.artifacts import load_anomaly_model
from twins.host import HostSettings, TwinHost
from twins.hosting import TwinFleet

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("ray", "local", "memory")


@dataclass
class Runtime:
    backend: FleetBackend
    notes: list[str] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def shutdown(self) -> None:
        """Undo what ``open_runtime`` started, newest first (Serve apps, then Ray)."""
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception as error:  # shutting down: report, keep going
                log.warning("cleanup failed: %r", error)


def resolve_run_paths(config: Config, run_dir: str | Path) -> Config:
    """Default secret and checkpoint locations under the run directory, not the working directory.

    A path the configuration sets explicitly is kept; the shipped defaults (``runs/keys/auth.secret``,
    ``runs/checkpoints``) become ``<run>/keys/auth.secret`` and ``<run>/checkpoints``, so a server started
    from another directory finds the same keys and twins.
    """
    run_dir = Path(run_dir)
    serving, twins = config.serving, config.twins
    if serving.auth_secret_path == ServingConfig().auth_secret_path:
        serving = serving.model_copy(update={"auth_secret_path": str(run_dir / "keys" / "auth.secret")})
    if twins.checkpoint_uri == TwinsConfig().checkpoint_uri:
        twins = twins.model_copy(update={"checkpoint_uri": str(run_dir / "checkpoints")})
    return config.model_copy(update={"serving": serving, "twins": twins})


def start_ray(config: Config, address: str | None) -> Callable[[], None]:
    """Join ``address`` or start a local Ray bound to localhost; returns how to leave it."""
    import ray

    if ray.is_initialized():
        return lambda: None
    if address:
        ray.init(address=address, namespace="evtwin", log_to_driver=False)
    else:
        ray.init(namespace="evtwin", include_dashboard=config.serving.ray_dashboard, dashboard_host="127.0.0.1",
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    return ray.shutdown


def has_models(run_dir: str | Path | None) -> bool:
    return run_dir is not None and (Path(run_dir) / "models").is_dir()


def deploy_model_services(config: Config, run_dir: str | Path) -> Callable[[], None]:
    """Deploy the Serve model services of the run (``serving.deployments``); returns how to remove them."""
    from ray import serve

    deploy_models(config, str(run_dir))
    return serve.shutdown


def _host_settings(config: Config) -> HostSettings:
    return HostSettings(twins=config.twins, window_ms=config.dataset.window_ms, stride_ms=config.dataset.stride_ms,
                        checkpoint_uri=config.twins.checkpoint_uri)


def _anomaly_model(run_dir: str | Path | None) -> Any:
    if not has_models(run_dir):
        return None
    try:
        return load_anomaly_model(str(run_dir))
    except FileNotFoundError:
        return None


def open_runtime(config: Config, kind: str, run_dir: str | Path | None = None, address: str | None = None,
                 expected_vehicles: int | None = None) -> Runtime:
    if kind not in BACKENDS:
        raise ValueError(f"backend {kind!r}: expected one of {BACKENDS}")
    if kind == "memory":
        return Runtime(MemoryFleet(), ["memory backend: acks and sensor-fault alerts only, no twins, not durable"])
    if kind == "local":
        model = _anomaly_model(run_dir)
        note = "local twins in the server process" + ("" if model else " (no anomaly model: baselines only)")
        return Runtime(LocalTwinsBackend(TwinHost(_host_settings(config), anomaly_model=model)), [note])
    runtime = Runtime(MemoryFleet())
    runtime.cleanups.append(start_ray(config, address))
    use_models = False
    if has_models(run_dir):
        try:
            runtime.cleanups.append(deploy_model_services(config, run_dir))
            use_models = True
        except Exception as error:  # twins still run without model services (anomaly alerts only)
            runtime.notes.append(f"model services not deployed ({error!r}); twins run without risk predictions")
    fleet = TwinFleet.create(config, run_dir=str(run_dir) if has_models(run_dir) else None,
                             expected_vehicles=expected_vehicles,
                             predictor_factory=ServePredictor if use_models else None)
    runtime.backend = TwinFleetBackend(fleet)
    layout = (f"hosts of {config.twins.twins_per_actor} twins opened as vehicles arrive, at most "
              f"{config.twins.max_host_actors}" if config.twins.twins_per_actor > 1 else "one actor per vehicle")
    runtime.notes.append(f"twins on Ray ({layout})"
                         + (", model services on Ray Serve" if use_models else ", no model services"))
    return runtime
