"""The ``sources`` stage: a fingerprint of every configured data source, so DVC sees the data change.

    python -m tasks.data.fingerprint [--params params.yaml]

DVC hashes only the paths a stage lists, and a source's ``path`` lives in ``params.yaml``, which can
name any file (or a hub id). So this small stage, marked ``always_changed`` in ``dvc.yaml``, runs on
every ``dvc repro`` and writes ``data/sources.json``: per source its kind, label and path, and

- a local file: its md5 and size (the same digest DVC uses);
- a local dataset directory: an md5 over its files' relative paths and md5s;
- a hub id: the commit sha its ``revision`` resolves to now (a sha is kept as given, no network);
- the synthetic suite: nothing beyond its params (it is generated from them);
- with ``curate.difficulty`` on: the model it samples from (directory digest or hub sha).

Benchmark files named in ``curate.decontam.benchmarks`` are fingerprinted the same way. The curate
stage depends on this file: an unchanged source writes identical bytes, so curate and everything
downstream skip; an edited file or a moved hub branch changes it, so they re-run. Curate then
loads each hub source at the sha recorded here, so the data DVC saw is the data curated. No
timestamps go in the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from tasks.config.curate import Benchmark, CurateConfig, SyntheticSource
from tasks.data.io import SourceError, check_local, is_hub

_SHA = re.compile(r"[0-9a-f]{40}")


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_digest(path: str) -> dict:
    p = check_local(path)
    if p.is_file():
        return {"md5": file_md5(p), "size": p.stat().st_size}
    files = sorted(f for f in p.rglob("*") if f.is_file() and ".cache" not in f.parts)
    h = hashlib.md5()
    for f in files:
        h.update(f"{f.relative_to(p).as_posix()}\0{file_md5(f)}\n".encode())
    return {"md5": f"{h.hexdigest()}.dir", "nfiles": len(files)}


def resolve_revision(repo_id: str, revision: str | None, kind: str = "dataset") -> str:
    """The commit sha a hub dataset (or model) revision (branch, tag or sha) points at now."""
    if revision and _SHA.fullmatch(revision):
        return revision
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        info = api.dataset_info if kind == "dataset" else api.model_info
        sha = info(repo_id, revision=revision).sha
    except Exception as e:  # offline, unknown id or revision, auth: one outcome
        raise SourceError(
            f"{repo_id}@{revision or 'main'}: cannot resolve the revision on the hub: {e}"
        ) from e
    if not sha:
        raise SourceError(f"{repo_id}@{revision or 'main'}: the hub returned no commit sha")
    return sha


def source_entry(spec) -> dict:
    if isinstance(spec, SyntheticSource):
        return {"kind": "synthetic", "labels": sorted(spec.labels())}
    entry = {"kind": spec.kind, "label": spec.label, "path": spec.path}
    if is_hub(spec.path):
        return entry | {"revision": spec.revision, "resolved": resolve_revision(spec.path, spec.revision)}
    return entry | local_digest(spec.path)


def benchmark_entry(bench: Benchmark) -> dict:
    return {"path": bench.path, **local_digest(bench.path)}


def model_entry(path: str) -> dict:
    """The difficulty model: a local directory's digest, or a hub id's resolved sha."""
    if Path(path).exists():
        return {"path": path, **local_digest(path)}
    return {"path": path, "resolved": resolve_revision(path, None, kind="model")}


def fingerprint(cfg: CurateConfig) -> dict:
    fp = {
        "sources": [source_entry(s) for s in cfg.sources],
        "benchmarks": [benchmark_entry(b) for b in cfg.decontam.benchmarks],
    }
    if cfg.difficulty.enabled:  # absent otherwise, so the default's file is unchanged
        fp["difficulty_model"] = model_entry(cfg.difficulty.model)
    return fp


def write_fingerprint(cfg: CurateConfig, path: str | Path) -> dict:
    fp = fingerprint(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fp, indent=2, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:  # unchanged bytes: nothing to touch
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return fp


def resolved_revisions(path: str | Path) -> dict[str, str]:
    """``{source label: sha}`` of the hub sources in a fingerprint file (empty if there is none yet)."""
    p = Path(path)
    if not p.is_file():
        return {}
    return {s["label"]: s["resolved"] for s in json.loads(p.read_text())["sources"] if "resolved" in s}


def main(argv: list[str] | None = None) -> int:
    from tasks.config import stage_cli

    _, params = stage_cli(__doc__, argv)
    try:
        write_fingerprint(params.curate, params.curate.fingerprint)
    except SourceError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(f"sources: wrote {params.curate.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
