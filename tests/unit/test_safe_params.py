"""Each bad output folder or params file is refused, naming the key, before anything is deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.config import ConfigError, load_params
from tasks.paths import MODEL_FILES, UnsafePath, check_out_dirs, prepare_out_dir

VALID = "sft: {steps: 3}\n"


def _params(tmp_path: Path, text: str = VALID) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("model.out_dir=/tmp/elsewhere", "relative to the project root"),
        ("model.out_dir=.", "is the project root"),
        ("sft.out_dir=models/..", "is the project root"),
        ("grpo.out_dir=../outside", "leaves the project"),
        ("grpo.out_dir=models/../../x", "leaves the project"),
        ("curate.out_dir=.git/objects", "inside .git/"),
        ("sft.out_dir=.dvc/cache", "inside .dvc/"),
        ("model.out_dir=''", "empty path"),
    ],
)
def test_lexically_bad_out_dir_is_a_config_error_naming_the_key(tmp_path, override, why):
    with pytest.raises(ConfigError) as e:
        load_params(_params(tmp_path), [override])
    key = override.split("=")[0]
    assert key in str(e.value) and why in str(e.value)


def test_good_out_dirs_pass(tmp_path):
    p = load_params(_params(tmp_path), ["sft.out_dir=models/sft_lr3", "grpo.out_dir=./models/grpo-b"])
    assert p.sft.out_dir == "models/sft_lr3"
    check_out_dirs(p, tmp_path)  # nothing exists yet: fine, and nothing was created
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]


@pytest.mark.parametrize("text", ["", "\n# nothing but comments\n"])
def test_empty_params_file_is_an_error(tmp_path, text):
    with pytest.raises(ConfigError, match=r"params\.yaml: empty"):
        load_params(_params(tmp_path, text))


def test_missing_params_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"params\.yaml: file not found"):
        load_params(tmp_path / "params.yaml")


def test_folder_with_foreign_files_is_refused_and_kept(tmp_path):
    src = tmp_path / "tasks"
    src.mkdir()
    (src / "sft.py").write_text("print('precious')\n")
    (src / "config.json").write_text("{}")
    with pytest.raises(UnsafePath, match=r"model\.out_dir: .*holds sft\.py, which this stage does not write"):
        prepare_out_dir("tasks", MODEL_FILES, "model.out_dir", root=tmp_path, clear=True)
    assert (src / "sft.py").read_text() == "print('precious')\n"


def test_folder_with_a_subfolder_is_refused(tmp_path):
    (tmp_path / "models" / "base" / "nested").mkdir(parents=True)
    with pytest.raises(UnsafePath, match=r"holds nested"):
        prepare_out_dir("models/base", MODEL_FILES, "model.out_dir", root=tmp_path, clear=True)
    assert (tmp_path / "models" / "base" / "nested").is_dir()


def test_symlink_out_of_the_project_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.safetensors").write_text("theirs")
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    os.symlink(outside, project / "models" / "base")
    with pytest.raises(UnsafePath, match=r"outside the project"):
        prepare_out_dir("models/base", MODEL_FILES, "model.out_dir", root=project, clear=True)
    assert (outside / "model.safetensors").read_text() == "theirs"


def test_a_file_is_not_an_out_dir(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base").write_text("x")
    with pytest.raises(UnsafePath, match="is a file"):
        prepare_out_dir("models/base", MODEL_FILES, "model.out_dir", root=tmp_path)


def test_previous_output_is_cleared(tmp_path):
    out = tmp_path / "models" / "base"
    out.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        (out / name).write_text("old")
    assert (
        prepare_out_dir("models/base", MODEL_FILES, "model.out_dir", root=tmp_path, clear=True)
        == out.resolve()
    )
    assert not out.exists()
