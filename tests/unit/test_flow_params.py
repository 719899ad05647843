"""The typed run form: defaults from params.yaml, types and descriptions from the config models,
and only what a person changed becomes an override that ``load_params`` then validates."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from flows.params import FORM, build_settings, changed_overrides
from tasks.config import ConfigError, load_params

PARAMS = {
    "curate": {"sources": [{"kind": "synthetic", "families": ["add_2d"], "sft_per_family": 5}]},
    "sft": {"steps": 7, "lr": 0.01},
    "grpo": {"steps": 9, "sampler": "dump", "rewards": {"accuracy": 1.0}, "online": {"explore": 0.2}},
}


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(PARAMS))
    return path


def test_defaults_are_the_files_values_and_every_field_is_described(params_file):
    form = build_settings(params_file)()
    assert form.sft.steps == 7 and form.sft.lr == 0.01 and form.grpo.sampler == "dump"
    assert form.grpo.lr == 5e-5  # not in the file: the config model's default
    assert form.curate.sources[0].families == ["add_2d"]
    schema = build_settings(params_file).model_json_schema()
    for section, (_, names) in FORM.items():
        props = next(
            d for d in schema["$defs"].values() if d.get("title", "").lower() == f"{section}settings"
        )["properties"]
        assert set(props) == set(names)
        assert all(f"({section}.{n})" in props[n]["description"] for n in names)
    grpo = schema["$defs"]["GrpoSettings"]["properties"]
    assert grpo["sampler"]["enum"] == ["uniform", "dump", "prioritized", "static"]  # a dropdown


def test_only_changed_fields_become_overrides_and_they_validate(params_file, monkeypatch):
    import flows.params as fp

    monkeypatch.setattr(fp, "RunSettings", build_settings(params_file))
    assert (
        changed_overrides(None) == []
        and changed_overrides({}) == []
        and changed_overrides(fp.RunSettings()) == []
    )
    changed = changed_overrides(
        {
            "grpo": {"lr": 1e-4, "rewards": {"accuracy": 1.0, "format": 0.2}},
            "curate": {"sources": [{"kind": "synthetic", "families": ["sub_2d"]}]},
        }
    )
    assert changed == [
        "curate.sources=[{eval_per_family: 100, families: [sub_2d], kind: synthetic, rl_per_family: 2000, "
        "sft_per_family: 60}]",
        "grpo.lr=0.0001",
        "grpo.rewards={accuracy: 1.0, format: 0.2}",
    ]
    p = load_params(params_file, changed)
    assert p.grpo.lr == 1e-4 and p.grpo.rewards == {"accuracy": 1.0, "format": 0.2}
    assert p.curate.sources[0].families == ["sub_2d"] and p.sft.steps == 7


def test_a_settings_group_is_a_sub_form_whose_changed_fields_alone_become_overrides(params_file, monkeypatch):
    import flows.params as fp

    monkeypatch.setattr(fp, "RunSettings", build_settings(params_file))
    form = fp.RunSettings()
    assert form.grpo.online.explore == 0.2 and form.grpo.online.enabled is False  # file, then code default
    props = fp.RunSettings.model_json_schema()["$defs"]["GrpoOnlineSettings"]["properties"]
    assert "(grpo.online.enabled)" in props["enabled"]["description"]
    # the UI submits the whole group; only the switch that was turned becomes an override
    submitted = form.model_dump(mode="json")
    submitted["grpo"]["online"]["enabled"] = True
    changed = changed_overrides(submitted)
    assert changed == ["grpo.online.enabled=true"]
    p = load_params(params_file, changed)
    assert p.grpo.online.enabled is True and p.grpo.online.explore == 0.2
    with pytest.raises(pydantic.ValidationError, match="bogus"):
        changed_overrides({"grpo": {"online": {"bogus": 1}}})
    with pytest.raises(ConfigError, match=r"grpo\.online\.explore"):
        load_params(params_file, changed_overrides({"grpo": {"online": {"explore": 0.0}}}))


def test_bad_values_are_refused_naming_the_field(params_file, monkeypatch):
    import flows.params as fp

    monkeypatch.setattr(fp, "RunSettings", build_settings(params_file))
    with pytest.raises(pydantic.ValidationError, match="sampler"):
        changed_overrides({"grpo": {"sampler": "bogus"}})
    with pytest.raises(pydantic.ValidationError, match="rewards"):
        changed_overrides({"grpo": {"rewards": {"no_such_reward": 1.0}}})
    # a range the form does not know is the config model's: load_params names the key
    with pytest.raises(ConfigError, match=r"grpo\.lr"):
        load_params(params_file, changed_overrides({"grpo": {"lr": -1.0}}))
