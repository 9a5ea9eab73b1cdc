"""Configuration loading and validation."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from configs.settings import ConfigError, config_from_dict, load_config, parse_override, read_json_object


def test_shipped_config_has_the_briefs_keys() -> None:
    cfg = load_config()
    assert cfg.simulation.num_vehicles == 10
    assert cfg.simulation.duration_days_per_vehicle == 7
    assert cfg.labels.failure_horizons_days == [7, 14, 30]
    assert cfg.anomaly.anomaly_threshold_percentile == 99


def test_shipped_config_file_lists_every_default_key() -> None:
    from configs.settings import DEFAULT_CONFIG_PATH, Config

    shipped = json.loads(DEFAULT_CONFIG_PATH.read_text())

    def keys(node: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in node.items():
            out.add(prefix + k)
            if isinstance(v, dict) and not k.endswith(("rates", "duty_cycles", "climates", "fractions")):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(Config().model_dump(mode="json")) == keys(shipped)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("simulation.num_vehicles=-3", "simulation.num_vehicles"),
        ("labels.failure_horizons_days=[7, 0]", "failure_horizons_days"),
        ("anomaly.anomaly_threshold_percentile=120", "anomaly.anomaly_threshold_percentile"),
        ("simulation.bogus=1", "simulation.bogus: unknown key"),
        ("simulation.num_vehicles=\"many\"", "'many'"),
    ],
)
def test_impossible_values_are_refused_with_key_path_and_value(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(overrides=[override])
    assert fragment in str(excinfo.value)


def test_override_sets_nested_values() -> None:
    cfg = load_config(overrides=["simulation.num_vehicles=200", "twins.twins_per_actor=50"])
    assert cfg.simulation.num_vehicles == 200
    assert cfg.twins.twins_per_actor == 50


def test_missing_config_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.json")


def test_fleet_mix_shares_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="duty_cycles"):
        config_from_dict({"simulation": {"fleet_mix": {"duty_cycles": {"commuter": 0.5, "taxi": 0.1, "delivery": 0.1}}}})


def test_content_hash_changes_with_values() -> None:
    assert load_config().content_hash() != load_config(overrides=["seed=8"]).content_hash()


@given(st.text())
def test_override_parser_never_crashes_unexpectedly(text: str) -> None:
    try:
        path, _ = parse_override(text)
    except ConfigError:
        return
    assert path and all(isinstance(p, str) for p in path)


def test_window_and_stride_in_ms_follow_the_minutes_settings() -> None:
    dataset = load_config(overrides=["dataset.window_minutes=10", "dataset.stride_minutes=2.5"]).dataset
    assert (dataset.window_ms, dataset.stride_ms) == (600_000, 150_000)
    assert isinstance(dataset.window_ms, int) and isinstance(dataset.stride_ms, int)


def test_a_json_file_that_is_missing_broken_or_not_an_object_is_refused_naming_it(tmp_path) -> None:
    broken, listed = tmp_path / "broken.json", tmp_path / "list.json"
    broken.write_text("{not json")
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="config file not found: .*absent.json"):
        read_json_object(tmp_path / "absent.json", "config", ConfigError)
    with pytest.raises(ConfigError, match="scenario file .*broken.json: not valid JSON"):
        read_json_object(broken, "scenario", ConfigError)
    with pytest.raises(ValueError, match="catalog file .*list.json: top level must be an object"):
        read_json_object(listed, "catalog")
