"""Scenarios as data: ``configs/scenarios/<name>.json``, each a small diff of the base config.

A scenario file holds a one-sentence ``question``, optional ``extends`` (another scenario it builds
on), ``overrides`` (a nested partial config) and/or ``set`` (dotted ``KEY.PATH=VALUE`` strings, as on
the command line), and optional ``policies`` to compare. The result is validated exactly like the
config: an unknown key or an impossible value is refused with its key path and value.

>>> s = load_scenario("heatwave")
>>> s.config.whatif.ambient_windows[0].offset_c
12.0
>>> s.question.endswith("?")
True
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from configs.settings import Config, ConfigError, apply_overrides, config_from_dict, read_json_object

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "configs" / "scenarios"
POLICY_NAMES: tuple[str, ...] = ("reactive", "scheduled", "predictive")


class ScenarioFile(BaseModel):
    """The shape of one scenario file (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=5)
    extends: str | None = None
    overrides: dict[str, Any] = {}
    set: list[str] = []
    policies: list[Literal["reactive", "scheduled", "predictive"]] = []


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: its name, the question it answers, the full config and the policies to run."""

    name: str
    question: str
    config: Config
    policies: tuple[str, ...]


def list_scenarios(directory: Path = SCENARIO_DIR) -> list[str]:
    """Names of the shipped scenarios (file stems), sorted."""
    return sorted(p.stem for p in directory.glob("*.json"))


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` laid over ``base``; nested dicts merge, anything else replaces.

    >>> deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
    """
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_file(path: Path) -> ScenarioFile:
    document = read_json_object(path, "scenario", ConfigError)
    try:
        return ScenarioFile.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"])
            what = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{key}: {what} (got {error['input']!r})")
        raise ConfigError(f"scenario {path.name}:\n  " + "\n  ".join(problems)) from None


def _resolve_path(name_or_path: str | Path, directory: Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.exists():
        return candidate
    return directory / f"{name_or_path}.json"


def _chain(path: Path, directory: Path) -> list[tuple[Path, ScenarioFile]]:
    """The scenario and everything it extends, base first (cycles refused)."""
    chain: list[tuple[Path, ScenarioFile]] = []
    seen: set[Path] = set()
    while True:
        if path.resolve() in seen:
            raise ConfigError(f"scenario {path.name}: 'extends' forms a cycle")
        seen.add(path.resolve())
        spec = _read_file(path)
        chain.insert(0, (path, spec))
        if spec.extends is None:
            return chain
        path = _resolve_path(spec.extends, directory)


def load_scenario(name_or_path: str | Path, base: Config | dict[str, Any] | None = None,
                  overrides: Iterable[str] = (), directory: Path = SCENARIO_DIR) -> Scenario:
    """Read a scenario by name (``heatwave``) or path, apply it to ``base`` and validate the result.

    ``overrides`` (command-line ``--set``) are applied last, so they win over the scenario.
    """
    path = _resolve_path(name_or_path, directory)
    chain = _chain(path, directory)
    if base is None:
        document = Config().model_dump(mode="json")
    elif isinstance(base, Config):
        document = base.model_dump(mode="json")
    else:
        document = copy.deepcopy(base)
    for spec_path, spec in chain:
        document = deep_merge(document, spec.overrides)
        try:
            document = apply_overrides(document, spec.set)
        except ConfigError as exc:
            raise ConfigError(f"scenario {spec_path.name}: {exc}") from None
    document = apply_overrides(document, overrides)
    try:
        config = config_from_dict(document)
    except ConfigError as exc:
        raise ConfigError(f"scenario {path.stem}: {exc}") from None
    spec = chain[-1][1]
    policies = next((tuple(s.policies) for _, s in reversed(chain) if s.policies), (config.whatif.policy,))
    return Scenario(name=path.stem, question=spec.question, config=config, policies=policies)
