"""Where a stage may write: output folders are checked before anything is deleted or overwritten.

Output folders (``*.out_dir``) arrive from ``params.yaml``, ``-S`` overrides and the Prefect form,
so a typo or a hostile value must never name a folder the stage would wipe. Two checks:

- :func:`check_out_dir` is lexical and runs when the config is validated (``load_params``), so a
  bad value stops every entry point before any stage starts: the path must be relative, name a
  folder below the project root (not the root itself, no ``..`` out of it) and stay out of
  ``.git`` and ``.dvc``.
- :func:`prepare_out_dir` runs in the stage, against the file system, before the stage deletes or
  writes: the resolved path (symlinks followed) must still lie inside the project, and a folder
  that exists may hold only what the stage itself writes (``owned`` name patterns, e.g. a model
  folder's ``*.json``/``*.safetensors``). Anything else in it -- a source file, a sub-folder --
  means the folder is not the stage's previous output, and the stage stops naming that file.

The project root is the stage's working directory: DVC runs every stage there, and the stages'
relative defaults (``params.yaml``, ``data/curated``) already assume it.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import AfterValidator

# What the stages write into their folders (and so may find there from a previous run).
MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.jinja", "*.tiktoken")
CURATED_FILES = ("*.parquet", "card.md", ".*.tmp")  # .x.tmp: a write cut short
PROTECTED = (".git", ".dvc")


class UnsafePath(ValueError):
    """An output folder the stage must not delete or write into; the message names key and file."""


def check_out_dir(value: str) -> str:
    """Lexical check of an output folder (a pydantic ``AfterValidator``); returns it unchanged."""
    if not value.strip():
        raise ValueError("must name a folder inside the project (got an empty path)")
    p = PurePosixPath(value.replace(os.sep, "/"))
    if p.is_absolute():
        raise ValueError(f"must be a path relative to the project root, not the absolute path {value!r}")
    parts = PurePosixPath(os.path.normpath(str(p))).parts
    if parts in ((), (".",)):
        raise ValueError(f"{value!r} is the project root; name a folder inside it (e.g. models/sft)")
    if parts[0] == "..":
        raise ValueError(f"{value!r} leaves the project ('..'); outputs stay inside it")
    if bad := [q for q in parts if q in PROTECTED]:
        raise ValueError(f"{value!r} lies inside {bad[0]}/, which holds the project's version history")
    return value


OutDir = Annotated[str, AfterValidator(check_out_dir)]


def _owned(name: str, owned: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in owned)


def prepare_out_dir(
    path: str | Path, owned: Iterable[str], key: str, root: str | Path | None = None, clear: bool = False
) -> Path:
    """Check ``path`` on disk (see the module docstring), optionally empty it; returns it resolved.

    Raises :class:`UnsafePath` naming ``key`` before anything is touched.
    """
    owned = tuple(owned)
    try:
        check_out_dir(str(path))
    except ValueError as e:
        raise UnsafePath(f"{key}: {e}") from None
    base = Path(root or Path.cwd()).resolve()
    target = (base / path).resolve()
    if target == base or base not in target.parents:
        raise UnsafePath(f"{key}: {path!r} resolves to {target}, outside the project {base} (a symlink?)")
    inside = target.relative_to(base).parts
    if bad := [q for q in inside if q in PROTECTED]:
        raise UnsafePath(f"{key}: {path!r} resolves into {bad[0]}/ ({target})")
    if target.exists():
        if not target.is_dir():
            raise UnsafePath(f"{key}: {target} is a file, not an output folder")
        foreign = sorted(f for f in target.iterdir() if not (f.is_file() and _owned(f.name, owned)))
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise UnsafePath(
                f"{key}: {target} holds {foreign[0].name}{more}, which this stage does not write; it is not "
                f"the stage's previous output. Name a new or empty folder, or move that content away."
            )
    if clear and target.exists():
        shutil.rmtree(target)
    return target


def stage_out_dirs(params) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(key, folder, owned patterns)`` of every stage output folder that ``params`` names."""
    return [
        ("curate.out_dir", params.curate.out_dir, CURATED_FILES),
        ("model.out_dir", params.model.out_dir, MODEL_FILES),
        ("sft.out_dir", params.sft.out_dir, MODEL_FILES),
        ("grpo.out_dir", params.grpo.out_dir, MODEL_FILES),
    ]


def check_out_dirs(params, root: str | Path) -> None:
    """Every output folder of ``params`` checked on disk under ``root`` (nothing is touched)."""
    for key, folder, owned in stage_out_dirs(params):
        prepare_out_dir(folder, owned, key, root=root)
