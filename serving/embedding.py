"""An offline embedding for alerts and failure-mode knowledge (pure: numpy only, no model download).

A vector has two parts, each L2-normalised and then weighted:

* a *signal* part, one dimension per telemetry field, holding how much evidence that field carries
  (a feature such as ``cell_voltage_spread_max`` counts towards the fields it is computed from), so
  an alert driven by coolant flow and outlet temperature lands next to the coolant-pump entry.
  Magnitudes only: an alert's evidence is an error share or a log-odds contribution, whose sign is
  not the physical direction the knowledge entries describe;
* a *text* part, a signed feature-hashing of the words, so free text ("stuck", "not a number",
  "fast charging") also counts.

It is deterministic and versioned: an index built with another version is rebuilt, never mixed.

>>> embedder = SignalTextEmbedder()
>>> a = embedder.embed({"coolant_flow": -2.0, "coolant_temp_out": 1.5}, "")
>>> b = embedder.embed({"coolant_flow": -1.0, "coolant_temp_out": 0.8, "pump_speed": 0.3}, "coolant pump")
>>> c = embedder.embed({"aux_battery_voltage": -1.0}, "12 V battery")
>>> bool(a @ b > a @ c)
True
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from configs.schema import SCHEMA

EMBEDDER_VERSION = "signal-text-v1"
TEXT_DIMENSIONS = 128
SIGNAL_WEIGHT = 0.8
_STOPWORDS = frozenset(
    "a an and are as at be by for from in is it its of on or the this that to with while than more less "
    "same when which not".split()
)
_TOKEN = re.compile(r"[a-z0-9]+")


# Derived features whose names abbreviate the telemetry fields they are computed from
# (training.features); longest prefix wins.
_FEATURE_ALIASES: dict[str, tuple[str, ...]] = {
    "cell_t_": ("cell_temp_min", "cell_temp_max", "cell_temp_avg"),
    "cell_v_": ("cell_voltage_min", "cell_voltage_max"),
    "cell_spread": ("cell_voltage_min", "cell_voltage_max"),
    "aux_": ("aux_battery_voltage",),
    "dcdc_": ("dcdc_current",),
    "brake_rise": ("brake_temp",),
    "flow_per": ("coolant_flow", "pump_speed"),
    "coolant_dt": ("coolant_temp_in", "coolant_temp_out"),
    "inverter_": ("inverter_temp",),
    "motor_rise": ("motor_temp",),
    "motor_drag": ("motor_temp",),
    "pack_rise": ("cell_temp_avg",),
    "resistance_est": ("internal_resistance",),
    "tyre_": ("tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr"),
    "abs_current": ("pack_current",),
    "ambient": ("ambient_temp",),
    "dc_charge_share": ("charger_state", "charge_power"),
    "charging_share": ("charger_state", "charge_power"),
    "distance_km": ("speed", "odometer"),
    "km_per_window": ("speed", "odometer"),
    "driving_share": ("speed",),
}


@lru_cache(maxsize=4096)
def fields_of_feature(feature_name: str, field_names: tuple[str, ...] = SCHEMA.sensor_names) -> tuple[str, ...]:
    """Telemetry fields a feature (or field) name refers to.

    >>> fields_of_feature("coolant_flow_mean")
    ('coolant_flow',)
    >>> fields_of_feature("cell_voltage_spread_max")
    ('cell_voltage_min', 'cell_voltage_max')
    >>> fields_of_feature("flow_per_pump_krpm_ema1d")
    ('coolant_flow', 'pump_speed')
    """
    exact = tuple(f for f in field_names if f in feature_name)
    if exact:
        return (max(exact, key=len),)
    aliases = [prefix for prefix in _FEATURE_ALIASES if feature_name.startswith(prefix)]
    if aliases:
        return tuple(f for f in _FEATURE_ALIASES[max(aliases, key=len)] if f in field_names)
    tokens = feature_name.split("_")
    for length in range(len(tokens) - 1, 0, -1):
        prefix = "_".join(tokens[:length]) + "_"
        matches = tuple(f for f in field_names if f.startswith(prefix))
        if matches:
            return matches
    return ()


def _hashed_token(token: str) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % TEXT_DIMENSIONS, 1.0 if (value >> 63) & 1 else -1.0


def _normalised(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class SignalTextEmbedder:
    """Maps (signed evidence per signal or feature, text) to a unit vector."""

    version = EMBEDDER_VERSION

    def __init__(self, field_names: Sequence[str] = SCHEMA.sensor_names) -> None:
        self.field_names = tuple(field_names)
        self._index = {name: i for i, name in enumerate(self.field_names)}

    @property
    def dimensions(self) -> int:
        return len(self.field_names) + TEXT_DIMENSIONS

    def signal_vector(self, evidence: Mapping[str, float]) -> np.ndarray:
        vector = np.zeros(len(self.field_names), dtype=np.float64)
        for name, value in evidence.items():
            if not np.isfinite(value):
                continue
            fields = fields_of_feature(name, self.field_names)
            for field in fields:
                vector[self._index[field]] += abs(float(value)) / len(fields)
        return vector

    def text_vector(self, text: str) -> np.ndarray:
        vector = np.zeros(TEXT_DIMENSIONS, dtype=np.float64)
        for token in _TOKEN.findall(text.lower()):
            if token not in _STOPWORDS:
                slot, sign = _hashed_token(token)
                vector[slot] += sign
        return vector

    def embed(self, evidence: Mapping[str, float], text: str) -> np.ndarray:
        signal = _normalised(self.signal_vector(evidence))
        words = _normalised(self.text_vector(text))
        signal_weight = SIGNAL_WEIGHT if signal.any() else 0.0
        text_weight = (1.0 - SIGNAL_WEIGHT) if signal.any() else 1.0
        combined = np.concatenate([signal * signal_weight, words * text_weight])
        return _normalised(combined).astype(np.float32)


STATIC_MODEL_PACKAGE = "tokenlearn-static-model"
STATIC_MODEL_MODULE = "static_model"


def static_model_installed() -> bool:
    """Whether the optional sentence-embedding package (weights inside the wheel) is importable."""
    return importlib.util.find_spec(STATIC_MODEL_MODULE) is not None


def signal_words(evidence: Mapping[str, float], k: int = 5) -> str:
    """The telemetry fields behind the strongest evidence, as words ("coolant flow coolant temp out").

    >>> signal_words({"coolant_flow_mean": -2.0, "soc": 0.1}, k=1)
    'coolant flow'
    """
    finite = [(name, abs(float(v))) for name, v in evidence.items() if np.isfinite(v)]
    words: list[str] = []
    for name, _ in sorted(finite, key=lambda item: -item[1])[:k]:
        for field in fields_of_feature(name) or (name,):
            phrase = field.replace("_", " ")
            if phrase not in words:
                words.append(phrase)
    return " ".join(words)


class StaticSentenceEmbedder:
    """Sentences to unit vectors with the static (Model2Vec-style) model that the ``tokenlearn-static-model``
    wheel ships (int8, 64 dimensions, weights and tokenizer inside the package: nothing is downloaded).

    Optional: the package declares no licence, so it is not a dependency (README, "Explanations").
    """

    version = "tokenlearn-static-model-0.1.1"

    def __init__(self) -> None:
        if not static_model_installed():
            raise RuntimeError(f"the optional package {STATIC_MODEL_PACKAGE} is not installed "
                               f"(python -m pip install {STATIC_MODEL_PACKAGE}==0.1.1)")
        from static_model import get_embeddings  # optional third-party package, only when this embedder is used

        self._encode = get_embeddings

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 64), dtype=np.float32)
        vectors = np.asarray(self._encode([str(t) for t in texts]), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)
