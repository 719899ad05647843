"""What a person reads in the Prefect UI after a run: artifacts built from the stages' files.

Per run: the evaluation report and its headline numbers (a table), the dataset card, a link to the
MLflow parent run, and the SFT/GRPO training curves and the GRPO curriculum as PNGs. Prefect's
image artifact takes a URL, so PNGs are inlined as ``data:`` URIs inside a markdown artifact:
they render offline, with no file server.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact


def numeric_leaves(d: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += numeric_leaves(v, f"{prefix}{k}.")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            rows.append({"metric": f"{prefix}{k}", "value": round(float(v), 4)})
    return rows


def _png(data: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"


def training_curves(root: Path) -> bytes | None:
    """SFT loss and GRPO reward per step (``plots/sft_loss.csv``, ``plots/grpo_train.csv``) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    panels = [
        (root / "plots/sft_loss.csv", "loss", "SFT loss"),
        (root / "plots/grpo_train.csv", "reward_mean", "GRPO reward"),
    ]
    panels = [p for p in panels if p[0].is_file()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2), squeeze=False)
    for ax, (path, column, title) in zip(axes[0], panels):
        df = pd.read_csv(path)
        ax.plot(df["step"], df[column])
        ax.set(title=title, xlabel="step", ylabel=column)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def mlflow_link(tracking_uri: str, parent_run_id: str, experiment: str) -> None:
    if tracking_uri.startswith(("http://", "https://")):
        create_link_artifact(
            f"{tracking_uri.rstrip('/')}/#/experiments/search?searchFilter=run_id%3D%27{parent_run_id}%27",
            link_text=f"MLflow parent run {parent_run_id}",
            key="mlflow-run",
        )
    else:  # a local store has no URL until `make ui` serves it
        create_markdown_artifact(
            f"# MLflow parent run\n\nRun `{parent_run_id}` in experiment `{experiment}` of `{tracking_uri}`.\n\n"
            "Open it with `make ui` (MLflow UI on http://127.0.0.1:5000).\n",
            key="mlflow-run",
        )


def publish(root: Path) -> None:
    """The artifacts from the files a finished pipeline left in ``root``."""
    if (report := root / "reports" / "eval.md").is_file():
        create_markdown_artifact(report.read_text(), key="eval-report", description="reports/eval.md")
    if (metrics := root / "metrics" / "eval.json").is_file():
        if rows := numeric_leaves(json.loads(metrics.read_text()))[:100]:
            create_table_artifact(rows, key="eval-metrics", description="metrics/eval.json")
    if (card := root / "data" / "curated" / "card.md").is_file():
        create_markdown_artifact(card.read_text(), key="dataset-card", description="data/curated/card.md")
    if (curves := training_curves(root)) is not None:
        create_markdown_artifact(
            f"# Training curves\n\n{_png(curves, 'training curves')}\n",
            key="training-curves",
            description="plots/sft_loss.csv, plots/grpo_train.csv",
        )
    if (curriculum := root / "plots" / "curriculum.png").is_file():
        create_markdown_artifact(
            f"# GRPO curriculum\n\nSampling probability of each source per step "
            f"(`plots/curriculum.csv`).\n\n{_png(curriculum.read_bytes(), 'curriculum')}\n",
            key="grpo-curriculum",
            description="plots/curriculum.png",
        )
