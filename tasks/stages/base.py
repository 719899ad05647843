"""The base model stage (`python -m tasks.stages.base`): materialise ``models/base``.

``model.name_or_path: tiny`` builds the embedded default (a Qwen2 config + character tokenizer,
seeded) and saves it with ``save_pretrained``. Any other value is a local folder or a hub id:

- a local folder is copied in, so the DVC cache versions exactly what was trained. DVC hashes the
  folder as an input of this stage through ``model.watch`` (dvc.yaml's ``${model.watch}``), so a
  re-exported model re-runs ``base`` and everything downstream; the stage refuses to run when
  ``watch`` names another path, because then a changed folder would go unseen;
- a hub id is resolved to a commit sha and its files put in the local hub cache
  (:func:`tasks.hub.fetch`); ``models/base`` gets a pointer ``{name_or_path, revision, sha}`` and
  every later stage loads that sha. A model that is nowhere stops here with one line naming the
  id, the revision and what to do, before any MLflow run or output exists.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tasks.config import stage_cli
from tasks.config.model import ModelConfig
from tasks.hub import ModelNotFound, fetch, looks_local
from tasks.paths import MODEL_FILES, UnsafePath, prepare_out_dir


def check_local(cfg: ModelConfig) -> None:
    """A local model folder must be what DVC watches (``model.watch``), or it could go stale."""
    src = Path(cfg.name_or_path).expanduser()
    if not src.is_dir():
        raise ModelNotFound(f"model.name_or_path: {cfg.name_or_path}: no such folder")
    if Path(cfg.watch).expanduser().resolve() != src.resolve():
        raise ModelNotFound(
            f"model.name_or_path is the local folder {cfg.name_or_path} but model.watch is {cfg.watch!r}: "
            f"DVC would not see a re-exported model and models/base would go stale. "
            f"Set model.watch: {cfg.name_or_path}"
        )


def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv)
    cfg = params.model
    out = Path(cfg.out_dir)
    sha = None
    try:  # resolve first: a missing model stops before anything is written or logged
        if cfg.name_or_path != "tiny" and (looks_local(cfg.name_or_path) or Path(cfg.name_or_path).is_dir()):
            check_local(cfg)
        elif cfg.name_or_path != "tiny":
            sha = fetch(cfg.name_or_path, cfg.revision)
    except ModelNotFound as e:
        print(f"base: {e}", file=sys.stderr)
        return 1

    from tasks.models import build_tiny, count_parameters, load_model, write_pointer
    from tasks.tracking import stage_run

    try:  # the folder is emptied only once it is known to hold nothing but a previous base model
        prepare_out_dir(out, MODEL_FILES, "model.out_dir", clear=True)
    except UnsafePath as e:
        print(f"base: {e}", file=sys.stderr)
        return 2
    if cfg.name_or_path == "tiny":
        build_tiny(cfg, out)
        what = f"tiny Qwen2 ({count_parameters(load_model(out)):,} parameters)"
    elif sha is None:
        shutil.copytree(Path(cfg.name_or_path).expanduser(), out)
        what = f"copy of {cfg.name_or_path}"
    else:
        write_pointer(cfg, out, sha)
        what = f"pointer to {cfg.name_or_path}@{sha} (revision {cfg.revision or 'default branch'})"
    with stage_run(params.tracking, "base", cfg.model_dump()) as run:
        run.set_tags({"model.source": what, **({"model.sha": sha} if sha else {})})
    print(f"base: {what} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
