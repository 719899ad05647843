"""The evaluation report: markdown for people (Prefect artifact, DVC, MLflow) and PNG plots.

One table of every evaluated model (base, SFT, GRPO and the current champion when there is one)
with each headline metric and its 95% CI, one of greedy accuracy per source, the paired
differences (or why a pair was not compared), the eval spec hash of each model and the gate's
decision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def ordered(results: dict) -> list[str]:
    return [m for m in results if isinstance(results[m], dict) and "spec_hash" in results[m]]


def headline_names(result: dict) -> list[str]:
    keys = ["accuracy"] + [k for k in result["ci95"] if k.startswith(("mean@", "pass@", "maj@"))]
    return keys + ["format_rate", "truncation_rate", "mean_length", "p95_length"]


def _cell(r: dict, k: str) -> str:
    lo, hi = r["ci95"][k]
    fmt = ".1f" if "length" in k else ".3f"
    return f"{r[k]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def report(results: dict, comparisons: dict, decision: dict | None) -> str:
    models = ordered(results)
    names = headline_names(results[models[0]])
    lines = [
        "# Evaluation",
        "",
        "Each cell: value [95% CI]. Greedy accuracy, mean@n, pass@k and maj@k are means over "
        "sources; rates and lengths (greedy, tokens) are pooled over items.",
        "",
    ]
    lines += ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {m} | " + " | ".join(_cell(results[m], k) for k in names) + " |" for m in models]
    sources = sorted(results[models[0]]["per_source"])
    lines += ["", "Greedy accuracy per source (mean over sources in the last row).", ""]
    lines += ["| source | n | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for s in sources:
        cells = [
            f"{results[m]['per_source'][s]['accuracy']:.3f}" for m in models if s in results[m]["per_source"]
        ]
        lines.append(f"| {s} | {results[models[0]]['per_source'][s]['n']} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{results[m]['accuracy']:.3f}**" for m in models) + " |")
    lines += [
        "",
        "Paired differences on the same items (stratified bootstrap; mean@n also over samples).",
        "",
    ]
    lines += ["| comparison | accuracy | mean@n |", "|---|---|---|"]
    for pair, c in comparisons.items():
        if "refused" in c:
            lines.append(f"| {pair} | not compared: {c['refused']} | |")
            continue
        cells = [
            f"{d['diff']:+.3f} [{d['ci95_low']:+.3f}, {d['ci95_high']:+.3f}]"
            for d in (c["accuracy"], c["mean@n"])
        ]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    lines += ["", "Eval spec hash: " + ", ".join(f"{m} `{results[m]['spec_hash']}`" for m in models) + "."]
    errors = {m: (results[m]["reward_errors"], results[m]["reward_timeouts"]) for m in models}
    lines.append(
        "Reward errors / timeouts: " + ", ".join(f"{m} {e}/{t}" for m, (e, t) in errors.items()) + "."
    )
    if decision:
        lines += ["", f"Registry gate: **{decision['decision']}** ({decision['reason']})."]
    return "\n".join(lines) + "\n"


def plot(results: dict, out_dir: Path) -> list[Path]:
    """``eval_per_source.png`` (greedy accuracy per source, CI bars) and ``eval_headline.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = ordered(results)
    sources = sorted(results[models[0]]["per_source"])
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(8, len(sources)), 3.5))
    for i, m in enumerate(models):
        per = results[m]["per_source"]
        vals = np.array([per[s]["accuracy"] for s in sources])
        ci = np.array([per[s]["accuracy_ci95"] for s in sources])
        ax.bar(
            np.arange(len(sources)) + (i - (len(models) - 1) / 2) * width,
            vals,
            width,
            label=m,
            yerr=np.abs(ci.T - vals),
            capsize=2,
        )
    ax.set_xticks(np.arange(len(sources)), sources)
    ax.set_ylim(0, 1)
    ax.set_ylabel("greedy accuracy")
    ax.legend()
    fig.tight_layout()
    paths = [out_dir / "eval_per_source.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    names = [k for k in headline_names(results[models[0]]) if "length" not in k]
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 1.2), 3.5))
    for i, m in enumerate(models):
        vals = np.array([results[m][k] for k in names])
        ci = np.array([results[m]["ci95"][k] for k in names])
        ax.bar(
            np.arange(len(names)) + (i - (len(models) - 1) / 2) * width,
            vals,
            width,
            label=m,
            yerr=np.abs(ci.T - vals),
            capsize=2,
        )
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "eval_headline.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
