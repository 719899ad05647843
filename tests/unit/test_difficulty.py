"""Difficulty: pass rates from k samples of a (tiny, locally built) model scored by the reward
executor, the difficulty column derived from them, and the band-pass filter."""

import pytest

from tasks.config import ModelConfig
from tasks.config.curate import DifficultyConfig
from tasks.data.difficulty import apply_difficulty, difficulty_of, pass_rates


def row(i: int, difficulty: int = -1, **kw) -> dict:
    return {
        "id": f"r{i}",
        "source": "s",
        "prompt": f"{i}+1=",
        "answer": str(i + 1),
        "difficulty": difficulty,
        "solution": None,
        **kw,
    }


def test_band_pass_and_difficulty_columns():
    splits = {"rl": [row(0), row(1, difficulty=4), row(2), row(3)], "eval": [row(9)]}
    cfg = DifficultyConfig(enabled=True, model="x", band=(0.1, 0.9))
    drops: list = []
    out = apply_difficulty(splits, cfg, drops, rates={"rl": [0.0, 0.5, 0.25, 1.0]})
    assert [(r["id"], r["pass_rate"], r["difficulty"]) for r in out["rl"]] == [
        ("r1", 0.5, 4),
        ("r2", 0.25, 4),
    ]
    assert [d["where"] for d in drops] == ["id r0", "id r3"]
    assert drops[0]["reason"] == "pass rate out of band (0.00 not in (0.1, 0.9))"
    assert out["eval"] == splits["eval"]  # only the configured splits
    assert [difficulty_of(p) for p in (1.0, 0.5, 0.0)] == [1, 3, 5]


def test_config_needs_a_model_and_a_sane_band():
    with pytest.raises(ValueError, match="needs difficulty.model"):
        DifficultyConfig(enabled=True)
    with pytest.raises(ValueError, match="0 <= lo < hi <= 1"):
        DifficultyConfig(band=(0.9, 0.1))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.slow
def test_pass_rates_from_a_tiny_model(tmp_path):
    from tasks.models import build_tiny

    path = build_tiny(
        ModelConfig(
            tiny={
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "intermediate_size": 32,
            }
        ),
        tmp_path / "m",
    )
    rows = [row(i) for i in range(3)] + [{**row(7), "tests": '[{"input": "", "output": "1"}]', "answer": ""}]
    cfg = DifficultyConfig(enabled=True, model=str(path), k=2, max_new_tokens=4, workers=1)
    rates = pass_rates(rows, cfg)
    assert len(rates) == 4 and all(r in (0.0, 0.5, 1.0) for r in rates)
    assert rates[3] == 0.0  # 4 random characters are no program that prints 1
