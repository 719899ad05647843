"""Difficulty: each prompt's pass rate under a model, and an optional band-pass filter on it.

Off by default (``curate.difficulty.enabled``). When on, every row of the configured splits gets
``pass_rate``: the share of ``k`` sampled completions that pass, drawn with the sampler GRPO uses
(``tasks.generation.sample`` on the prompt rendered by ``tasks.models.render_prompt``) and scored by
the reward executor GRPO uses (``RewardExecutor``: ``accuracy`` for math rows, ``code_binary`` for
code rows, in worker processes). A row the source left unlabelled (``difficulty`` -1) gets
``difficulty`` = 1 + floor(4.999 * (1 - pass_rate)), 1 (always solved) .. 5 (never). The band
(``band: [lo, hi]``) keeps rows with lo < pass_rate < hi: a prompt always or never solved gives a
GRPO group no advantage. The model is named by path or hub id; the ``sources`` stage fingerprints
it, so a changed model re-runs curation.
"""

from __future__ import annotations

import math

PASS = 0.5  # a completion passes when its binary score is above this


def difficulty_of(pass_rate: float) -> int:
    """>>> [difficulty_of(p) for p in (1.0, 0.75, 0.5, 0.0)]
    [1, 2, 3, 5]
    """
    return 1 + math.floor(4.999 * (1.0 - pass_rate))


def pass_rates(rows: list[dict], cfg) -> list[float]:
    """The share of ``cfg.k`` sampled completions of each row that pass."""
    import torch

    from tasks.generation import sample
    from tasks.models import load_model, load_tokenizer, render_prompt
    from tasks.rewards.executor import RewardExecutor

    tok, model = load_tokenizer(cfg.model), load_model(cfg.model).eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    texts: list[str] = []
    for i in range(0, len(rows), cfg.batch_size):
        batch = [render_prompt(tok, r["prompt"]) for r in rows[i : i + cfg.batch_size]]
        texts += sample(model, tok, batch, cfg.k, cfg.max_new_tokens, cfg.temperature, False, gen).texts
    scores = [0.0] * len(texts)
    with RewardExecutor(cfg.workers, cfg.timeout_s) as ex:
        for reward, is_code in (("accuracy", False), ("code_binary", True)):
            idx = [j for j in range(len(texts)) if (rows[j // cfg.k].get("tests") is not None) == is_code]
            if not idx:
                continue
            plain = [
                {
                    "id": rows[j // cfg.k]["id"],
                    "answer": rows[j // cfg.k]["answer"],
                    "tests": rows[j // cfg.k].get("tests"),
                }
                for j in idx
            ]
            res = ex.score([texts[j] for j in idx], plain, [reward])
            for j, s in zip(idx, res.per_reward[reward]):
                scores[j] = s or 0.0
    return [sum(s > PASS for s in scores[i * cfg.k : (i + 1) * cfg.k]) / cfg.k for i in range(len(rows))]


def apply_difficulty(
    splits: dict[str, list[dict]], cfg, drops: list[dict], rates=None
) -> dict[str, list[dict]]:
    """Set ``pass_rate`` (and ``difficulty`` where unlabelled) on ``cfg.splits``; drop rows outside
    the band. ``rates`` ({split: [pass rate per row]}) skips the sampling (tests, reuse)."""
    out = dict(splits)
    for split in cfg.splits:
        rows = splits.get(split, [])
        got = rates[split] if rates is not None else pass_rates(rows, cfg)
        kept = []
        for row, p in zip(rows, got):
            row = {**row, "pass_rate": float(p)}
            if row["difficulty"] == -1:
                row["difficulty"] = difficulty_of(p)
            if cfg.band is not None and not cfg.band[0] < p < cfg.band[1]:
                drops.append(
                    {
                        "source": row["source"],
                        "where": f"id {row['id']}",
                        "reason": f"pass rate out of band ({p:.2f} not in ({cfg.band[0]}, {cfg.band[1]}))",
                    }
                )
                continue
            kept.append(row)
        out[split] = kept
    return out
