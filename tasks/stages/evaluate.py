"""Evaluation (`python -m tasks.stages.evaluate`): base, SFT, GRPO and the current champion.

The eval sets are the curated held-out split and any ``evaluate.benchmarks`` (GSM8K, MATH,
MATH-500, AIME-style, MBPP files or pinned hub ids; ``tasks/evaluation/benchmarks.py``). For
every model the harness (``tasks/evaluation/harness.py``) writes one greedy and ``n_samples``
sampled completions per item to ``reports/samples/<model>.jsonl`` and keeps the verdicts;
``tasks/evaluation/summary.py`` turns them into greedy accuracy, mean@n, pass@k, maj@k, format
and truncation rates, mean/p95 length, reward errors/timeouts, each with a bootstrap 95% CI, per
source and overall. Every model's result carries its frozen eval spec and the spec's hash
(``tasks/evaluation/spec.py``); every pair of models is compared (paired bootstrap on the same
items) only when the hashes match, else the comparison records why not.

The current ``champion`` (``models:/<name>@champion``) is evaluated in the same run on the same
items, so the gate (``tasks/evaluation/gate.py``) compares like with like: the GRPO model is
registered as ``challenger`` and becomes ``champion`` only when its paired CI against the champion
(or SFT when there is none) is above ``evaluate.gate.margin``.

Outputs: ``metrics/eval.json`` (per model the metrics, ``ci95``, ``per_source``, ``spec``,
``spec_hash``; ``grpo_vs_sft``; ``comparisons``; ``gate``), ``reports/eval.md``,
``reports/eval_per_source.png``, ``reports/eval_headline.png``, ``plots/eval_per_source.csv``,
``reports/samples/``; all logged to MLflow.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.config import Params, stage_cli
from tasks.config.evaluate import EvaluateConfig
from tasks.config.model import ModelConfig
from tasks.data.fingerprint import local_digest
from tasks.evaluation import gate
from tasks.evaluation.benchmarks import load_eval_sets
from tasks.evaluation.harness import ModelEval, generate_all, heldout_accuracy, run_model
from tasks.evaluation.report import plot, report
from tasks.evaluation.spec import build_spec, digest, why_not_comparable
from tasks.evaluation.summary import summarise
from tasks.metrics import paired_bootstrap_diff
from tasks.models import load_model, load_tokenizer
from tasks.rewards.executor import RewardExecutor
from tasks.tracking import lineage_tags, stage_run

__all__ = ["evaluate_model", "generate_all", "heldout_accuracy", "main"]
DIRS = {"base": "models/base", "sft": "models/sft", "grpo": "models/grpo"}


def evaluate_model(
    name: str,
    path: str,
    rows: list[dict],
    data: list[dict],
    cfg: EvaluateConfig,
    executor: RewardExecutor,
    model_cfg: ModelConfig | None = None,
) -> tuple[dict, ModelEval]:
    """One model's result (metrics, CIs, spec, spec hash) and its in-memory verdicts. ``model_cfg``
    gives the prompt rendering and stop strings (the same as SFT's and GRPO's)."""
    model_cfg = model_cfg or ModelConfig()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, model = load_tokenizer(path), load_model(path).to(device).eval()
    ev = run_model(
        name, model, tokenizer, rows, cfg, executor, Path(cfg.samples_dir) / f"{name}.jsonl", model_cfg
    )
    sources = np.array([r["source"] for r in rows])
    result = summarise(ev, sources, cfg.ks, cfg.bootstrap_samples, cfg.seed)
    spec = build_spec(data, tokenizer, model, cfg, model_cfg)
    return result | {"spec": spec, "spec_hash": digest(spec)}, ev


def compare(results: dict, evals: dict[str, ModelEval], sources: np.ndarray, cfg: EvaluateConfig) -> dict:
    """Every pair (later model minus earlier), paired over the same items, or why not."""
    out: dict[str, dict] = {}
    for a, b in itertools.combinations(list(evals), 2):
        key = f"{b}_vs_{a}"
        if why := why_not_comparable(results[b]["spec"], results[a]["spec"]):
            out[key] = {"refused": f"eval spec differs ({why})"}
            continue
        out[key] = {
            "accuracy": paired_bootstrap_diff(
                evals[b].correct, evals[a].correct, sources, cfg.bootstrap_samples, cfg.seed
            ),
            "mean@n": paired_bootstrap_diff(
                evals[b].sample_correct, evals[a].sample_correct, sources, cfg.bootstrap_samples, cfg.seed
            ),
        }
    return out


def gate_and_register(params: Params, run, results: dict, comparisons: dict, data: list[dict]) -> dict:
    cfg = params.evaluate
    against = "champion" if "champion" in results else "sft"
    pair = comparisons.get(f"grpo_vs_{against}", {})
    diff = pair.get("accuracy")
    decision = gate.decide(results["grpo"], results.get(against), against, diff, cfg.gate.margin)
    if "refused" in pair:
        decision = {
            "decision": "refused",
            "promote": False,
            "against": against,
            "reason": f"not comparable with {against}: {pair['refused']}",
        }
    tags = {
        **lineage_tags(),
        **gate.decision_tags(decision, diff, cfg.gate.margin),
        "eval.spec_hash": results["grpo"]["spec_hash"],
        "model.digest": local_digest(DIRS["grpo"])["md5"],
        **{f"data.{d['label']}": str(d.get("md5") or d.get("resolved")) for d in data},
    }
    uri, name = params.tracking.uri, params.tracking.registered_model
    decision["version"] = gate.register(uri, name, run.run_id, DIRS["grpo"], tags, decision["promote"])
    print(
        f"evaluate: registered {name} v{decision['version']}: {decision['decision']} ({decision['reason']})"
    )
    return decision


def write_outputs(results: dict, comparisons: dict, decision: dict | None, run) -> None:
    for d in ("metrics", "reports", "plots"):
        Path(d).mkdir(exist_ok=True)
    Path("metrics/eval.json").write_text(json.dumps(results, indent=2) + "\n")
    Path("reports/eval.md").write_text(report(results, comparisons, decision))
    pngs = plot(results, Path("reports"))
    models = [m for m in results if isinstance(results[m], dict) and "spec_hash" in results[m]]
    pd.DataFrame(
        [
            {"model": m, "source": s, "accuracy": v["accuracy"]}
            for m in models
            for s, v in results[m]["per_source"].items()
        ]
    ).to_csv("plots/eval_per_source.csv", index=False)
    for f in ("metrics/eval.json", "reports/eval.md", *pngs):
        run.log_artifact(f)


def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv, {"data": "data/curated/eval.parquet"})
    cfg = params.evaluate
    rows, data, drops = load_eval_sets(args.data if cfg.heldout else None, cfg.benchmarks)
    for d in drops[:20]:
        print(f"evaluate: dropped {d['where']}: {d['reason']}", file=sys.stderr)
    sources = np.array([r["source"] for r in rows])
    dirs = {m: DIRS[m] for m in cfg.models}
    champ = None
    if cfg.register_model and cfg.gate.compare_champion and "grpo" in dirs:
        if gate.champion_version(params.tracking.uri, params.tracking.registered_model) is not None:
            champ = gate.download_champion(params.tracking.uri, params.tracking.registered_model)
            # before grpo, so the pair is "grpo_vs_champion" (challenger minus incumbent)
            dirs = {
                **{m: p for m, p in dirs.items() if m != "grpo"},
                "champion": str(champ),
                "grpo": dirs["grpo"],
            }
    shutil.rmtree(cfg.samples_dir, ignore_errors=True)
    results: dict = {}
    evals: dict[str, ModelEval] = {}
    with (
        stage_run(params.tracking, "evaluate", cfg.model_dump()) as run,
        RewardExecutor(cfg.reward_workers, cfg.reward_timeout_s) as executor,
    ):
        run.log_input_files([args.data] if cfg.heldout else [])
        for m, path in dirs.items():
            results[m], evals[m] = evaluate_model(m, path, rows, data, cfg, executor, params.model)
            print(f"evaluate: {m}: accuracy {results[m]['accuracy']:.3f} spec {results[m]['spec_hash']}")
            run.log_metrics(
                {
                    f"{m}/{k.replace('@', '_at_')}": v
                    for k, v in results[m].items()
                    if isinstance(v, (int, float))
                }
            )
            run.log_metrics({f"{m}/accuracy/{s}": v["accuracy"] for s, v in results[m]["per_source"].items()})
        comparisons = compare(results, evals, sources, cfg)
        if "accuracy" in comparisons.get("grpo_vs_sft", {}):
            results["grpo_vs_sft"] = comparisons["grpo_vs_sft"]["accuracy"]
            run.log_metrics({f"grpo_vs_sft/{k}": v for k, v in results["grpo_vs_sft"].items()})
        results["comparisons"] = comparisons
        decision = (
            gate_and_register(params, run, results, comparisons, data)
            if cfg.register_model and "grpo" in results
            else None
        )
        if decision:
            results["gate"] = decision
        write_outputs(results, comparisons, decision, run)
        run.log_artifacts(cfg.samples_dir, "samples")
    if champ is not None:
        shutil.rmtree(champ, ignore_errors=True)
    print(report(results, comparisons, decision))
    return 0


if __name__ == "__main__":
    sys.exit(main())
