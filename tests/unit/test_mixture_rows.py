"""Code rows reach GRPO: a mixture of MBPP and GSM8K rows (the real files) curated into rl.parquet
carries ``tests`` and ``rewards``, GRPO's row loader keeps them, and the reward executor scores a
code row with the code reward in the sandbox next to a math row scored by accuracy."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.config.curate import CurateConfig, Gsm8kSource, MbppSource

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.slow
def test_mixture_rl_rows_carry_tests_and_rewards_to_the_trainer(tmp_path):
    from tasks.grpo.train import ROW_COLUMNS
    from tasks.rewards import combine
    from tasks.rewards.executor import RewardExecutor
    from tasks.stages.curate import build, columns_of, write_parquet

    assert (SHARED / "mbpp" / "mbpp.jsonl").is_file(), f"the real MBPP file is expected in {SHARED}"
    cfg = CurateConfig(
        sources=[
            Gsm8kSource(path=str(SHARED / "gsm8k" / "train.jsonl"), limit=40, eval_fraction=0.2),
            MbppSource(path=str(SHARED / "mbpp" / "mbpp.jsonl"), limit=6),
        ],
        verify={"math": False, "workers": 1},
        fingerprint=str(tmp_path / "none.json"),
    )
    splits, report = build(cfg)
    cols = columns_of(splits)
    assert {"tests", "rewards"} <= set(cols)
    write_parquet(splits["rl"], tmp_path / "rl.parquet", cols)
    df = pd.read_parquet(tmp_path / "rl.parquet")
    rows = df[[c for c in ROW_COLUMNS if c in df.columns]].to_dict("records")  # what GRPO loads
    code = next(r for r in rows if r["source"] == "mbpp")
    math = next(r for r in rows if r["source"] == "gsm8k")
    assert code["rewards"] == "code,format" and json.loads(code["tests"])[0]["assert"].startswith("assert")
    assert "accuracy" in math["rewards"].split(",") and "code" not in math["rewards"]

    mbpp = {json.loads(line)["task_id"]: json.loads(line) for line in (SHARED / "mbpp" / "mbpp.jsonl").open()}
    reference = mbpp[int(code["id"].removeprefix("mbpp-"))]["code"]
    completions = [
        f"<think>x</think><answer>\n```python\n{reference}\n```\n</answer>",
        f"<think>x</think><answer>{math['answer']}</answer>",
        "<answer>no code</answer>",
    ]
    with RewardExecutor(1, 6.0) as ex:
        res = ex.score(completions, [code, math, code], ["accuracy", "code", "format"])
    assert res.per_reward["code"] == [1.0, None, 0.0]  # the sandboxed tests pass for the reference
    assert res.per_reward["accuracy"] == [None, 1.0, None]
    assert combine(res.per_reward, {"accuracy": 1.0, "code": 1.0})[:2] == [1.0, 1.0]
