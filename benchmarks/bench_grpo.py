"""GRPO throughput: r1flow's training step against TRL's ``GRPOTrainer``, same model, same settings.

    python benchmarks/bench_grpo.py [--model models/sft] [--steps 10] [--warmup 2] [--threads 2]

Both trainers run in this one process on CPU with ``--threads`` torch threads, alternating step
by step (``bench_both``: the box is shared, so a change in load hits both alike), from the same
saved model (``--model``: default ``models/sft`` when it exists, else ``tiny``, the embedded model
built by ``tasks.models.build_tiny`` into a temporary folder), the same synthetic prompts and the
same settings: P prompts x G completions per step, ``max_new_tokens``, temperature 1 (no top-k or
top-p), beta = 0 (no reference model), mu = 1, the "grpo" loss (mean per sequence), constant
learning rate, no gradient checkpointing, float32, AdamW. ``OMP_WAIT_POLICY`` defaults to PASSIVE
(see below); the JSON records it.

- r1flow: ``tasks.grpo.train.train_step`` with a ``RewardExecutor`` (rewards run in worker
  processes, as in training). TRL: ``GRPOTrainer.train`` with the same reward as an in-process
  Python function (TRL's design). The reward is ``accuracy`` against each synthetic prompt's
  answer, so groups are a realistic mix of informative and all-equal ones (the fraction of
  all-equal groups each side saw is reported: r1flow skips their rows in the update, TRL does not;
  on ``tag_count``, which the SFT model nearly always satisfies, ~96% of groups are flat and the
  comparison would mostly measure that skip).
- ``*_completions_per_s`` = P*G*steps / the summed wall time of the timed steps, after ``--warmup``
  steps each. A TRL step is timed between callbacks, so it includes TRL's data loading and
  logging, as r1flow's includes its sampler and metric bookkeeping.
- Sampling stops on EOS, so throughput depends on completion length: the mean completion length
  (tokens, EOS included) of each side is reported; on the same model they should agree.
- ``rollout_over_generate``: r1flow's rollout phase (``generate_and_score``: sampling + reward
  executor + advantages) over raw ``model.generate(do_sample=True, num_return_sequences=G)`` on the
  same left-padded batch, median of ``--repeats`` alternating runs. Both loops stop when every row
  has ended, so each time is divided by its number of decode steps before the ratio (equal work
  per step; the prompt forward is the same on both sides). ``sample_over_generate`` is the same
  ratio for ``tasks.generation.sample`` alone.

- ``speedup_vs_trl_informative``: the same comparison on prompts where the model is right 25-75%
  of the time (``informative_rows``, probed with 16 samples each), so almost no group is
  all-equal: the speedup above partly comes from r1flow skipping flat groups' rows in the update,
  which this batch leaves nothing to skip. Its step breakdown is reported too: with nothing to
  skip both trainers run the forward and backward over the same tokens, so the ratio is bounded
  by the rollout's (r1flow's generation against TRL's) once the update's share grows.
- ``online_model``: r1flow's step on the default rows with the uniform sampler and with the online
  difficulty model (``grpo.online``) on top, alternating: step time, all-equal share, skip rate.
- ``informative.update_floor``: the informative batch's update at this machine's matmul speed with
  everything else free (``update_floor``), and the speedup over TRL that would leave with
  r1flow's rollout as measured: what bounds ``speedup_vs_trl_informative`` when both update over
  the same tokens.

Writes ``benchmarks/results/grpo.json``. Figures, not assertions; targets: speedup >= 2,
rollout_over_generate <= 1.10. Profile with ``benchmarks/profile_grpo.py``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

# Before torch loads OpenMP: a spinning OpenMP team on a shared 2-core machine loses a core to any
# other process and then every op waits a scheduler tick (we saw sampling 40x slower, 18 s instead
# of 0.45 s). Passive waiting makes the figures depend far less on what else runs. Both trainers
# share this process, so the setting applies to both alike; set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers  # noqa: E402

from tasks.config import GRPOConfig, ModelConfig  # noqa: E402
from tasks.config.grpo import OnlineConfig  # noqa: E402
from tasks.data.synthetic import generate_family  # noqa: E402
from tasks.generation import encode_prompts, sample, stop_conditions  # noqa: E402
from tasks.grpo.batching import MAX_BUCKETS, plan  # noqa: E402
from tasks.grpo.rollout import generate_and_score  # noqa: E402
from tasks.grpo.sampler import build_sampler  # noqa: E402
from tasks.grpo.train import train_step  # noqa: E402
from tasks.models import build_tiny, count_parameters, load_model, load_tokenizer, render_prompt  # noqa: E402
from tasks.rewards import accuracy  # noqa: E402
from tasks.rewards.executor import RewardExecutor  # noqa: E402

FAMILIES = ("add_2d", "sub_2d", "add_3d", "mul_1x2")
REWARD = "accuracy"


def prompt_rows(per_family: int, seed: int) -> list[dict]:
    """Rows of a few synthetic families, without the worked solution (the RL split's columns)."""
    rows = []
    for fam in FAMILIES:
        for r in generate_family(fam, per_family, seed):
            rows.append({k: r[k] for k in ("id", "source", "prompt", "answer", "difficulty")})
    return rows


def r1flow_config(args) -> GRPOConfig:
    return GRPOConfig(
        seed=args.seed, steps=args.warmup + args.steps, prompts_per_step=args.prompts, group_size=args.group,
        max_new_tokens=args.max_new_tokens, temperature=1.0, lr=args.lr, warmup_steps=0, lr_schedule="constant",
        loss_type="grpo", beta=0.0, num_iterations=1, rewards={REWARD: 1.0}, reward_workers=args.reward_workers,
    )


# ----------------------------------------------------------------------------- r1flow
class R1flowTrainer:
    """r1flow's GRPO loop as ``tasks.grpo.train.main`` runs it, one ``train_step`` per ``step()``."""

    def __init__(self, model_dir: Path, rows: list[dict], args, executor: RewardExecutor, online: bool = False):
        self.cfg, self.rows, self.executor = r1flow_config(args), rows, executor
        torch.manual_seed(args.seed)
        self.gen = torch.Generator().manual_seed(args.seed)
        self.tokenizer, self.model = load_tokenizer(model_dir), load_model(model_dir)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=0.0)
        self.sampler = build_sampler(
            "uniform", [r["source"] for r in rows], args.seed, ids=[r["id"] for r in rows],
            online=OnlineConfig(enabled=online), group_size=args.group,
        )
        self.seconds: list[float] = []
        self.history: list[dict] = []
        self.rollouts: list = []  # the last step's (kept) rollouts, for profile_grpo.py
        self.update_tokens: list[int] = []  # positions each step's update ran forward+backward over

    def step(self) -> None:
        t = time.perf_counter()
        metrics, _, (self.rollouts, _) = train_step(
            len(self.seconds), self.model, None, self.tokenizer, self.rows, self.sampler, self.cfg, self.opt,
            self.executor, self.gen,
        )
        self.seconds.append(time.perf_counter() - t)
        self.history.append(metrics)
        # The passes the update just ran (batching.plan, the trainer's own planner): rows x columns.
        items = plan(self.rollouts, self.cfg).items if self.rollouts else []
        self.update_tokens.append(
            sum(w.mask.shape[0] * (w.samples.prompt_ids.shape[1] + w.mask.shape[1]) for w in items)
        )


# ----------------------------------------------------------------------------- TRL
def trl_trainer(model_dir: Path, rows: list[dict], args, callbacks: list, lengths: list[int], rollout_s: list[float],
                flat: list[bool]):
    """TRL's ``GRPOTrainer`` on the same model, prompts, reward and settings as ``r1flow_config``.

    ``lengths`` receives every completion's token count (EOS included, as r1flow counts it) and
    ``rollout_s`` the wall time of each ``_generate_and_score_completions`` (TRL's rollout phase);
    ``flat`` gets, per group of G consecutive completions, whether all its rewards were equal.
    """
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    def accuracy_reward(completions, completion_ids, answer, **_) -> list[float]:
        lengths.extend(len(ids) for ids in completion_ids)
        scores = [accuracy(c, {"answer": a}) for c, a in zip(completions, answer)]
        flat.extend(len(set(scores[i : i + args.group])) == 1 for i in range(0, len(scores), args.group))
        return scores

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, *a, **k):
            t = time.perf_counter()
            out = super()._generate_and_score_completions(*a, **k)
            rollout_s.append(time.perf_counter() - t)
            return out

    batch = args.prompts * args.group
    out_dir = tempfile.mkdtemp(prefix="bench-grpo-trl-")  # TRL requires one; it writes nothing here
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    cfg = TRLConfig(
        output_dir=out_dir, use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_generations=args.group,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
        beta=0.0, num_iterations=1, loss_type="grpo", scale_rewards="group",
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        optim="adamw_torch", weight_decay=0.0, max_steps=args.warmup + args.steps, seed=args.seed,
        logging_steps=args.warmup + args.steps, save_strategy="no", disable_tqdm=True, log_completions=False,
    )
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    trainer = TimedGRPOTrainer(
        model=str(model_dir), reward_funcs=[accuracy_reward], args=cfg, train_dataset=dataset,
        processing_class=load_tokenizer(model_dir), callbacks=callbacks,
    )
    # The settings TRL derived must be the ones compared: one generation of P*G per optimiser step,
    # float32, no reference model, no old-log-prob forward (generation aligned with the update).
    assert trainer.args.generation_batch_size == batch and trainer.args.steps_per_generation == 1
    assert next(trainer.model.parameters()).dtype == torch.float32 and trainer.ref_model is None
    return trainer


def bench_both(model_dir: Path, rows: list[dict], args) -> tuple[dict, dict]:
    """TRL's ``GRPOTrainer.train`` with one r1flow step run after each TRL step (from a callback).

    Alternating step by step means a change in machine load (this box is shared) hits both
    trainers alike. TRL's step k is timed from the end of r1flow's step k-1 to TRL's
    ``on_step_end`` of step k, so it includes TRL's logging and data loading.
    """
    batch = args.prompts * args.group
    lengths: list[int] = []
    trl_seconds: list[float] = []
    trl_rollout_s: list[float] = []
    trl_flat: list[bool] = []

    class Alternate(transformers.TrainerCallback):
        resumed = 0.0

        def on_train_begin(self, *a, **k):
            torch.set_num_threads(args.threads)  # in case anything in the stack changed it
            self.resumed = time.perf_counter()

        def on_step_end(self, *a, **k):
            trl_seconds.append(time.perf_counter() - self.resumed)
            ours.step()
            self.resumed = time.perf_counter()

    with RewardExecutor(args.reward_workers, GRPOConfig().reward_timeout_s) as executor:
        ours = R1flowTrainer(model_dir, rows, args, executor)
        trainer = trl_trainer(model_dir, rows, args, [Alternate()], lengths, trl_rollout_s, trl_flat)
        trainer.train()
    w = args.warmup
    trl_wall = sum(trl_seconds[w:])
    r1 = r1flow_figures(ours, args)
    trl_res = {
        "completions_per_s": batch * args.steps / trl_wall,
        "step_s": trl_wall / args.steps,
        "median_step_s": statistics.median(trl_seconds[w:]),
        "mean_completion_tokens": statistics.fmean(lengths[w * batch :]),
        "rollout_s": statistics.fmean(trl_rollout_s[w:]),
        "update_and_rest_s": (trl_wall - sum(trl_rollout_s[w:])) / args.steps,
        "threads": torch.get_num_threads(),
        "flat_group_fraction": statistics.fmean(trl_flat[w * args.prompts :]),
    }
    return r1, trl_res


def r1flow_figures(ours: R1flowTrainer, args) -> dict:
    """Throughput, step time and its parts, completion length and flat share of the timed steps."""
    w = args.warmup
    r1_wall = sum(ours.seconds[w:])
    timed = ours.history[w:]
    mean = lambda key: statistics.fmean(m[key] for m in timed)  # noqa: E731
    return {
        "completions_per_s": args.prompts * args.group * args.steps / r1_wall,
        "step_s": r1_wall / args.steps,
        "median_step_s": statistics.median(ours.seconds[w:]),
        "mean_completion_tokens": mean("response_length"),
        "generate_s": mean("time/generate_s"),
        "reward_s": mean("time/reward_s"),
        "update_and_rest_s": r1_wall / args.steps - mean("time/generate_s") - mean("time/reward_s"),
        "flat_group_fraction": mean("zero_std_groups"),
        "update_tokens": statistics.fmean(ours.update_tokens[w:]),
    }


def bench_online(model_dir: Path, rows: list[dict], args) -> dict:
    """r1flow's step with the uniform sampler and with the online difficulty model on top, on the
    same rows, alternating step by step; the model learns from its first steps as in training."""
    with RewardExecutor(args.reward_workers, GRPOConfig().reward_timeout_s) as executor:
        plain = R1flowTrainer(model_dir, rows, args, executor)
        online = R1flowTrainer(model_dir, rows, args, executor, online=True)
        for _ in range(args.warmup + args.steps):
            plain.step()
            online.step()
    figures = {"uniform": r1flow_figures(plain, args), "online": r1flow_figures(online, args)}
    skips = [m["curriculum/online/skip_rate"] for m in online.history[args.warmup :]]
    return {
        "step_s": {k: round(v["step_s"], 4) for k, v in figures.items()},
        "flat_group_fraction": {k: round(v["flat_group_fraction"], 3) for k, v in figures.items()},
        "skip_rate": round(statistics.fmean(skips), 3),
    }


def informative_rows(model_dir: Path, args, probes: int = 16, per_family: int = 48) -> list[dict]:
    """Prompts on which the model is right 25-75% of the time (``probes`` samples each): groups of
    G drawn from them are almost never all-equal (p = 0.5: 0.8%; p = 0.25: 10% for G = 8)."""
    cfg = r1flow_config(args).model_copy(update={"group_size": probes})
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    candidates = []
    for fam in ("sub_2d", "mul_1x2", "add_4d", "add_3d"):
        for r in generate_family(fam, per_family, args.seed + 1):
            candidates.append({k: r[k] for k in ("id", "source", "prompt", "answer", "difficulty")})
    gen = torch.Generator().manual_seed(args.seed)
    keep = []
    with RewardExecutor(args.reward_workers, cfg.reward_timeout_s) as executor, torch.no_grad():
        for i in range(0, len(candidates), 16):
            batch = candidates[i : i + 16]
            ro = generate_and_score(model, tokenizer, batch, cfg, executor, gen)
            acc = torch.tensor(ro.accuracy()).view(len(batch), probes).mean(1)
            keep += [r for r, a in zip(batch, acc.tolist()) if 0.25 <= a <= 0.75]
    if len(keep) < args.prompts:
        raise SystemExit(f"only {len(keep)} informative prompts found; need >= {args.prompts}")
    return keep


# ----------------------------------------------------------------------------- rollout vs generate
def bench_rollout(model_dir: Path, rows: list[dict], args) -> dict:
    """Per decode step time of r1flow's rollout phase / of ``sample`` over ``model.generate``."""
    cfg = r1flow_config(args)
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    # The batch r1flow's first training step draws (mixed families, so prompts are padded).
    batch_rows = [rows[i] for i in build_sampler("uniform", [r["source"] for r in rows], args.seed).sample(args.prompts)]
    prompts = [render_prompt(tokenizer, r["prompt"]) for r in batch_rows]
    ids, mask = encode_prompts(tokenizer, prompts)
    gen = torch.Generator().manual_seed(args.seed)

    def hf_generate() -> int:
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=args.max_new_tokens,
            num_return_sequences=args.group, temperature=1.0, top_k=0, top_p=1.0,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=list(stop_conditions(model, tokenizer).ids),
        )
        return out.shape[1] - ids.shape[1]

    def rollout() -> int:
        return generate_and_score(model, tokenizer, batch_rows, cfg, executor, gen).samples.completion_ids.shape[1]

    def sample_only() -> int:
        s = sample(model, tokenizer, prompts, args.group, args.max_new_tokens, 1.0, generator=gen)
        return s.completion_ids.shape[1]

    per_step: dict[str, list[float]] = {"generate": [], "rollout": [], "sample": []}
    steps: dict[str, list[int]] = {k: [] for k in per_step}
    fns = {"generate": hf_generate, "rollout": rollout, "sample": sample_only}
    with RewardExecutor(cfg.reward_workers, cfg.reward_timeout_s) as executor, torch.no_grad():
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in fns.items():  # alternate, so a load change hits all three alike
                t = time.perf_counter()
                n = fn()
                per_step[name].append((time.perf_counter() - t) / n)
                steps[name].append(n)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    return {
        "rollout_over_generate": med["rollout"] / med["generate"],
        "sample_over_generate": med["sample"] / med["generate"],
        "per_decode_step_ms": {k: 1e3 * v for k, v in med.items()},
        "decode_steps_mean": {k: statistics.fmean(v) for k, v in steps.items()},
    }


def update_floor(model_dir: Path, r1: dict, trl_res: dict) -> dict:
    """How fast r1flow's update could be at this machine's matmul speed, and the speedup that caps.

    A forward+backward costs ~6 FLOPs per parameter per position (the usual 6ND estimate; attention
    over <= 100 positions adds little). ``matmul_gflops`` is one float32 matmul of the MLP's shape
    over as many rows as the update's mean pass (fastest of 8 timings), the dense layers' peak; the
    floor is the update's FLOPs at that rate, with every elementwise op, the optimiser and the
    bookkeeping free. ``speedup_bound`` = TRL's step / (r1flow's rollout + that floor)."""
    model = load_model(model_dir)
    cfg = model.config
    rows = max(1, int(r1["update_tokens"] / MAX_BUCKETS))  # positions in one pass (a length bucket)
    x, w = torch.randn(rows, cfg.hidden_size), torch.randn(cfg.hidden_size, cfg.intermediate_size)
    best = float("inf")  # the fastest of 8 timings of 10: a peak rate, and the first ones run cold
    for _ in range(8):
        t = time.perf_counter()
        for _ in range(10):
            x @ w
        best = min(best, (time.perf_counter() - t) / 10)
    gflops = 2 * x.shape[0] * x.shape[1] * w.shape[1] / best / 1e9
    flops = 6 * count_parameters(model) * r1["update_tokens"]
    floor = flops / (gflops * 1e9)
    return {
        "update_positions": round(r1["update_tokens"]),
        "update_gflop": round(flops / 1e9, 2),
        "matmul_gflops": round(gflops, 1),
        "update_gflops_achieved": round(flops / 1e9 / r1["update_and_rest_s"], 1),
        "update_floor_s": round(floor, 4),
        "speedup_bound": round(trl_res["step_s"] / (r1["generate_s"] + r1["reward_s"] + floor), 2),
    }


# ----------------------------------------------------------------------------- main
def cpu_model() -> str:
    """The CPU's model name: float results (and so trained weights) differ between CPU kinds."""
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")] \
        if info.exists() else []
    return names[0] if names else "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = "models/sft" if (Path("models/sft") / "config.json").is_file() else "tiny"
    ap.add_argument("--model", default=default_model, help="a model folder, or tiny (default: models/sft if present)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per trainer")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reward-workers", type=int, default=GRPOConfig().reward_workers)
    ap.add_argument("--repeats", type=int, default=9, help="rollout vs generate repeats")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/grpo.json"))
    args = ap.parse_args()
    if args.warmup < 1:
        ap.error("--warmup must be >= 1 (TRL's clock starts at the end of a warm-up step)")

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench-grpo-")
    model_dir = build_tiny(ModelConfig(), Path(tmp.name) / "tiny") if args.model == "tiny" else Path(args.model)
    rows = prompt_rows(64, args.seed)
    load_before = os.getloadavg()

    t = time.perf_counter()
    rollout = bench_rollout(model_dir, rows, args)
    r1, trl_res = bench_both(model_dir, rows, args)
    pool = informative_rows(model_dir, args)
    r1_inf, trl_inf = bench_both(model_dir, pool, args)
    floor = update_floor(model_dir, r1_inf, trl_inf)
    online = bench_online(model_dir, rows, args)
    import trl

    result = {
        "r1flow_completions_per_s": round(r1["completions_per_s"], 1),
        "trl_completions_per_s": round(trl_res["completions_per_s"], 1),
        "speedup_vs_trl": round(r1["completions_per_s"] / trl_res["completions_per_s"], 2),
        "speedup_vs_trl_informative": round(r1_inf["completions_per_s"] / trl_inf["completions_per_s"], 2),
        "informative": {
            "prompts": len(pool),
            "completions_per_s": {"r1flow": round(r1_inf["completions_per_s"], 1),
                                  "trl": round(trl_inf["completions_per_s"], 1)},
            "flat_group_fraction": {"r1flow": round(r1_inf["flat_group_fraction"], 3),
                                    "trl": round(trl_inf["flat_group_fraction"], 3)},
            "mean_completion_tokens": {"r1flow": round(r1_inf["mean_completion_tokens"], 1),
                                       "trl": round(trl_inf["mean_completion_tokens"], 1)},
            "step_breakdown_s": {
                "r1flow": {k: round(r1_inf[k], 4) for k in ("generate_s", "reward_s", "update_and_rest_s")},
                "trl": {k: round(trl_inf[k], 4) for k in ("rollout_s", "update_and_rest_s")},
            },
            "update_floor": floor,
        },
        "online_model": online,
        "rollout_over_generate": round(rollout["rollout_over_generate"], 3),
        "sample_over_generate": round(rollout["sample_over_generate"], 3),
        "mean_completion_tokens": {"r1flow": round(r1["mean_completion_tokens"], 1),
                                   "trl": round(trl_res["mean_completion_tokens"], 1)},
        "step_s": {"r1flow": round(r1["step_s"], 4), "trl": round(trl_res["step_s"], 4)},
        "median_step_s": {"r1flow": round(r1["median_step_s"], 4), "trl": round(trl_res["median_step_s"], 4)},
        "step_breakdown_s": {
            "r1flow": {k: round(r1[k], 4) for k in ("generate_s", "reward_s", "update_and_rest_s")},
            "trl": {k: round(trl_res[k], 4) for k in ("rollout_s", "update_and_rest_s")},
        },
        "flat_group_fraction": {"r1flow": round(r1["flat_group_fraction"], 3),
                                "trl": round(trl_res["flat_group_fraction"], 3)},
        "rollout_detail": {k: {n: round(v, 3) for n, v in rollout[k].items()}
                           for k in ("per_decode_step_ms", "decode_steps_mean")},
        "settings": {
            "model": "tiny (build_tiny, default ModelConfig)" if args.model == "tiny" else args.model,
            "parameters": count_parameters(load_model(model_dir)),
            "prompts_per_step": args.prompts, "completions_per_prompt": args.group,
            "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "beta": 0.0, "num_iterations": 1,
            "loss_type": "grpo", "lr": args.lr, "reward": REWARD, "reward_workers_r1flow": args.reward_workers,
            "warmup_steps": args.warmup, "timed_steps": args.steps, "torch_threads": args.threads,
            "threads_seen_during_training": trl_res["threads"], "interleaved": True,
            "rollout_repeats": args.repeats, "device": "cpu", "cpu_model": cpu_model(), "seed": args.seed,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "load_avg_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "bench_wall_s": round(time.perf_counter() - t, 1),
    }
    print(f"{'':28}{'r1flow':>12}{'TRL':>12}")
    print(f"{'completions/s':28}{result['r1flow_completions_per_s']:>12}{result['trl_completions_per_s']:>12}")
    print(f"{'step (s)':28}{result['step_s']['r1flow']:>12}{result['step_s']['trl']:>12}")
    mct = result["mean_completion_tokens"]
    print(f"{'mean completion tokens':28}{mct['r1flow']:>12}{mct['trl']:>12}")
    fgf = result["flat_group_fraction"]
    print(f"{'all-equal groups':28}{fgf['r1flow']:>12}{fgf['trl']:>12}")
    print(f"speedup vs TRL: {result['speedup_vs_trl']}x (target >= 2.0)")
    inf = result["informative"]
    print(f"informative batch ({inf['prompts']} prompts at 25-75% pass): speedup "
          f"{result['speedup_vs_trl_informative']}x, all-equal groups {inf['flat_group_fraction']}")
    print(f"  its update at the matmul rate ({floor['matmul_gflops']} GFLOP/s, elementwise free) would take "
          f"{floor['update_floor_s']} s (achieved {floor['update_gflops_achieved']} GFLOP/s): speedup bound "
          f"{floor['speedup_bound']}x")
    print(f"online model on this mixture: step {online['step_s']}, all-equal groups "
          f"{online['flat_group_fraction']}, skip rate {online['skip_rate']}")
    print(f"rollout / generate (per decode step): {result['rollout_over_generate']} (target <= 1.10); "
          f"sample / generate: {result['sample_over_generate']}")
    print(f"step breakdown (s): {result['step_breakdown_s']}")
    print(f"load average (1 min): {result['load_avg_1min']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
