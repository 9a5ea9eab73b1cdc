"""Configuration and the telemetry data contract (pure: no Ray, no gRPC)."""
from configs.settings import Config, ConfigError, load_config
from configs.schema import SCHEMA, FieldSpec, TelemetrySchema

__all__ = ["Config", "ConfigError", "load_config", "SCHEMA", "FieldSpec", "TelemetrySchema"]
