"""Where a GRPO step spends its time, r1flow's and TRL's (the settings of ``bench_grpo.py``).

    python benchmarks/profile_grpo.py [--model models/sft] [--steps 3] [--threads 2] [--no-trl]

Runs ``--warmup`` steps, then ``--steps`` steps under cProfile, and prints:

- r1flow ``train_step`` by phase: sampling (``tasks.generation.sample``), reward IPC
  (``RewardExecutor.score``), and the update split into the log-prob forward
  (``completion_logprobs``), the loss, backward, gradient clipping and the AdamW step; plus how
  much of the batch is padding (rows that ended early still cost decode steps and update work);
- ``sample`` alone: time per decode step, model forwards, and the share of known pieces (KV-cache
  concatenation, causal-mask construction, rotary embedding, attention, linear layers, sampling),
  then the top functions by own time;
- TRL ``GRPOTrainer`` by phase: HF ``generate``, in-process rewards, the whole rollout,
  the log-prob forward, backward, clipping, AdamW.

cProfile adds overhead per Python call, so absolute times are higher than in ``bench_grpo.py``;
the shares are what to read. Writes nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see bench_grpo.py
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import transformers  # noqa: E402
from bench_grpo import R1flowTrainer, prompt_rows, trl_trainer  # noqa: E402

from tasks.config import GRPOConfig, ModelConfig  # noqa: E402
from tasks.generation import sample  # noqa: E402
from tasks.grpo.sampler import build_sampler  # noqa: E402
from tasks.models import build_tiny, load_model, load_tokenizer, render_prompt  # noqa: E402
from tasks.rewards.executor import RewardExecutor  # noqa: E402

# (label, file suffix, function name): cumulative time of these functions is the breakdown.
R1FLOW_PHASES = [
    ("sample (rollout generation)", "tasks/generation.py", "sample"),
    ("reward executor score (IPC)", "tasks/rewards/executor.py", "score"),
    ("update: completion_logprobs fwd", "tasks/generation.py", "completion_logprobs"),
    ("update: policy_loss", "tasks/grpo/loss.py", "policy_loss"),
    ("update: backward", "torch/_tensor.py", "backward"),
    ("update: clip_grad_norm_", "torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    ("update: AdamW step", "torch/optim/optimizer.py", "wrapper"),
]
TRL_PHASES = [
    ("rollout: _generate_and_score (all)", "trl/trainer/grpo_trainer.py", "_generate_and_score_completions"),
    ("  of which HF generate", "transformers/generation/utils.py", "generate"),
    ("  of which rewards (in process)", "trl/trainer/grpo_trainer.py", "_calculate_rewards"),
    ("update: logps+entropy fwd", "trl/trainer/grpo_trainer.py", "_get_per_token_logps_and_entropies"),
    ("update: backward (accelerate)", "accelerate/accelerator.py", "backward"),
    ("update: clip grad norm", "transformers/trainer.py", "_clip_grad_norm"),
    ("update: AdamW step", "torch/optim/optimizer.py", "wrapper"),
]
# Pieces of the decode forward worth knowing about (cumulative time inside sampling).
INSIDE = [
    ("model forward (all)", "modeling_qwen2.py", "forward", "Qwen2ForCausalLM"),
    ("KV cache update (torch.cat)", "cache_utils.py", "update", None),
    ("causal mask construction", "masking_utils.py", "create_causal_mask", None),
    ("rotary embedding", "modeling_qwen2.py", "forward", "Qwen2RotaryEmbedding"),
    ("attention (sdpa)", "", "<built-in method torch._C._nn.scaled_dot_product_attention>", None),
    ("linear layers", "", "<built-in method torch._C._nn.linear>", None),
    ("softmax + multinomial", "", "<built-in method torch.multinomial>", None),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str, first_line: int | None = None) -> tuple[float, int]:
    """(cumulative seconds, calls) of a function; for recursion-free entries cProfile's ct is exact."""
    total, calls = 0.0, 0
    for (file, line, func), (_cc, nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and file.endswith(suffix) and (first_line is None or line == first_line):
            total, calls = total + ct, calls + nc
    return total, calls


def forward_line(cls: str) -> int | None:
    """The source line of ``cls.forward`` in transformers' Qwen2 module (cProfile keys by line)."""
    import inspect

    from transformers.models.qwen2 import modeling_qwen2

    return inspect.getsourcelines(getattr(modeling_qwen2, cls).forward)[1]


def print_phases(stats: pstats.Stats, phases: list[tuple[str, str, str]], n: int, step_s: float) -> None:
    accounted = 0.0
    for label, suffix, name in phases:
        ct, calls = cumulative(stats, suffix, name)
        if name == "wrapper":  # Optimizer.step is wrapped; report one call per step
            calls = n
        if not label.startswith("  "):  # indented rows are parts of the row above
            accounted += ct
        print(f"  {label:36}{ct / n * 1e3:8.1f} ms {100 * ct / n / step_s:5.1f}%   calls/step {calls / n:g}")
    print(f"  {'rest (bookkeeping, logging...)':36}{(step_s - accounted / n) * 1e3:8.1f} ms")


def profile_r1flow(model_dir: Path, rows: list[dict], args) -> R1flowTrainer:
    with RewardExecutor(args.reward_workers, GRPOConfig().reward_timeout_s) as executor:
        trainer = R1flowTrainer(model_dir, rows, args, executor)
        for _ in range(args.warmup):
            trainer.step()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.steps):
            trainer.step()
        prof.disable()
    n = args.steps
    step_s = sum(trainer.seconds[args.warmup :]) / n
    tokens = statistics.fmean(h["response_length"] for h in trainer.history[args.warmup :])
    print(f"\n== r1flow train_step: {step_s * 1e3:.1f} ms per step (under cProfile), "
          f"mean completion {tokens:.1f} tokens")
    print_phases(pstats.Stats(prof, stream=io.StringIO()), R1FLOW_PHASES, n, step_s)
    # Padding: rows that ended early still run through every decode step and the update forward.
    s = trainer.rollouts[0].samples
    b, t = s.completion_ids.shape
    real = float(s.completion_mask.sum())
    print(f"  padding (last step): {b} rows x {t} decode steps, {real:.0f} real tokens -> "
          f"{100 * (1 - real / (b * t)):.0f}% of decode row-steps and of the update's completion "
          f"positions are padding")
    return trainer


def profile_sample(model_dir: Path, rows: list[dict], args) -> None:
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir)
    drawn = build_sampler("uniform", [r["source"] for r in rows], args.seed).sample(args.prompts)
    prompts = [render_prompt(tokenizer, rows[i]["prompt"]) for i in drawn]
    gen = torch.Generator().manual_seed(args.seed)
    sample(model, tokenizer, prompts, args.group, args.max_new_tokens, 1.0, generator=gen)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    decode_steps = [
        sample(model, tokenizer, prompts, args.group, args.max_new_tokens, 1.0, generator=gen).completion_ids.shape[1]
        for _ in range(args.steps)
    ]
    prof.disable()
    sample_s = (time.perf_counter() - t) / args.steps
    stats = pstats.Stats(prof, stream=io.StringIO())
    steps = statistics.fmean(decode_steps)
    print(f"\n== tasks.generation.sample alone: {sample_s * 1e3:.1f} ms per call, {steps:.1f} decode steps, "
          f"{sample_s / steps * 1e3:.2f} ms per decode step")
    for label, suffix, name, cls in INSIDE:
        ct, calls = cumulative(stats, suffix, name, forward_line(cls) if cls else None)
        if label.startswith("softmax"):
            ct += cumulative(stats, "", "<built-in method torch.softmax>")[0]
        per = f"  ({ct / max(calls, 1) * 1e3:.2f} ms per call)" if cls == "Qwen2ForCausalLM" else ""
        print(f"  {label:36}{ct / args.steps * 1e3:8.1f} ms {100 * ct / args.steps / sample_s:5.1f}%   "
              f"calls/call {calls / args.steps:g}{per}")
    top = io.StringIO()
    pstats.Stats(prof, stream=top).sort_stats("tottime").print_stats(args.top)
    lines = [ln for ln in top.getvalue().splitlines() if ln.strip()]
    print(f"  top {args.top} by own time:")
    print("\n".join("    " + ln for ln in lines[-(args.top + 1) :]))


def profile_trl(model_dir: Path, rows: list[dict], args) -> None:
    lengths: list[int] = []
    rollout_s: list[float] = []
    prof = cProfile.Profile()
    seconds: list[float] = []

    class Clock(transformers.TrainerCallback):
        t = 0.0

        def on_step_begin(self, state_args, state, *a, **k):
            if state.global_step == args.warmup:
                prof.enable()
            self.t = time.perf_counter()

        def on_step_end(self, state_args, state, *a, **k):
            seconds.append(time.perf_counter() - self.t)

    trainer = trl_trainer(model_dir, rows, args, [Clock()], lengths, rollout_s)
    trainer.train()
    prof.disable()
    n = args.steps
    step_s = sum(seconds[args.warmup :]) / n
    batch = args.prompts * args.group
    print(f"\n== TRL GRPOTrainer step: {step_s * 1e3:.1f} ms per step (under cProfile), "
          f"mean completion {statistics.fmean(lengths[args.warmup * batch :]):.1f} tokens")
    print_phases(pstats.Stats(prof, stream=io.StringIO()), TRL_PHASES, n, step_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = "models/sft" if (Path("models/sft") / "config.json").is_file() else "tiny"
    ap.add_argument("--model", default=default_model, help="a model folder, or tiny (default: models/sft if present)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-trl", action="store_true", help="skip profiling TRL's step")
    args = ap.parse_args()
    # The settings bench_grpo.py uses by default.
    args.prompts, args.group, args.max_new_tokens, args.lr, args.seed = 8, 8, 64, 1e-5, 0
    args.reward_workers = GRPOConfig().reward_workers
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="profile-grpo-")
    model_dir = build_tiny(ModelConfig(), Path(tmp.name) / "tiny") if args.model == "tiny" else Path(args.model)
    rows = prompt_rows(64, args.seed)
    print(f"model {model_dir}, {args.threads} torch threads, {args.steps} profiled steps after {args.warmup}, "
          f"load average {os.getloadavg()[0]:.2f}")
    profile_r1flow(model_dir, rows, args)
    profile_sample(model_dir, rows, args)
    if not args.no_trl:
        profile_trl(model_dir, rows, args)


if __name__ == "__main__":
    main()
