"""DVC's own view of the pipeline: its stage graph, each stage's status, an experiment's stages.

The flow keeps no copy of the DAG's logic and reads none of DVC's English output:

- :func:`stage_order` is a topological order of DVC's stage graph (``Repo.index.graph``, the graph
  ``dvc dag`` draws: an edge A -> B when A depends on an output of B); ties keep ``dvc.yaml``'s
  order, so the walk is deterministic.
- :func:`stage_status` is ``Repo.status`` for one stage (``dvc status <stage>``): an empty answer
  means the stage is up to date, so the flow skips it without even starting ``dvc repro``.
- :func:`experiment_stages` compares the ``dvc.lock`` an experiment committed with the baseline's:
  a stage whose lock entry changed ran in the experiment, the others were reused.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml


class DagError(ValueError):
    """DVC cannot give a stage order (no dvc.yaml, no stages, a broken file, an unknown stage)."""


def _repo(root: str | Path):
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        raise DagError(f"{root / 'dvc.yaml'}: file not found")
    try:
        return Repo(str(root))
    except DvcException as e:
        raise DagError(f"{root}: not a DVC repository ({e})") from None


def stage_order(root: str | Path = ".") -> list[str]:
    """The stages of the DVC project at ``root`` in topological order (ties keep dvc.yaml's order)."""
    import networkx as nx
    from dvc.exceptions import DvcException

    with _repo(root) as repo:
        try:
            stages = list(repo.index.stages)
            graph = repo.index.graph
        except DvcException as e:
            raise DagError(f"{Path(root) / 'dvc.yaml'}: {e}") from None
        if not stages:
            raise DagError(f"{Path(root) / 'dvc.yaml'}: no stages")
        position = {s: i for i, s in enumerate(stages)}
        # DVC's edges point from a stage to what it depends on; run dependencies first.
        order = nx.lexicographical_topological_sort(
            graph.reverse(copy=True), key=lambda s: position.get(s, 0)
        )
        return [s.name for s in order]


def stage_status(root: str | Path, stage: str) -> dict[str, Any]:
    """DVC's status of one stage (``{}`` when up to date); raises DagError for an unknown stage."""
    from dvc.exceptions import DvcException

    with _repo(root) as repo:
        names = [s.name for s in repo.index.stages]
        if stage not in names:
            raise DagError(f"unknown stage {stage!r}; dvc.yaml has {names}")
        try:
            # a target is resolved against the process's cwd: name the file absolutely
            found = repo.status(targets=[f"{Path(root).resolve() / 'dvc.yaml'}:{stage}"])
        except DvcException as e:
            raise DagError(f"dvc status {stage}: {e}") from None
        return {k.rsplit(":", 1)[-1]: v for k, v in found.items()}  # keyed by the stage's name


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def experiment_ref(root: str | Path, name: str) -> str | None:
    """The git ref DVC stored experiment ``name`` under (``refs/exps/...``), or None."""
    refs = _git(Path(root), "for-each-ref", "--format=%(refname)", "refs/exps").split()
    # refs/exps/<baseline sha split 2/38>/<name>; DVC's executor and queue refs live elsewhere under refs/exps
    found = [r for r in refs if re.fullmatch(rf"refs/exps/[0-9a-f]{{2}}/[0-9a-f]{{38}}/{re.escape(name)}", r)]
    return found[-1] if found else None


def experiment_stages(root: str | Path, ref: str, order: list[str]) -> dict[str, str]:
    """``{stage: 'ran' | 'skipped'}``: did the experiment's dvc.lock entry differ from its baseline's?"""
    root = Path(root)

    def lock(rev: str) -> dict[str, Any]:
        try:
            return (yaml.safe_load(_git(root, "show", f"{rev}:dvc.lock")) or {}).get("stages", {})
        except subprocess.CalledProcessError:  # the baseline has no dvc.lock yet
            return {}

    ours, base = lock(ref), lock(f"{ref}^")
    return {s: ("ran" if ours.get(s) != base.get(s) else "skipped") for s in order if s in ours}
