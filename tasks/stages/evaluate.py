"""Evaluation (`python -m tasks.stages.evaluate`): base, SFT and GRPO on the held-out split.

For every model and every held-out prompt:
- one greedy completion -> accuracy (the headline), format rate, completion length;
- ``n_samples`` completions at ``temperature`` -> pass@k for each k (unbiased estimator).
Rewards are scored by the same executor and registry as training (worker processes), so
evaluation and training agree on what "correct" means.

Outputs: ``metrics/eval.json`` (DVC metrics: per model ``accuracy`` = mean over sources,
``per_source``, ``pass@k``; and ``grpo_vs_sft`` = paired stratified bootstrap of the accuracy
difference), ``reports/eval.md``, ``reports/eval_per_source.png`` (offline-viewable; DVC's HTML
plots need a CDN), ``plots/eval_per_source.csv``. The GRPO model is logged to MLflow with the
transformers flavour and registered with alias ``challenger``; it also becomes ``champion`` when
its improvement over SFT is significant (CI above 0) — the promotion gate.

``heldout_accuracy`` is the same greedy harness for callers that evaluate during training (the
curriculum experiment): it takes no sampler, so evaluation can never update the curriculum.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.config import Params, stage_cli
from tasks.config.evaluate import EvaluateConfig
from tasks.config.model import ModelConfig
from tasks.generation import Stops, sample, stop_conditions
from tasks.metrics import mean_over_sources, paired_bootstrap_diff, pass_at_k, per_source_means
from tasks.models import load_model, load_tokenizer, render_prompt
from tasks.rewards import zero_if_none
from tasks.rewards.executor import RewardExecutor
from tasks.tracking import stage_run


def generate_all(model, tokenizer, prompts: list[str], *, n: int, greedy: bool, seed: int, max_new_tokens: int,
                 temperature: float = 1.0, batch_size: int = 256, stops: Stops | None = None):
    """Completions (texts, lengths) for every prompt, n per prompt, in batches of ~batch_size rows.
    ``stops``: default every eos id of the model and tokenizer (tasks/generation.py)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    per_call = max(1, batch_size // n)
    texts, lengths = [], []
    for i in range(0, len(prompts), per_call):
        batch = prompts[i : i + per_call]
        s = sample(model, tokenizer, batch, n, max_new_tokens, temperature, greedy, gen, stops=stops)
        texts += s.texts
        lengths += s.completion_mask.sum(1).tolist()
    return texts, np.array(lengths, dtype=float)


def heldout_accuracy(model, tokenizer, rows: list[dict], executor, max_new_tokens: int,
                     batch_size: int = 128) -> tuple[float, dict[str, float]]:
    """Greedy accuracy, mean over sources, and per source. Takes no sampler: evaluation cannot touch
    the curriculum."""
    prompts = [render_prompt(tokenizer, r["prompt"]) for r in rows]
    texts, _ = generate_all(model, tokenizer, prompts, n=1, greedy=True, seed=0, max_new_tokens=max_new_tokens,
                            batch_size=batch_size)
    correct = np.array(zero_if_none(executor.score(texts, rows, ["accuracy"]).per_reward["accuracy"]))
    sources = np.array([r["source"] for r in rows])
    return mean_over_sources(correct, sources), per_source_means(correct, sources)


def evaluate_model(path: str, rows: list[dict], cfg: EvaluateConfig, executor: RewardExecutor,
                   model_cfg: ModelConfig | None = None) -> tuple[dict, np.ndarray]:
    """Metrics for one model; also returns the per-prompt greedy correctness (for paired tests).
    ``model_cfg`` gives the prompt rendering and stop strings (the same as SFT's and GRPO's)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_cfg = model_cfg or ModelConfig()
    tokenizer, model = load_tokenizer(path), load_model(path).to(device).eval()
    prompts = [render_prompt(tokenizer, r["prompt"], model_cfg.prompt) for r in rows]
    stops = stop_conditions(model, tokenizer, model_cfg.stop_strings)
    sources = np.array([r["source"] for r in rows])
    def generate(n: int, greedy: bool, seed: int):
        return generate_all(model, tokenizer, prompts, n=n, greedy=greedy, seed=seed, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, batch_size=cfg.batch_size, stops=stops)

    texts, lengths = generate(1, True, cfg.seed)
    scored = executor.score(texts, rows, ["accuracy", "format"])
    correct = np.array(zero_if_none(scored.per_reward["accuracy"]))
    fmt = np.array(zero_if_none(scored.per_reward["format"]))

    n = cfg.n_samples
    stexts, _ = generate(n, False, cfg.seed + 1)
    sscored = executor.score(stexts, [r for r in rows for _ in range(n)], ["accuracy"])
    c = (np.array(zero_if_none(sscored.per_reward["accuracy"])).reshape(-1, n) > 0.5).sum(1)
    passk = {k: np.array([pass_at_k(n, int(ci), k) for ci in c]) for k in cfg.ks}

    columns = {"accuracy": correct, **{f"pass@{k}": v for k, v in passk.items()}, "format_rate": fmt,
               "mean_length": lengths}
    means = {name: per_source_means(v, sources) for name, v in columns.items()}
    per_source = {str(s): {name: means[name][str(s)] for name in columns} | {"n": int((sources == s).sum())}
                  for s in np.unique(sources)}
    result = {
        "accuracy": mean_over_sources(correct, sources),
        **{f"pass@{k}": mean_over_sources(v, sources) for k, v in passk.items()},
        "format_rate": float(fmt.mean()),
        "mean_length": float(lengths.mean()),
        "reward_errors": scored.errors + sscored.errors,
        "reward_timeouts": scored.timeouts + sscored.timeouts,
        "per_source": per_source,
        "examples": [{"prompt": r["prompt"], "completion": t, "answer": r["answer"]} for r, t in zip(rows[:3], texts)],
    }
    return result, correct


def report(results: dict, cfg: EvaluateConfig) -> str:
    models = [m for m in cfg.models if m in results]
    sources = sorted(results[models[0]]["per_source"])
    lines = ["# Evaluation", "", "Greedy accuracy on the held-out split (mean over sources in the last row).", ""]
    lines += ["| source | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for s in sources:
        lines.append(f"| {s} | " + " | ".join(f"{results[m]['per_source'][s]['accuracy']:.3f}" for m in models) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{results[m]['accuracy']:.3f}**" for m in models) + " |")
    lines += ["", "| model | " + " | ".join(f"pass@{k}" for k in cfg.ks) + " | format rate | mean length |"]
    lines.append("|---|" + "---|" * (len(cfg.ks) + 2))
    for m in models:
        r = results[m]
        lines.append(f"| {m} | " + " | ".join(f"{r[f'pass@{k}']:.3f}" for k in cfg.ks) + f" | {r['format_rate']:.3f} | {r['mean_length']:.1f} |")
    if d := results.get("grpo_vs_sft"):
        lines += ["", f"GRPO - SFT accuracy: **{d['diff']:+.3f}** (95% CI {d['ci95_low']:+.3f} .. {d['ci95_high']:+.3f}, paired stratified bootstrap)."]
    return "\n".join(lines) + "\n"


def plot(results: dict, cfg: EvaluateConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in cfg.models if m in results]
    sources = sorted(results[models[0]]["per_source"])
    x = np.arange(len(sources))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for i, m in enumerate(models):
        vals = [results[m]["per_source"][s]["accuracy"] for s in sources]
        ax.bar(x + (i - (len(models) - 1) / 2) * 0.8 / len(models), vals, 0.8 / len(models), label=m)
    ax.set_xticks(x, sources)
    ax.set_ylim(0, 1)
    ax.set_ylabel("greedy accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(params: Params, run, model_dir: str, promote: bool) -> str:
    """Log the model with the transformers flavour, register it, set aliases."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(params.tracking.uri)
    # The model is a local folder: MLflow's model-card and licence look-ups on the hub would only
    # retry and time out. This process is offline unless the user said otherwise (tasks/hub.py).
    name = params.tracking.registered_model
    with mlflow.start_run(run_id=run.run_id):
        info = mlflow.transformers.log_model(
            transformers_model={"model": load_model(model_dir), "tokenizer": load_tokenizer(model_dir)},
            name="model",
            task="text-generation",
            registered_model_name=name,
            # Inferred requirements would pull torchvision; pin what loading actually needs.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "transformers", "tokenizers"],
        )
    client = MlflowClient(params.tracking.uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, "challenger", version)
    if promote:
        client.set_registered_model_alias(name, "champion", version)
    return version


def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv, {"data": "data/curated/eval.parquet"})
    cfg = params.evaluate
    rows = pd.read_parquet(args.data)[["id", "source", "prompt", "answer"]].to_dict("records")
    dirs = {"base": "models/base", "sft": "models/sft", "grpo": "models/grpo"}
    results, correct = {}, {}
    with stage_run(params.tracking, "evaluate", cfg.model_dump()) as run, RewardExecutor(
        cfg.reward_workers, cfg.reward_timeout_s
    ) as executor:
        run.log_input_files([args.data])
        for m in cfg.models:
            results[m], correct[m] = evaluate_model(dirs[m], rows, cfg, executor, params.model)
            print(f"evaluate: {m}: accuracy {results[m]['accuracy']:.3f}")
            run.log_metrics({f"{m}/accuracy": results[m]["accuracy"], **{f"{m}/{k.replace('@', '_at_')}": v for k, v in results[m].items() if k.startswith("pass@")}})
            run.log_metrics({f"{m}/accuracy/{s}": v["accuracy"] for s, v in results[m]["per_source"].items()})
        if "grpo" in correct and "sft" in correct:
            sources = np.array([r["source"] for r in rows])
            results["grpo_vs_sft"] = paired_bootstrap_diff(correct["grpo"], correct["sft"], sources, cfg.bootstrap_samples, cfg.seed)
            run.log_metrics({f"grpo_vs_sft/{k}": v for k, v in results["grpo_vs_sft"].items()})
        for d in ("metrics", "reports", "plots"):
            Path(d).mkdir(exist_ok=True)
        Path("metrics/eval.json").write_text(json.dumps(results, indent=2) + "\n")
        Path("reports/eval.md").write_text(report(results, cfg))
        plot(results, cfg, Path("reports/eval_per_source.png"))
        pd.DataFrame(
            [{"model": m, "source": s, "accuracy": v["accuracy"]} for m in cfg.models for s, v in results[m]["per_source"].items()]
        ).to_csv("plots/eval_per_source.csv", index=False)
        for f in ("metrics/eval.json", "reports/eval.md", "reports/eval_per_source.png"):
            run.log_artifact(f)
        if cfg.register_model and "grpo" in results:
            promote = results.get("grpo_vs_sft", {}).get("ci95_low", -1) > 0
            version = register(params, run, dirs["grpo"], promote)
            print(f"evaluate: registered {params.tracking.registered_model} v{version} (champion: {promote})")
    print(report(results, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
