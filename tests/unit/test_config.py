"""params.yaml loading: every error names the dotted key; overrides apply like ``dvc exp run -S``."""

import pytest

from tasks.config import ConfigError, Gsm8kSource, Params, SyntheticSource, apply_overrides, load_params


def params_file(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path, text: str, overrides=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_params(params_file(tmp_path, text), overrides)
    return str(e.value)


def test_defaults_when_sections_are_absent(tmp_path):
    p = load_params(params_file(tmp_path, "tracking: {}\n"))
    assert p == Params()
    assert p.curate.sources == [SyntheticSource()]
    assert p.sft.lr == 3e-3


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_file_is_an_error(tmp_path, text):
    # code defaults differ from the committed file (300 vs 1200 SFT steps): never train on them silently
    assert "empty" in error_of(tmp_path, text)


def test_unknown_key_named(tmp_path):
    msg = error_of(tmp_path, "grpo:\n  lrr: 0.1\n")
    assert "grpo.lrr" in msg and "Extra inputs are not permitted" in msg


def test_unknown_section_named(tmp_path):
    assert "<root>" not in (msg := error_of(tmp_path, "currate: {seed: 1}\n")) and "currate" in msg


def test_wrong_type_named(tmp_path):
    msg = error_of(tmp_path, "sft:\n  steps: many\n")
    assert "sft.steps" in msg and "'many'" in msg


def test_out_of_range_named(tmp_path):
    msg = error_of(tmp_path, "grpo:\n  lr: 2.0\n")
    assert "grpo.lr" in msg and "less than or equal to 1" in msg
    assert "grpo.group_size" in error_of(tmp_path, "grpo: {group_size: 1}\n")


def test_nested_source_errors_name_the_list_position(tmp_path):
    msg = error_of(tmp_path, "curate:\n  sources:\n    - kind: synthetic\n      sft_per_family: -1\n")
    assert "curate.sources.0.sft_per_family" in msg
    msg = error_of(tmp_path, "curate:\n  sources:\n    - kind: synthetic\n    - {kind: gsm8k, path: x.jsonl, sft_fraction: 0.9, eval_fraction: 0.2}\n")
    assert "curate.sources.1" in msg and "sft_fraction + eval_fraction must be <= 1" in msg
    assert "curate.sources.0.families.0" in error_of(tmp_path, "curate: {sources: [{kind: synthetic, families: [add_9d]}]}\n")
    assert "curate.sources.0.path" in error_of(tmp_path, "curate: {sources: [{kind: gsm8k}]}\n")


def test_gsm8k_source_parses(tmp_path):
    p = load_params(params_file(tmp_path, "curate:\n  sources:\n    - {kind: gsm8k, path: openai/gsm8k, revision: abc, limit: 500}\n"))
    assert p.curate.sources == [Gsm8kSource(path="openai/gsm8k", revision="abc", limit=500)]


def test_overrides_apply(tmp_path):
    path = params_file(tmp_path, "sft:\n  lr: 0.01\n  steps: 5\n")
    p = load_params(path, ["sft.lr=0.1", "curate.seed=7", "grpo.rewards={accuracy: 1.0}"])
    assert p.sft.lr == 0.1 and p.sft.steps == 5  # untouched keys keep the file's value
    assert p.curate.seed == 7
    assert p.grpo.rewards == {"accuracy": 1.0}


def test_overrides_are_validated_like_the_file(tmp_path):
    path = params_file(tmp_path, "sft: {}\n")
    assert "sft.lr" in error_of(tmp_path, "sft: {}\n", ["sft.lr=5"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_params(path, ["sft.lr"])
    with pytest.raises(ConfigError, match="sft.lr.x: lr is not a section"):
        apply_overrides({"sft": {"lr": 0.1}}, ["sft.lr.x=1"])


def test_override_does_not_mutate_input():
    raw = {"sft": {"lr": 0.1}}
    assert apply_overrides(raw, ["sft.lr=0.2"]) == {"sft": {"lr": 0.2}}
    assert raw == {"sft": {"lr": 0.1}}


def test_unknown_reward_named(tmp_path):
    msg = error_of(tmp_path, "grpo:\n  rewards: {accuracy: 1.0, vibes: 0.5}\n")
    # The check is a model validator on GRPOConfig, so the location is the section, not the field.
    assert "grpo.rewards" in msg and "unknown reward 'vibes'" in msg and "'accuracy'" in msg
    assert "at least one reward" in error_of(tmp_path, "grpo: {rewards: {}}\n")


def test_evaluate_k_bounded_by_samples(tmp_path):
    msg = error_of(tmp_path, "evaluate: {n_samples: 4, ks: [1, 8]}\n")
    assert "evaluate" in msg and "n_samples (4)" in msg


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    assert "not valid YAML" in error_of(tmp_path, "sft: [unclosed\n")
    assert "top level must be a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_length_reward_soft_zone_must_fit_the_budget(tmp_path):
    from tasks.config import ConfigError, load_params

    p = tmp_path / "params.yaml"
    p.write_text("grpo:\n  max_new_tokens: 8\n  overlong_cache: 16\n  rewards: {accuracy: 1.0, length: 1.0}\n")
    with pytest.raises(ConfigError, match=r"grpo.*overlong_cache \(16\) must be <= max_new_tokens \(8\)"):
        load_params(p)
    p.write_text("grpo:\n  max_new_tokens: 8\n  overlong_cache: 16\n  rewards: {accuracy: 1.0}\n")
    assert load_params(p).grpo.overlong_cache == 16  # unused without the length reward


def test_scale_checks_are_config_errors_naming_the_key(tmp_path):
    msg = error_of(tmp_path, "sft:\n  batch_size: 1\n  scale: {num_processes: 2}\n")
    assert msg.startswith(f"{tmp_path / 'params.yaml'}: sft: ") and "batch_size (1) < scale.num_processes (2)" in msg
    msg = error_of(tmp_path, "grpo:\n  prompts_per_step: 1\n  scale: {num_processes: 2}\n")
    assert "grpo: " in msg and "prompts_per_step (1) < scale.num_processes (2)" in msg
    p = tmp_path / "params.yaml"  # uneven shards and dynamic sampling are fine on several processes
    p.write_text("grpo:\n  prompts_per_step: 3\n  dynamic_sampling: true\n  scale: {num_processes: 2}\n")
    assert load_params(p).grpo.prompts_per_step == 3


def test_one_schedule_for_both_stages():
    """SFT's default decays by cosine to 10% of the peak, GRPO's stays constant, both after the same
    linear warmup; the doctest of ``lr_at`` is checked here too."""
    import doctest
    import math

    import tasks.schedule
    from tasks.config import GRPOConfig, SFTConfig
    from tasks.schedule import lr_at

    assert doctest.testmod(tasks.schedule).failed == 0
    sft = SFTConfig(lr=1.0, warmup_steps=4, steps=12)
    # warmup (s + 1) / 4; then progress (s - 4) / 8, lr = 0.1 + 0.9 * 0.5 * (1 + cos(pi p))
    assert [lr_at(s, sft) for s in (0, 3)] == [0.25, 1.0]
    assert lr_at(8, sft) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert lr_at(12, sft) == pytest.approx(0.1)
    grpo = GRPOConfig(lr=1.0, warmup_steps=4, steps=12)
    assert [lr_at(s, grpo) for s in (0, 3, 4, 11)] == [0.25, 1.0, 1.0, 1.0]
