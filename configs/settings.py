"""Typed, eagerly validated configuration.

Every tunable lives in ``configs/config.json``; each part of the code receives only its own
sub-config (``Config.simulation``, ``Config.twins``, ...). Unknown keys, wrong types and impossible
values are refused with the dotted key path and the offending value.

>>> cfg = load_config(overrides=["simulation.num_vehicles=3"])
>>> cfg.simulation.num_vehicles
3
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).with_name("config.json")


class ConfigError(ValueError):
    """A configuration value was refused; the message names the key path and the value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetMix(_Section):
    """Shares of duty cycles and climates in the generated fleet (each set sums to 1)."""

    duty_cycles: dict[Literal["commuter", "taxi", "delivery"], float] = {"commuter": 0.5, "taxi": 0.25, "delivery": 0.25}
    climates: dict[Literal["temperate", "hot", "cold"], float] = {"temperate": 0.6, "hot": 0.2, "cold": 0.2}
    aggressive_driver_share: float = Field(0.2, ge=0, le=1)
    pack_age_years_max: float = Field(6.0, ge=0, le=20)

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> "FleetMix":
        for name in ("duty_cycles", "climates"):
            shares = getattr(self, name)
            if any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1.0) > 1e-6:
                raise ValueError(f"{name} shares must be >= 0 and sum to 1 (got {shares})")
        return self


class ScenarioLevers(_Section):
    """What-if levers: a scenario is a change of these parameters, not new code."""

    ambient_offset_c: float = Field(0.0, ge=-30, le=30)
    dc_fast_charge_share: float = Field(0.2, ge=0, le=1)
    pack_age_offset_years: float = Field(0.0, ge=0, le=20)
    failure_rate_multiplier: float = Field(1.0, ge=0, le=100)


class SimulationConfig(_Section):
    """The synthetic fleet generator."""

    num_vehicles: int = Field(10, gt=0, le=1_000_000)
    duration_days_per_vehicle: float = Field(7, gt=0, le=3650)
    frame_interval_s: float = Field(10.0, gt=0, le=3600)
    start_time: str = "2026-01-05T00:00:00+00:00"
    chunk_hours: float = Field(24.0, gt=0, le=24 * 31)
    fleet_mix: FleetMix = FleetMix()
    levers: ScenarioLevers = ScenarioLevers()
    # Probability that a vehicle develops each failure mode within a 30-day span.
    failure_mode_rates: dict[str, float] = {
        "cell_imbalance": 0.06, "coolant_pump": 0.05, "internal_resistance": 0.05, "inverter_overheat": 0.04,
        "motor_bearing": 0.04, "brake_wear": 0.05, "tyre_slow_leak": 0.06, "aux_battery": 0.05,
    }
    # Probability per vehicle-day that a sensor fault (stuck, drift, dropout, spikes) starts.
    sensor_fault_rate_per_day: float = Field(0.02, ge=0, le=1)
    healthy_vehicle_share: float = Field(0.4, ge=0, le=1)

    @model_validator(mode="after")
    def _rates_are_probabilities(self) -> "SimulationConfig":
        for mode, rate in self.failure_mode_rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"failure_mode_rates.{mode} must be in [0, 1] (got {rate})")
        return self


class LabelsConfig(_Section):
    failure_horizons_days: list[int] = Field([7, 14, 30], min_length=1)

    @model_validator(mode="after")
    def _horizons_positive(self) -> "LabelsConfig":
        for h in self.failure_horizons_days:
            if h <= 0:
                raise ValueError(f"failure_horizons_days entries must be > 0 (got {h})")
        return self


class DatasetConfig(_Section):
    window_minutes: float = Field(60.0, gt=0)
    stride_minutes: float = Field(60.0, gt=0)
    split_fractions: dict[Literal["train", "validation", "test"], float] = {"train": 0.6, "validation": 0.2, "test": 0.2}


class TrainingConfig(_Section):
    lightgbm_num_rounds: int = Field(400, gt=0)
    lightgbm_learning_rate: float = Field(0.05, gt=0, le=1)
    lightgbm_num_leaves: int = Field(31, gt=1)
    early_stopping_rounds: int = Field(30, gt=0)
    lstm_hidden_size: int = Field(32, gt=0)
    lstm_epochs: int = Field(10, gt=0)
    lstm_batch_size: int = Field(128, gt=0)
    lstm_learning_rate: float = Field(1e-3, gt=0)
    # Alerts allowed per 100 vehicle-days of healthy operation; thresholds are chosen on validation.
    alert_budget_per_100_vehicle_days: float = Field(1.0, gt=0)


class AnomalyConfig(_Section):
    anomaly_threshold_percentile: float = Field(99.0, gt=0, lt=100)


class TwinsConfig(_Section):
    twins_per_actor: int = Field(1, gt=0)
    checkpoint_uri: str = "runs/checkpoints"
    prediction_interval_minutes: float = Field(60.0, gt=0)
    alert_cooldown_minutes: float = Field(360.0, ge=0)
    reorder_buffer_frames: int = Field(64, ge=0)
    idle_evict_minutes: float = Field(60.0, gt=0)


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    grpc_port: int = Field(50151, ge=0, le=65535)
    serve_grpc_port: int = Field(9000, ge=0, le=65535)
    serve_http_port: int = Field(8000, ge=0, le=65535)
    max_message_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_frames_in_flight_per_stream: int = Field(20_000, gt=0)
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    tls_client_ca_path: str | None = None


class WhatIfConfig(_Section):
    workshop_bays: int = Field(4, gt=0)
    technicians: int = Field(4, gt=0)
    replications: int = Field(4, gt=0)


class Config(_Section):
    """The whole configuration; pass each component only its own section."""

    seed: int = Field(7, ge=0)
    run_name: str = "default"
    simulation: SimulationConfig = SimulationConfig()
    labels: LabelsConfig = LabelsConfig()
    dataset: DatasetConfig = DatasetConfig()
    training: TrainingConfig = TrainingConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    twins: TwinsConfig = TwinsConfig()
    serving: ServingConfig = ServingConfig()
    whatif: WhatIfConfig = WhatIfConfig()

    def content_hash(self) -> str:
        """Stable hash of every value, recorded in manifests and model artefacts."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _describe(error: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "<root>"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key (value {error['input']!r})"
    return f"{path}: {message} (got {error['input']!r})"


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as JSON when it parses, else kept as a string.

    >>> parse_override("simulation.num_vehicles=200")
    (['simulation', 'num_vehicles'], 200)
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r}: expected KEY.PATH=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(document: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for assignment in overrides:
        path, value = parse_override(assignment)
        node = document
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {assignment!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return document


def config_from_dict(document: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in exc.errors())) from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a JSON config (the shipped default when ``path`` is None) and apply ``--set`` overrides."""
    config_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        document = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {config_path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"config file {config_path}: top level must be an object")
    return config_from_dict(apply_overrides(document, overrides))
