"""Scenario files are validated like the config; scenarios change only what they say."""
from __future__ import annotations

import json

import pytest

from configs.settings import Config, ConfigError
from simulation.whatif.scenarios import list_scenarios, load_scenario

REQUIRED = {"baseline", "heatwave", "fast_charge_heavy", "aged_fleet", "small_workshop", "policy_comparison"}


def test_every_required_scenario_ships_and_loads_with_a_question() -> None:
    assert REQUIRED <= set(list_scenarios())
    for name in list_scenarios():
        scenario = load_scenario(name)
        assert scenario.question.strip().endswith("?")
        assert isinstance(scenario.config, Config)


def test_scenarios_are_small_diffs_of_the_baseline() -> None:
    baseline = load_scenario("baseline").config
    assert load_scenario("heatwave").config.whatif.ambient_windows[0].model_dump() == {
        "start_day": 30.0, "duration_days": 14.0, "offset_c": 12.0}
    assert load_scenario("fast_charge_heavy").config.simulation.levers.dc_fast_charge_share == 0.6
    assert load_scenario("aged_fleet").config.simulation.levers.pack_age_offset_years == 4.0
    small = load_scenario("small_workshop").config.whatif
    assert (small.workshop_bays, small.technicians) == (1, 1)
    assert load_scenario("policy_comparison").policies == ("reactive", "scheduled", "predictive")
    aged = load_scenario("aged_fleet").config
    assert aged.model_copy(update={"simulation": baseline.simulation}) == baseline


def test_command_line_overrides_win_over_the_scenario() -> None:
    scenario = load_scenario("small_workshop", overrides=["whatif.workshop_bays=2"])
    assert scenario.config.whatif.workshop_bays == 2


@pytest.mark.parametrize(
    "document, fragments",
    [
        ({"question": "Why?", "overides": {}}, ["overides: unknown key", "{}"]),
        ({"question": "Why not?", "set": ["whatif.bays=3"]}, ["whatif.bays: unknown key", "3"]),
        ({"question": "Why not?", "overrides": {"whatif": {"technicians": 0}}}, ["whatif.technicians", "0"]),
        ({"question": "Why not?", "overrides": {"whatif": {"ambient_windows": [{"start_day": 1, "duration_days": 2,
                                                                                 "offset_c": 99}]}}},
         ["whatif.ambient_windows.0.offset_c", "99"]),
        ({"question": "Why not?", "policies": ["psychic"]}, ["policies.0", "psychic"]),
        ({"question": "Why not?", "overrides": {"whatif": {"ambient_windows": [
            {"start_day": 30, "duration_days": 14, "offset_c": 12}, {"start_day": 10, "duration_days": 25,
                                                                    "offset_c": 5}]}}},
         ["whatif", "ambient_windows.0 (from day 30) overlaps", "ambient_windows.1 (days 10 to 35)"]),
    ],
)
def test_bad_scenario_files_are_refused_with_key_path_and_value(tmp_path, document, fragments) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as excinfo:
        load_scenario(path)
    for fragment in fragments:
        assert fragment in str(excinfo.value)


def test_a_cycle_of_extends_is_refused(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"question": "What if A?", "extends": "b"}))
    (tmp_path / "b.json").write_text(json.dumps({"question": "What if B?", "extends": "a"}))
    with pytest.raises(ConfigError, match="cycle"):
        load_scenario("a", directory=tmp_path)


def test_back_to_back_ambient_windows_are_accepted() -> None:
    scenario = load_scenario("heatwave", overrides=[
        'whatif.ambient_windows=[{"start_day": 30, "duration_days": 14, "offset_c": 12}, '
        '{"start_day": 44, "duration_days": 7, "offset_c": 6}]'])
    assert [w.start_day for w in scenario.config.whatif.ambient_windows] == [30.0, 44.0]


def test_overlapping_ambient_windows_are_refused_by_the_config_itself() -> None:
    """Not only in scenario files: any config (load_config, --set) refuses them, naming both windows."""
    from configs.settings import load_config

    windows = '[{"start_day": 30, "duration_days": 14, "offset_c": 12}, {"start_day": 40, "duration_days": 5, "offset_c": 3}]'
    with pytest.raises(ConfigError, match=r"ambient_windows\.1 \(from day 40\) overlaps ambient_windows\.0"):
        load_config(overrides=[f"whatif.ambient_windows={windows}"])
