"""The base model stage (`python -m tasks.stages.base`): materialise ``models/base``.

``model.name_or_path: tiny`` builds the embedded default (a Qwen2 config + character tokenizer,
seeded) and saves it with ``save_pretrained``. Any other value is a hub id or a local path: a
local folder is copied in (so the DVC cache versions exactly what was trained), a hub id is
recorded as a pointer ``{name_or_path, revision}`` without downloading weights here; later stages
resolve it through ``tasks.models.load_model``. Pin ``model.revision`` to a commit for a
reproducible run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tasks.config import stage_cli
from tasks.models import build_tiny, count_parameters, load_model, write_pointer
from tasks.paths import MODEL_FILES, UnsafePath, prepare_out_dir
from tasks.tracking import stage_run


def main(argv: list[str] | None = None) -> int:
    args, params = stage_cli(__doc__, argv)
    cfg = params.model
    out = Path(cfg.out_dir)
    try:  # the folder is emptied only once it is known to hold nothing but a previous base model
        prepare_out_dir(out, MODEL_FILES, "model.out_dir", clear=True)
    except UnsafePath as e:
        print(f"base: {e}", file=sys.stderr)
        return 2
    if cfg.name_or_path == "tiny":
        build_tiny(cfg, out)
        what = f"tiny Qwen2 ({count_parameters(load_model(out)):,} parameters)"
    elif Path(cfg.name_or_path).is_dir():
        shutil.copytree(cfg.name_or_path, out)
        what = f"copy of {cfg.name_or_path}"
    else:
        write_pointer(cfg, out)
        what = f"pointer to {cfg.name_or_path}@{cfg.revision or 'default branch'}"
    with stage_run(params.tracking, "base", cfg.model_dump()) as run:
        run.set_tags({"model.source": what})
    print(f"base: {what} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
