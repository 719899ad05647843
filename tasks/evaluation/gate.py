"""The registry gate: every GRPO model is a ``challenger``; only a real improvement is ``champion``.

Rule: the challenger is compared with the current champion (evaluated in the same run, on the
same items, under the same spec); when there is no champion yet, with SFT. It is promoted only
when both results share a spec hash and the paired bootstrap 95% CI of its greedy-accuracy
difference has its lower bound above ``evaluate.gate.margin``. Otherwise the champion alias stays
where it is. The decision (``promoted`` / ``kept`` / ``refused``) and its reason are model-version
tags, beside the lineage tags: git commit, flow-run URL, the eval spec hash, the eval data
digests and the model folder's digest.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from tasks.evaluation.spec import why_not_comparable

CHAMPION, CHALLENGER = "champion", "challenger"


def decide(challenger: dict, incumbent: dict | None, against: str, diff: dict | None, margin: float) -> dict:
    """``{decision, promote, against, reason}`` for a challenger result against the incumbent's."""
    if incumbent is None or diff is None:
        return {
            "decision": "kept",
            "promote": False,
            "against": against,
            "reason": f"no {against} result in this run to compare with",
        }
    if why := why_not_comparable(challenger["spec"], incumbent["spec"]):
        return {
            "decision": "refused",
            "promote": False,
            "against": against,
            "reason": f"not comparable with {against}: eval spec differs ({why})",
        }
    lo, hi, d = diff["ci95_low"], diff["ci95_high"], diff["diff"]
    ci = f"accuracy {d:+.4f} vs {against} (95% CI {lo:+.4f} .. {hi:+.4f})"
    if lo > margin:
        return {
            "decision": "promoted",
            "promote": True,
            "against": against,
            "reason": f"{ci}: lower bound above the margin {margin}",
        }
    return {
        "decision": "kept",
        "promote": False,
        "against": against,
        "reason": f"{ci}: lower bound not above the margin {margin}",
    }


def decision_tags(decision: dict, diff: dict | None, margin: float) -> dict[str, str]:
    tags = {f"gate.{k}": str(decision[k]) for k in ("decision", "against", "reason")}
    tags["gate.margin"] = str(margin)
    for k, v in (diff or {}).items():
        tags[f"gate.{k}"] = f"{v:.6f}"
    return tags


def _mlflow(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow


@contextlib.contextmanager
def _hub_offline():
    """The models are local folders: MLflow's model-card and licence look-ups on the hub would only
    retry and time out (minutes offline). huggingface_hub reads HF_HUB_OFFLINE once, at import, so
    the flag is set on its constants for the duration."""
    from huggingface_hub import constants

    before, env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"] = True, "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def champion_version(uri: str, name: str):
    """The model version the ``champion`` alias points at, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def download_champion(uri: str, name: str, out: str | Path | None = None) -> Path:
    """``models:/<name>@champion`` saved as a plain HF folder (what ``load_model`` reads)."""
    mlflow = _mlflow(uri)
    with _hub_offline():
        parts = mlflow.transformers.load_model(f"models:/{name}@{CHAMPION}", return_type="components")
    out = Path(out or tempfile.mkdtemp(prefix="r1flow-champion-"))
    parts["model"].save_pretrained(out)
    parts["tokenizer"].save_pretrained(out)
    return out


def register(uri: str, name: str, run_id: str, model_dir: str, tags: dict[str, str], promote: bool) -> str:
    """Log the model (transformers flavour) in ``run_id``, register it as ``challenger`` with ``tags``,
    and move ``champion`` to it when ``promote``. Returns the version."""
    import torch
    from mlflow import MlflowClient

    from tasks.models import load_model, load_tokenizer

    mlflow = _mlflow(uri)
    with mlflow.start_run(run_id=run_id), _hub_offline():
        info = mlflow.transformers.log_model(
            transformers_model={"model": load_model(model_dir), "tokenizer": load_tokenizer(model_dir)},
            name="model",
            task="text-generation",
            registered_model_name=name,
            # Inferred requirements would pull torchvision; pin what loading actually needs.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "transformers", "tokenizers"],
        )
    client = MlflowClient(uri)
    version = str(info.registered_model_version)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v[:5000])
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    return version
