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
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from configs.schema import SCHEMA

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
    def _shares_sum_to_one(self) -> FleetMix:
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


class PlantVariant(_Section):
    """Physics coefficients of the simulated vehicles (domain-shift variants; the defaults are the training fleet's).

    Every scale is a multiplier on the default plant model, so 1.0 everywhere leaves the frames bit-identical.
    """

    drive_efficiency: float = Field(0.90, gt=0.3, le=1)  # battery -> wheel
    regen_efficiency: float = Field(0.70, ge=0, le=1)  # wheel -> battery
    pack_heat_capacity_scale: float = Field(1.0, gt=0, le=10)  # thermal mass of the pack
    coolant_conductance_scale: float = Field(1.0, gt=0, le=10)  # heat the coolant loop removes per L/min
    drivetrain_heating_scale: float = Field(1.0, gt=0, le=10)  # motor and inverter temperature rise per W of loss
    hvac_power_scale: float = Field(1.0, gt=0, le=10)  # cabin heating/cooling power for the same ambient
    cell_chemistry: Literal["nmc", "lfp"] = "nmc"  # open-circuit voltage curve of the cells
    resistance_scale: float = Field(1.0, gt=0, le=10)  # pack internal resistance
    # Cells in series for every vehicle (None: 96 or 192 as sampled); resistance scales with the count.
    cells_series: int | None = Field(None, ge=24, le=240)


# Sensors each named profile does not fit (their columns are NaN in every frame).
SENSOR_PROFILES: dict[str, tuple[str, ...]] = {
    "full": (),
    "no_coolant_loop": ("coolant_temp_in", "coolant_temp_out", "coolant_flow", "pump_speed"),
    "no_drivetrain": ("motor_speed", "motor_torque", "motor_temp", "inverter_temp"),
    "no_gps_dcdc": ("latitude", "longitude", "dcdc_current"),
}


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
    # Failures are sampled this many days past the observed window (latent, observed=False), so that
    # horizon labels near the end of the window have ground truth (>= the longest label horizon).
    latent_failure_days: float = Field(30.0, ge=0, le=3650)
    # Domain-shift variants (all off by default: the default fleet is unchanged).
    plant: PlantVariant = PlantVariant()
    # Frames every this many seconds while driving (None: frame_interval_s always); parked and charging
    # frames then come every frame_interval_s, aligned to the window start (a variable frame rate).
    driving_frame_interval_s: float | None = Field(None, gt=0, le=3600)
    # The first frame's seq (real vehicles often count from 0); seq still increases by 1 per frame.
    first_seq: int = Field(1, ge=0)
    # Sensors the vehicles do not have: a named profile (SENSOR_PROFILES) plus any listed fields.
    sensor_profile: str = "full"
    absent_sensors: list[str] = []

    @model_validator(mode="after")
    def _rates_are_probabilities(self) -> SimulationConfig:
        for mode, rate in self.failure_mode_rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"failure_mode_rates.{mode} must be in [0, 1] (got {rate})")
        if self.sensor_profile not in SENSOR_PROFILES:
            raise ValueError(f"sensor_profile {self.sensor_profile!r} is not one of {sorted(SENSOR_PROFILES)}")
        for name in self.absent_sensors:
            if name not in SCHEMA.sensor_names:
                raise ValueError(f"absent_sensors: {name!r} is not a telemetry field")
            if not SCHEMA.field(name).dtype.startswith("float"):
                raise ValueError(f"absent_sensors: {name!r} is not a float field (only those can be NaN)")
        if self.driving_frame_interval_s is not None and self.driving_frame_interval_s > self.frame_interval_s:
            raise ValueError(f"driving_frame_interval_s ({self.driving_frame_interval_s}) must be <= frame_interval_s "
                             f"({self.frame_interval_s})")
        if self.driving_frame_interval_s is not None:
            ratio = self.frame_interval_s / self.driving_frame_interval_s
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"frame_interval_s ({self.frame_interval_s}) must be a whole multiple of "
                                 f"driving_frame_interval_s ({self.driving_frame_interval_s})")
        return self

    @property
    def missing_sensors(self) -> tuple[str, ...]:
        """Fields these vehicles do not fit: the profile's and ``absent_sensors``, in that order."""
        named = SENSOR_PROFILES[self.sensor_profile]
        return named + tuple(f for f in self.absent_sensors if f not in named)


class LabelsConfig(_Section):
    failure_horizons_days: list[int] = Field([7, 14, 30], min_length=1)
    # Windows this long after a failure (repair) are neither healthy nor degrading in anomaly evaluation.
    post_failure_grace_days: float = Field(3.0, ge=0)

    @model_validator(mode="after")
    def _horizons_positive(self) -> LabelsConfig:
        for h in self.failure_horizons_days:
            if h <= 0:
                raise ValueError(f"failure_horizons_days entries must be > 0 (got {h})")
        return self


class DatasetConfig(_Section):
    window_minutes: float = Field(60.0, gt=0)
    stride_minutes: float = Field(60.0, gt=0)
    split_fractions: dict[Literal["train", "validation", "test"], float] = {"train": 0.6, "validation": 0.2, "test": 0.2}
    # Windows with fewer frames are skipped (offline and in the twins alike).
    min_frames_per_window: int = Field(1, gt=0)
    # Test windows lie after this share of the observation, train/validation before it (labels censored
    # at the cut), where the data allow: the test side must span the longest horizon, the train side twice.
    test_after_fraction: float = Field(0.5, ge=0, lt=1)
    # Sensor-subset augmentation (issue 12): this share of the train vehicles is added once more with the
    # sensors of 1-2 random subsystems removed (training.dataset.SENSOR_SUBSYSTEMS), so one model learns
    # to serve vehicles that send fewer signals. 0 turns it off.
    sensor_subset_augmentation: float = Field(0.0, ge=0, le=1)

    @property
    def window_ms(self) -> int:
        """Window length in ms: a window ending at ``end`` holds frames with ``end - window_ms < ts <= end``."""
        return int(self.window_minutes * 60_000)

    @property
    def stride_ms(self) -> int:
        """Spacing of window ends in ms (ends are multiples of it since the Unix epoch)."""
        return int(self.stride_minutes * 60_000)


class TrainingConfig(_Section):
    lightgbm_num_rounds: int = Field(400, gt=0)
    lightgbm_learning_rate: float = Field(0.03, gt=0, le=1)
    # Small trees, strong regularisation: with ~100 failures larger boosted trees fit the training vehicles
    # (an early tuning run on the benchmark fleet: lower validation PR-AUC at 7 days with 31 leaves at 0.05).
    lightgbm_num_leaves: int = Field(15, gt=1)
    early_stopping_rounds: int = Field(30, gt=0)
    lstm_hidden_size: int = Field(32, gt=0)
    lstm_epochs: int = Field(10, gt=0)
    lstm_batch_size: int = Field(128, gt=0)
    lstm_learning_rate: float = Field(1e-3, gt=0)
    # Alerts allowed per 100 vehicle-days of healthy operation; thresholds are chosen on validation.
    alert_budget_per_100_vehicle_days: float = Field(1.0, gt=0)
    # LightGBM training keeps at most this many negative windows per positive (imbalance; calibration
    # on the untouched validation split restores probabilities). 0 keeps every negative.
    negatives_per_positive: float = Field(5.0, ge=0)
    # Per-mode risk: P(mode | failure within the longest horizon) over the modes with at least this many
    # distinct failures among the train split's positive windows (others are left out of the mode model).
    min_positives_per_mode: int = Field(3, gt=0)
    lstm_sequence_length: int = Field(12, gt=1)
    lstm_max_train_sequences: int = Field(20_000, gt=0)
    # Threads for torch (LSTM-AE) and large LightGBM fits; 0 = 1 for torch (small batches run ~10x
    # faster on one thread than on two contending ones here) and every core for LightGBM.
    torch_num_threads: int = Field(0, ge=0)


class AnomalyConfig(_Section):
    anomaly_threshold_percentile: float = Field(99.0, gt=0, lt=100)


class TwinsConfig(_Section):
    # Twins per host actor. 1 = one actor per vehicle (the design card's shape; each actor loads the models,
    # ~130-400 MB, so small fleets only). > 1 = hosts opened as vehicles arrive: one until it holds this many
    # twins, then another, up to max_host_actors (then hosts grow evenly past this); a twin is ~40 KB, a
    # host's fixed cost (Python, torch, LightGBM) is paid max_host_actors times at most.
    twins_per_actor: int = Field(256, gt=0)
    max_host_actors: int = Field(8, gt=0)
    checkpoint_uri: str = "runs/checkpoints"
    prediction_interval_minutes: float = Field(60.0, gt=0)
    alert_cooldown_minutes: float = Field(360.0, ge=0)
    reorder_buffer_frames: int = Field(64, ge=0)
    # Where a vehicle's seq counter is expected to start (seq >= 0 on the wire: 0 works too, it sorts first). A
    # twin whose first frames have higher seqs (a resumed client) waits until its reorder buffer is full, then
    # starts at the oldest.
    first_seq: int = Field(1, ge=0)
    # A frame whose seq is at or below the highest of its counter epoch while its ts is later than every frame of
    # that epoch by more than this is a counter restart (an ECU reboot): a new epoch. 0 suits a clock that never
    # steps back; raise it for vehicles whose clock may step back by up to this much (README "Delivery").
    seq_restart_tolerance_ms: int = Field(0, ge=0)
    idle_evict_minutes: float = Field(60.0, gt=0)
    # How an ingest call is made durable before its ack (README "Delivery"). "wal": one fsynced append of the
    # call's frames to the host's write-ahead log (twins/wal.py); twin snapshots (checkpoints) are taken every
    # snapshot_every_s seconds or snapshot_every_frames frames per twin, and a restore replays the log after the
    # snapshot. "checkpoint": every changed twin's checkpoint is written before the ack (slower, no log).
    durability: Literal["wal", "checkpoint"] = "wal"
    snapshot_every_s: float = Field(300.0, gt=0)
    snapshot_every_frames: int = Field(3600, gt=0)
    # Anomaly alerting: fire after this many consecutive windows at score >= 1, clear below the ratio.
    anomaly_consecutive_windows: int = Field(2, gt=0)
    # Score (1 = the fleet model's validated alert level / the baseline's z threshold) at which alerts fire.
    anomaly_alert_level: float = Field(1.0, gt=0)
    anomaly_clear_ratio: float = Field(0.7, gt=0, le=1)
    # Cold-start hold: no anomaly alert until the twin has closed this many windows (24 = a day of hourly
    # windows). Its rolling features (EMAs, z-scores against a baseline of a window or two) are still
    # warming up then: most of a new twin's false alarms fell there. Windows still score and learn.
    anomaly_warmup_windows: int = Field(24, ge=0)
    # Personal baseline (EWMA over window features): half-life and warm-up in windows; z-score at score 1.
    personalise: bool = True
    baseline_half_life_windows: float = Field(168.0, gt=0)
    baseline_warmup_windows: int = Field(24, gt=0)
    baseline_z_threshold: float = Field(6.0, gt=0)
    # A sensor-fault episode (one sensor, one kind) ends at its first good reading this long after its last
    # faulty frame; a new fault after that is a new episode with a new alert (twins/faults.py).
    sensor_fault_clear_minutes: float = Field(30.0, ge=0)
    # Signal profile: a sensor is fitted after this many readings (NaN = no reading); one never fitted never
    # counts as faulty. declared_sensors (schema names) are fitted from the first frame (a declared profile).
    sensor_fit_readings: int = Field(10, gt=0)
    declared_sensors: list[str] | None = None
    # Declared profiles per vehicle model: model -> sensors it has; vehicle_models maps vehicle-id patterns
    # (fnmatch, first match in order) to a model. A vehicle's declared sensors: declared_sensors + its model's.
    sensor_profiles: dict[str, list[str]] = Field(default_factory=dict)
    vehicle_models: dict[str, str] = Field(default_factory=dict)
    # A fitted sensor without a reading for this long while frames arrive is a dropout.
    sensor_dropout_minutes: float = Field(30.0, gt=0)
    # Stuck: the same reading for this long of active time (a frame where any sensor_activity signal's |value|
    # exceeds its level: the vehicle drives), and for sensor_stuck_factor x the longest flat run it made in its
    # first sensor_stuck_learn_hours of active time, at a value it did not rest at then (twins/faults.py).
    sensor_stuck_minutes: float = Field(60.0, gt=0)
    sensor_stuck_learn_hours: float = Field(12.0, ge=0)
    sensor_stuck_factor: float = Field(3.0, ge=1)
    sensor_activity: dict[str, float] = Field(default_factory=lambda: {"speed": 1.0, "motor_speed": 50.0})
    # ... or while this many other sensors of its subsystem (schema) change in the frame (0: driving only).
    sensor_stuck_related_moving: int = Field(2, ge=0)
    # Spike: a jump away and straight back, both steps above this fraction of the sensor's physical range or
    # 1.5x the largest such excursion the sensor made in the twin's first sensor_spike_learn_hours.
    sensor_spike_range_fraction: float = Field(0.2, gt=0, le=1)
    sensor_spike_learn_hours: float = Field(24.0, ge=0)
    # Drift against redundant signals: groups of sensors that read alike (e.g. the four tyre pressures); a
    # member whose difference to the group median moved by more than the fraction of its range from the
    # difference over the group's first readings. Off by default: a real slow leak of one tyre reads the same.
    sensor_drift_groups: list[list[str]] = Field(default_factory=list)
    sensor_drift_range_fraction: float = Field(0.05, gt=0, le=1)
    sensor_drift_learn_readings: int = Field(60, gt=0)

    @model_validator(mode="after")
    def _sensor_names_exist(self) -> TwinsConfig:
        known = set(SCHEMA.sensor_names)
        for key, names in (("declared_sensors", self.declared_sensors or []),
                           ("sensor_activity", list(self.sensor_activity)),
                           *((f"sensor_profiles[{m!r}]", p) for m, p in self.sensor_profiles.items()),
                           *((f"sensor_drift_groups[{i}]", g) for i, g in enumerate(self.sensor_drift_groups))):
            unknown = [name for name in names if name not in known]
            if unknown:
                raise ValueError(f"twins.{key}: unknown sensor {unknown[0]!r} (not in the telemetry schema)")
        for pattern, model in self.vehicle_models.items():
            if model not in self.sensor_profiles:
                raise ValueError(f"twins.vehicle_models[{pattern!r}]={model!r}: no such model in twins.sensor_profiles "
                                 f"(known: {sorted(self.sensor_profiles)})")
        for i, group in enumerate(self.sensor_drift_groups):
            if len(set(group)) < 3:
                raise ValueError(f"twins.sensor_drift_groups[{i}]={group}: a group needs at least 3 distinct sensors "
                                 "(a median of two cannot tell which one drifted)")
        return self
    # 7-day (shortest horizon) failure probability that raises a failure_risk alert.
    risk_alert_threshold: float = Field(0.5, gt=0, le=1)
    # Normal windows between fine-tunes of the per-vehicle head of the anomaly model.
    fine_tune_every_windows: int = Field(168, gt=0)
    # Per-vehicle head: per-signal offset = how far this quantile of the vehicle's own normal error exceeds
    # the fleet's per-signal normal error. Its first head is fitted when the cold-start hold ends (from those
    # windows); later ones every fine_tune_every_windows normal windows. Optional: shrink toward the fleet
    # (the excess counts n / (n + head_prior_windows)) and cap at head_max_offset x the fleet reference.
    # Defaults chosen on the personalisation bench (BENCHMARKS.md, "Personalisation").
    head_quantile: float = Field(0.75, gt=0, le=1)
    head_prior_windows: float = Field(0.0, ge=0)
    head_max_offset: float | None = Field(None, ge=0)
    # Also require the vehicle's own baseline to agree before an anomaly counts (fewer alerts, less recall).
    baseline_veto: bool = False
    # Seconds a failing model service is left alone before the twins retry their predictions.
    prediction_retry_s: float = Field(5.0, ge=0)
    prediction_timeout_s: float = Field(2.0, gt=0)
    # Creation is bounded: twins in the whole fleet, and new vehicles one gateway credential may bring (a
    # batch that would pass either is refused RESOURCE_EXHAUSTED). Lookups never create a twin.
    max_twins: int = Field(100_000, gt=0)
    max_new_twins_per_credential: int = Field(10_000, gt=0)
    # A host actor without traffic for this long is checkpointed and released; its next frame restores it.
    idle_release_s: float = Field(600.0, gt=0)


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    grpc_port: int = Field(50151, ge=0, le=65535)
    # Serve's gRPC ingress for PredictionService; 0 = off (the twins use deployment handles). Ray 2.60 binds
    # it on every interface whatever serving.host is; when on, it checks the front door's tokens.
    serve_grpc_port: int = Field(0, ge=0, le=65535)
    serve_http_port: int = Field(8000, ge=0, le=65535)
    max_message_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_frames_in_flight_per_stream: int = Field(20_000, gt=0)
    # Port of the Prometheus /metrics endpoint on the serving host; 0 = no endpoint.
    metrics_port: int = Field(0, ge=0, le=65535)
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    # With a client CA, clients must present a certificate it signed (mutual TLS).
    tls_client_ca_path: str | None = None
    # HMAC key signing vehicle/gateway/operator tokens; created by `evtwin keys init` or on first serve.
    auth_secret_path: str = "runs/keys/auth.secret"
    # False only for local benchmarks: every RPC then runs as an operator.
    require_auth: bool = True
    # Longest lifetime `evtwin keys token` issues (every token expires; a leaked one is useful this long at most).
    token_max_ttl_days: float = Field(90.0, gt=0)
    max_batch_frames: int = Field(10_000, gt=0)
    # Frames stamped further than this in the future are refused (clock or unit error).
    max_future_skew_s: float = Field(300.0, ge=0)
    # Telemetry streams held open at once (idle vehicles included); one more is refused RESOURCE_EXHAUSTED.
    # Also the HTTP/2 streams one connection may carry, so a gateway can multiplex its vehicles. An open
    # idle stream costs the server ~60 KB (BENCHMARKS.md, "gRPC front door"): 20,000 is ~1.2 GB.
    max_concurrent_streams: int = Field(20_000, gt=0)
    # RPCs that reached the server but that its event loop has not yet started (a reconnect storm). gRPC
    # core cancels calls beyond this backlog (its default, 1,000-3,000, is what a client saw as
    # "INTERNAL: Internal error from Core" above ~1,000 streams opened at once).
    max_pending_rpcs: int = Field(20_000, gt=0)
    # Alerts a WatchAlerts subscriber may fall behind before its stream is ended (RESOURCE_EXHAUSTED).
    watch_queue_alerts: int = Field(10_000, gt=0)
    # SIGTERM: stop accepting, let streams finish what they hold for at most this long, checkpoint twins.
    drain_timeout_s: float = Field(10.0, ge=0)
    # Ray started by `evtwin serve` binds its dashboard to localhost; off unless asked for.
    ray_dashboard: bool = False


class WhatIfCosts(_Section):
    """Cost model of the what-if simulator (EUR); severity lists are indexed by severity 1..3."""

    technician_hour: float = Field(85.0, ge=0)
    downtime_hour: float = Field(30.0, ge=0)  # lost use of one vehicle for one hour
    tow: float = Field(450.0, ge=0)
    roadside_incident: float = Field(800.0, ge=0)  # customer impact and secondary damage of a breakdown
    visit_overhead: float = Field(60.0, ge=0)  # booking, moving the vehicle, paperwork per workshop visit
    parts_by_severity: list[float] = Field([150.0, 900.0, 3500.0], min_length=3, max_length=3)
    roadside_parts_multiplier: float = Field(1.5, ge=1)


class AmbientWindow(_Section):
    """A time-bounded ambient temperature offset (a heatwave or a cold snap)."""

    start_day: float = Field(ge=0)
    duration_days: float = Field(gt=0)
    offset_c: float = Field(ge=-30, le=30)


class WhatIfConfig(_Section):
    """The SimPy what-if simulator: workshop, chargers, policies and costs."""

    workshop_bays: int = Field(4, gt=0)
    technicians: int = Field(4, gt=0)
    replications: int = Field(4, gt=0)
    policy: Literal["reactive", "scheduled", "predictive"] = "reactive"
    dc_chargers_per_100_vehicles: float = Field(4.0, gt=0)  # shared DC fast chargers at the depot
    # Workshop visits the predictive policy may order per 100 vehicle-days; None = training's alert budget.
    visit_budget_per_100_vehicle_days: float | None = Field(None, gt=0)
    dc_charge_power_kw: float = Field(100.0, gt=0)
    ac_charge_power_kw: float = Field(11.0, gt=0)
    consumption_kwh_per_km: float = Field(0.18, gt=0)
    inspection_hours: float = Field(1.0, ge=0)  # technician time to diagnose one vehicle
    repair_hours_by_mode: dict[str, float] = {
        "cell_imbalance": 6.0, "coolant_pump": 3.0, "internal_resistance": 8.0, "inverter_overheat": 5.0,
        "motor_bearing": 6.0, "brake_wear": 2.0, "tyre_slow_leak": 0.5, "aux_battery": 0.5,
    }
    repair_hours_default: float = Field(4.0, gt=0)  # for a failure mode missing above
    severity_repair_multiplier: list[float] = Field([1.0, 2.0, 4.0], min_length=3, max_length=3)
    parts_lead_time_hours: list[float] = Field([0.0, 24.0, 72.0], min_length=3, max_length=3)
    tow_hours: float = Field(4.0, ge=0)
    roadside_repair_multiplier: float = Field(1.5, ge=1)
    # A workshop inspection finds a degradation once it has run this share of its onset-to-failure time.
    detectable_progress: float = Field(0.25, ge=0, le=1)
    scheduled_interval_days: float = Field(30.0, gt=0)
    scheduled_interval_km: float = Field(5000.0, gt=0)
    risk_threshold: float = Field(0.5, ge=0, le=1)  # predictive: act on alerts/risk at or above this
    revisit_cooldown_days: float = Field(7.0, ge=0)  # predictive: no second visit for the same vehicle sooner
    detector_poll_hours: float = Field(6.0, gt=0)  # how often the predictive policy reads new alerts
    twin_frame_interval_s: float = Field(600.0, gt=0, le=3600)  # coarser frames through the twins
    anomaly_alert_risk: float = Field(0.5, ge=0, le=1)  # risk the predictive policy reads into an anomaly alert
    twin_shards: int = Field(1, ge=1)  # > 1: a replication's twins run in this many Ray actors, stepped together
    queue_sample_hours: float = Field(6.0, gt=0)
    ambient_windows: list[AmbientWindow] = []
    costs: WhatIfCosts = WhatIfCosts()

    @model_validator(mode="after")
    def _non_negative_lists(self) -> WhatIfConfig:
        for name in ("severity_repair_multiplier", "parts_lead_time_hours"):
            if any(v < 0 for v in getattr(self, name)):
                raise ValueError(f"{name} entries must be >= 0 (got {getattr(self, name)})")
        for mode, hours in self.repair_hours_by_mode.items():
            if hours <= 0:
                raise ValueError(f"repair_hours_by_mode.{mode} must be > 0 (got {hours})")
        # The telemetry of a day comes from one ambient offset's stream, so overlapping windows have no
        # single meaning: put the summed offset in a window of its own instead.
        ordered = sorted(enumerate(self.ambient_windows), key=lambda pair: pair[1].start_day)
        for (i, first), (j, second) in zip(ordered, ordered[1:], strict=False):
            first_end = first.start_day + first.duration_days
            if second.start_day < first_end:
                raise ValueError(f"ambient_windows.{j} (from day {second.start_day:g}) overlaps ambient_windows.{i} "
                                 f"(days {first.start_day:g} to {first_end:g}); split them so that each day has one offset")
        return self


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
    return config_from_dict(apply_overrides(read_json_object(config_path, "config", ConfigError), overrides))


def read_json_object(path: Path, kind: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """A JSON file whose top level is an object; ``error`` names the ``kind`` of file and the path otherwise."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{kind} file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{kind} file {path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise error(f"{kind} file {path}: top level must be an object")
    return document
