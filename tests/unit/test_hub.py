"""Hub access is decided once per process from its entry point (tasks/hub.py ``configure``).

The user's own ``HF_HUB_OFFLINE`` (even ``0``) always wins; otherwise the stages that may need the
hub (curate, base) keep it and the ones that load only local files or the cache go offline; any
other process is left alone. Plus which model names are paths rather than hub ids.
"""

from __future__ import annotations

import pytest

from tasks.hub import configure, entry_module, looks_local


@pytest.mark.parametrize(
    ("argv", "env", "decision", "offline"),
    [
        (["python", "-m", "tasks.stages.sft", "-S", "sft.steps=2"], {}, "offline", "1"),
        (["python", "-u", "-m", "tasks.stages.grpo"], {}, "offline", "1"),  # torchrun workers look like this
        (["python", "-m", "tasks.stages.evaluate"], {}, "offline", "1"),
        (["python", "-m", "tasks.stages.base"], {}, "online", None),
        (["python", "-m", "tasks.stages.curate"], {}, "online", None),
        (
            ["python", "-m", "tasks.stages.evaluate"],
            {"HF_HUB_OFFLINE": "0"},
            "user",
            "0",
        ),  # the user's choice
        (["python", "-m", "tasks.stages.base"], {"HF_HUB_OFFLINE": "1"}, "user", "1"),
        (["python", "-m", "pytest", "tests"], {}, "untouched", None),
        (["python", "script.py"], {}, "untouched", None),
    ],
)
def test_configure(argv, env, decision, offline):
    assert configure(argv, env) == decision
    assert env.get("HF_HUB_OFFLINE") == offline


def test_entry_module_and_paths():
    assert (
        entry_module(["python", "-m", "tasks.stages.sft"]) == "tasks.stages.sft"
        and entry_module(["python", "-m"]) is None
    )
    for path in ("/models/qwen", "./exported", "../m", "~/m", "models/local/qwen"):
        assert looks_local(path), path
    for hub_id in ("Qwen/Qwen2.5-0.5B-Instruct", "gpt2"):
        assert not looks_local(hub_id), hub_id
