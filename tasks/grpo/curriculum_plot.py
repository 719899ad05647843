"""Offline PNG of the curriculum: each source's sampling probability over training (stacked area).

DVC's HTML plots load their JavaScript from a CDN, so the stage also writes a PNG that opens
anywhere; the same file is logged to the MLflow run and shown as a Prefect artifact.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_probabilities(probs: pd.DataFrame, out: Path, title: str = "") -> Path:
    """``probs`` has columns step, source, probability (long format, as plots/curriculum.csv)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in workers and CI
    import matplotlib.pyplot as plt

    wide = probs.pivot_table(
        index="step", columns="source", values="probability", aggfunc="mean"
    ).sort_index()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    if not wide.empty:
        ax.stackplot(
            wide.index, [wide[c].to_numpy() for c in wide.columns], labels=list(wide.columns), alpha=0.9
        )
        ax.set_xlim(wide.index.min(), max(wide.index.max(), wide.index.min() + 1))
    ax.set_ylim(0, 1)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("sampling probability")
    ax.set_title(title or "curriculum")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
