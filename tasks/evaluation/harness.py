"""The evaluation harness: generate, verify and stream per-sample outputs for one model.

Per model and eval item: one greedy completion (accuracy, format, length, truncation) and
``n_samples`` sampled completions at ``temperature`` (mean@n, pass@k, maj@k). Choices:

- Generation is ``tasks.generation.sample`` (batched, KV-cached, the rollout sampler), in chunks
  of ``batch_size`` rows (``batch_size // n`` prompts); one seeded generator per pass (greedy:
  ``seed``, sampled: ``seed + 1``) runs through the chunks in order, so the same seed gives the
  same completions, and greedy completions do not depend on the sampled pass.
- Each chunk is verified by the reward executor (worker processes: untrusted output never runs
  here) and written to ``<samples_dir>/<model>.jsonl`` straight away; only verdicts, lengths and
  short vote keys stay in memory, so long completions of a large benchmark are never all held.
- The verdict of a math row is the ``accuracy`` reward; of a code row (one with ``tests``) the
  ``code`` reward equal to 1 (every test passes, in the sandbox).
- maj@k votes on the extracted answer (``tasks.rewards.math.extract_answer``, a linear string
  scan); a code row votes on a hash of its stripped completion.

``heldout_accuracy`` is the greedy half for callers that evaluate during training (GRPO's
``eval_every``, the curriculum experiment): it takes no sampler, so it cannot touch the curriculum,
and its generator is its own, so it consumes none of the trainer's random streams.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tasks.config.model import ModelConfig
from tasks.generation import Samples, Stops, sample, stop_conditions
from tasks.metrics import mean_over_sources, per_source_means
from tasks.models import render_prompt
from tasks.rewards import zero_if_none
from tasks.rewards.math import extract_answer

MAX_VOTE_CHARS = 200


def iter_generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    n: int,
    greedy: bool,
    seed: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 256,
    engine: str = "auto",
    stops: Stops | None = None,
) -> Iterator[tuple[int, Samples]]:
    """``(first prompt index, Samples)`` per chunk of ~batch_size rows, n rows per prompt."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    per_call = max(1, batch_size // n)
    for i in range(0, len(prompts), per_call):
        yield (
            i,
            sample(
                model,
                tokenizer,
                prompts[i : i + per_call],
                n,
                max_new_tokens,
                temperature,
                greedy,
                gen,
                engine,
                stops,
            ),
        )


def generate_all(
    model,
    tokenizer,
    prompts: list[str],
    *,
    n: int,
    greedy: bool,
    seed: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 256,
    stops: Stops | None = None,
):
    """Completions (texts, lengths) for every prompt, n per prompt (for small sets held in memory).
    ``stops``: default every eos id of the model and tokenizer (tasks/generation.py)."""
    texts, lengths = [], []
    for _, s in iter_generate(
        model,
        tokenizer,
        prompts,
        n=n,
        greedy=greedy,
        seed=seed,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
        stops=stops,
    ):
        texts += s.texts
        lengths += s.completion_mask.sum(1).tolist()
    return texts, np.array(lengths, dtype=float)


def reward_names(rows: list[dict], base: tuple[str, ...]) -> list[str]:
    return [*base, "code"] if any(r.get("tests") for r in rows) else list(base)


def verdicts(per_reward: dict[str, list], n_rows: int) -> np.ndarray:
    """Math rows: the accuracy reward; code rows (accuracy not applicable): all tests pass."""
    acc, code = per_reward["accuracy"], per_reward.get("code", [None] * n_rows)
    return np.array([a if a is not None else float(c is not None and c >= 1.0) for a, c in zip(acc, code)])


def vote_key(text: str, row: dict) -> str | None:
    if row.get("tests"):
        return hashlib.sha1(text.strip().encode()).hexdigest()[:12]
    ans = extract_answer(text)
    return None if ans is None else ans[:MAX_VOTE_CHARS]


def heldout_accuracy(
    model,
    tokenizer,
    rows: list[dict],
    executor,
    max_new_tokens: int,
    batch_size: int = 128,
    model_cfg: ModelConfig | None = None,
) -> tuple[float, dict[str, float]]:
    """Greedy accuracy, mean over sources, and per source. Takes no sampler: evaluation cannot touch
    the curriculum. ``model_cfg``: prompt rendering and stop strings, as in ``run_model``."""
    model_cfg = model_cfg or ModelConfig()
    prompts = [render_prompt(tokenizer, r["prompt"], model_cfg.prompt) for r in rows]
    texts, _ = generate_all(
        model,
        tokenizer,
        prompts,
        n=1,
        greedy=True,
        seed=0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stops=stop_conditions(model, tokenizer, model_cfg.stop_strings),
    )
    scored = executor.score(texts, rows, reward_names(rows, ("accuracy",)))
    correct = np.array(zero_if_none(list(verdicts(scored.per_reward, len(rows)))))
    sources = np.array([r["source"] for r in rows])
    return mean_over_sources(correct, sources), per_source_means(correct, sources)


@dataclass
class ModelEval:
    """What one model's evaluation keeps in memory: per item (and per sample) verdicts, no texts."""

    correct: np.ndarray  # [N] greedy verdict
    fmt: np.ndarray  # [N] greedy format reward
    lengths: np.ndarray  # [N] greedy completion tokens
    truncated: np.ndarray  # [N] greedy hit max_new_tokens
    sample_correct: np.ndarray  # [N, n]
    votes: list[list[str | None]]  # [N][n] maj@k vote keys
    errors: int = 0
    timeouts: int = 0
    examples: list[dict] = field(default_factory=list)


def _line(model: str, kind: str, j: int, row: dict, text: str, verdict: float, extra: dict) -> str:
    rec = {
        "model": model,
        "id": row["id"],
        "source": row["source"],
        "kind": kind,
        "sample": j,
        "prompt": row["prompt"],
        "answer": row.get("answer"),
        "completion": text,
        "extracted": extract_answer(text),
        "verdict": float(verdict),
    }
    return json.dumps(rec | extra, ensure_ascii=False) + "\n"


def run_model(
    name: str,
    model,
    tokenizer,
    rows: list[dict],
    cfg,
    executor,
    out: Path,
    model_cfg: ModelConfig | None = None,
) -> ModelEval:
    """Greedy then sampled passes over ``rows``, streaming every completion to ``out`` (jsonl).
    ``model_cfg`` gives the prompt rendering and stop strings (the same as SFT's and GRPO's)."""
    model_cfg = model_cfg or ModelConfig()
    prompts = [render_prompt(tokenizer, r["prompt"], model_cfg.prompt) for r in rows]
    N, n = len(rows), cfg.n_samples
    ev = ModelEval(
        np.zeros(N),
        np.zeros(N),
        np.zeros(N),
        np.zeros(N, dtype=bool),
        np.zeros((N, n)),
        [[None] * n for _ in range(N)],
    )
    common = dict(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        batch_size=cfg.batch_size,
        engine=cfg.engine,
        stops=stop_conditions(model, tokenizer, model_cfg.stop_strings),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        _greedy_pass(name, model, tokenizer, rows, prompts, cfg, executor, ev, f, common)
        _sampled_pass(name, model, tokenizer, rows, prompts, cfg, executor, ev, f, common)
    return ev


def _greedy_pass(name, model, tokenizer, rows, prompts, cfg, executor, ev: ModelEval, f, common) -> None:
    """One greedy completion per row: verdicts, format, lengths, truncation, streamed to ``f``."""
    for i, s in iter_generate(model, tokenizer, prompts, n=1, greedy=True, seed=cfg.seed, **common):
        chunk = rows[i : i + len(s.texts)]
        scored = executor.score(s.texts, chunk, reward_names(chunk, ("accuracy", "format")))
        ev.errors, ev.timeouts = ev.errors + scored.errors, ev.timeouts + scored.timeouts
        v = np.array(zero_if_none(list(verdicts(scored.per_reward, len(chunk)))))
        sl = slice(i, i + len(chunk))
        ev.correct[sl], ev.fmt[sl] = v, zero_if_none(scored.per_reward["format"])
        ev.lengths[sl], ev.truncated[sl] = (
            s.completion_mask.sum(1).cpu().numpy(),
            s.truncated.cpu().numpy(),
        )
        for j, (row, text) in enumerate(zip(chunk, s.texts)):
            f.write(
                _line(
                    name,
                    "greedy",
                    0,
                    row,
                    text,
                    v[j],
                    {"length": int(ev.lengths[i + j]), "truncated": bool(ev.truncated[i + j])},
                )
            )
        if not ev.examples:
            ev.examples = [
                {"prompt": r["prompt"], "completion": t, "answer": r.get("answer")}
                for r, t in zip(chunk[:3], s.texts)
            ]


def _sampled_pass(name, model, tokenizer, rows, prompts, cfg, executor, ev: ModelEval, f, common) -> None:
    """``n_samples`` sampled completions per row: verdicts and vote keys, streamed to ``f``."""
    n = cfg.n_samples
    for i, s in iter_generate(model, tokenizer, prompts, n=n, greedy=False, seed=cfg.seed + 1, **common):
        chunk = rows[i : i + len(s.texts) // n]
        repeated = [r for r in chunk for _ in range(n)]
        scored = executor.score(s.texts, repeated, reward_names(chunk, ("accuracy",)))
        ev.errors, ev.timeouts = ev.errors + scored.errors, ev.timeouts + scored.timeouts
        v = verdicts(scored.per_reward, len(repeated)).reshape(-1, n) > 0.5
        ev.sample_correct[i : i + len(chunk)] = v
        for r, (row, text) in enumerate(zip(repeated, s.texts)):
            p, j = divmod(r, n)
            ev.votes[i + p][j] = vote_key(text, row)
            f.write(_line(name, "sample", j, row, text, v[p, j], {"length": int(s.completion_mask[r].sum())}))
