"""Hub access for the whole process, and resolving a hub model to a commit at ``base`` time.

``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, when it is first imported (transformers,
datasets and ``mlflow.transformers`` all import it), so a stage that sets it later changes
nothing. :func:`configure` therefore runs from ``tasks/__init__.py``, before any ``tasks`` module
can import a hub library, and decides once per process:

- the user's own ``HF_HUB_OFFLINE`` (any value, ``0`` included) is kept as it is;
- otherwise ``curate`` and ``base`` keep hub access (a hub dataset; resolving a model's revision and
  fetching its files), while ``sft``, ``grpo`` and ``evaluate`` go offline: everything they load is
  in ``models/`` or was put in the local hub cache by ``base``, and offline MLflow skips the
  model-card look-ups that otherwise retry an unreachable hub for ~45 s;
- any other process (tests, notebooks, benchmarks) is left alone. Child processes (torchrun
  workers) inherit the decision through the environment.

:func:`fetch` is what ``base`` runs for a hub id: online, the revision (branch, tag or commit) is
resolved to its commit sha and that snapshot is downloaded into the hub cache (not into
``models/base``: the DVC cache never holds a copy of a hub model); offline or with the hub
unreachable, the snapshot must already be in the cache. Either way the result is a commit sha that
every later stage loads, so a moving branch cannot change a run halfway. A model that is nowhere
raises :class:`ModelNotFound` with one message naming the id, the revision and the ways out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OFFLINE_ENV = "HF_HUB_OFFLINE"
HUB_STAGES = ("tasks.stages.curate", "tasks.stages.base")
OFFLINE_STAGES = ("tasks.stages.sft", "tasks.stages.grpo", "tasks.stages.evaluate")
# Files a causal LM needs; *.bin only when the repo has no safetensors (see fetch).
FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


class ModelNotFound(RuntimeError):
    """The configured model is neither a local folder, nor in the hub cache, nor on the hub."""


def entry_module(argv: list[str]) -> str | None:
    """The module a ``python -m X`` command line runs (None for scripts, pytest, ...)."""
    for i, a in enumerate(argv[:-1]):
        if a == "-m":
            return argv[i + 1]
    return None


def configure(argv: list[str] | None = None, environ=os.environ) -> str:
    """Set hub access for this process; returns "user", "online", "offline" or "untouched"."""
    if OFFLINE_ENV in environ:
        return "user"
    module = entry_module(list(sys.orig_argv if argv is None else argv))
    if module in HUB_STAGES:
        return "online"
    if module in OFFLINE_STAGES:
        environ[OFFLINE_ENV] = "1"
        return "offline"
    return "untouched"


def looks_local(name_or_path: str) -> bool:
    """A path rather than a hub id ('org/name' or 'name'): absolute, ./, ../, ~ or deeper than 2."""
    return name_or_path.startswith(("/", "./", "../", "~", "\\")) or name_or_path.count("/") > 1


def _not_found(
    repo_id: str, revision: str | None, why: str, online: str = f"unset {OFFLINE_ENV}"
) -> ModelNotFound:
    rev = revision or "main"
    return ModelNotFound(
        f"model {repo_id!r} (revision {rev!r}) not found: {why}. Either download it "
        f"(`hf download {repo_id} --revision {rev}`, online), pin a local folder "
        f"(model.name_or_path and model.watch: /path/to/model), or go online ({online})."
    )


def _resolve_online(repo_id: str, revision: str | None) -> str | None:
    """The commit sha of ``revision`` and its snapshot in the cache; None if the hub is unreachable."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=False)
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as e:
        kind = type(e).__name__.replace("Error", "")
        raise _not_found(
            repo_id,
            revision,
            f"the hub answered {kind} (check the id and revision; "
            "a gated or private model needs `hf auth login`)",
        ) from None
    except Exception as e:  # connection refused, DNS, timeout: fall back to the cache
        print(f"base: hub unreachable ({type(e).__name__}); looking in the local hub cache", file=sys.stderr)
        return None
    names = [s.rfilename for s in info.siblings or []]
    patterns = FILES + ([] if any(n.endswith(".safetensors") for n in names) else ["*.bin"])
    snapshot_download(repo_id, revision=info.sha, allow_patterns=patterns)
    return info.sha


def fetch(repo_id: str, revision: str | None) -> str:
    """Resolve ``repo_id@revision`` to a commit sha with its files in the hub cache (see module doc)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not constants.HF_HUB_OFFLINE and (sha := _resolve_online(repo_id, revision)) is not None:
        return sha
    try:
        path = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            why = (
                f"not in the local hub cache and the hub is off ({OFFLINE_ENV}={os.environ.get(OFFLINE_ENV)})"
            )
            raise _not_found(repo_id, revision, why) from None
        why = "not in the local hub cache and the hub is unreachable"
        raise _not_found(repo_id, revision, why, "check the network or HF_ENDPOINT") from None
    if not (Path(path) / "config.json").is_file():
        raise _not_found(repo_id, revision, f"the cached snapshot {path} has no config.json")
    return Path(path).name  # the cache stores snapshots under their commit sha
