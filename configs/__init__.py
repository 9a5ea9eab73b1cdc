"""Configuration and the telemetry data contract (pure: no Ray, no gRPC)."""
from configs.schema import SCHEMA, FieldSpec, TelemetrySchema
from configs.settings import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config", "SCHEMA", "FieldSpec", "TelemetrySchema"]
