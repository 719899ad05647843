"""Every project module a stage runs is a dependency of that stage in dvc.yaml.

A missing code dependency is a silent reproducibility bug: the code changes, `dvc repro` says the
stage "didn't change", and the recorded outputs no longer match the code. This walks each stage's
entry module's imports (statically, through ``tasks.*`` only) and checks every file reached lies
under one of the stage's deps. ``tasks/tracking.py`` is exempt: it only reports to MLflow and
cannot change an output, and making it a dep would re-run every stage when logging changes.
Only module-level imports are followed: ``tasks/config/grpo.py`` imports the reward registry inside
a validator, to check the *names* in ``grpo.rewards``, which cannot change another stage's output.
``tasks/config/__init__.py`` is a dependency of every stage, but its imports are not followed: it
imports every section's model to validate the whole file, and another section's model cannot
change this stage's outputs. A stage reaches its own section's model by importing it directly
(``from tasks.config.sft import SFTConfig``), so that module is followed like any other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# tasks/__init__.py only runs tasks/hub.py's configure (the process's hub access: whether a load may
# reach the hub, never what it loads); base, which resolves hub models with tasks/hub.py, lists it.
# tasks/spool.py delivers tracking records in the background (part of tracking, same reason).
EXEMPT = {"tasks/tracking.py", "tasks/spool.py", "tasks/__init__.py", "tasks/hub.py"}
NOT_FOLLOWED = {ROOT / "tasks/config/__init__.py"}  # validates every section (see the docstring)


def module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_imports(path: Path, seen: set[Path]) -> set[Path]:
    """Files of ``tasks`` modules imported (transitively) by ``path``."""
    if path in seen:
        return seen
    seen.add(path)
    if path in NOT_FOLLOWED:
        return seen
    for node in ast.parse(path.read_text()).body:  # module level only (see the docstring)
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] == "tasks" and (f := module_file(n)) is not None:
                project_imports(f, seen)
    return seen


def test_every_stage_depends_on_the_code_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        # `python -m tasks.x` or `sh tasks/stage.sh tasks.x` (the interpreter-finding wrapper)
        module = re.search(r"(?:-m|stage\.sh)\s+(\S+)", stage["cmd"]).group(1)
        entry = module_file(module) or module_file(module + ".__main__")
        assert entry is not None, f"{name}: cannot find {module}"
        deps = [str(d) for d in stage.get("deps", [])]
        files = {str(f.relative_to(ROOT)) for f in project_imports(entry, set())}
        uncovered = {f for f in files - EXEMPT if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)}
        if uncovered:
            missing[name] = sorted(uncovered)
    assert missing == {}, f"stages run code that dvc.yaml does not list as a dependency: {missing}"
