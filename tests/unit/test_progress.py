"""Off a terminal a stage's progress is a few whole lines, not one per redraw."""

from __future__ import annotations

import io
import sys

import tasks.progress as progress_mod


def test_plain_periodic_lines_off_a_tty(monkeypatch):
    buf = io.StringIO()  # not a TTY, like Prefect's pipe or a CI log
    monkeypatch.setattr(sys, "stderr", buf)
    bar = progress_mod.progress(range(300), "sft")
    for i in bar:
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}", refresh=False)
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue()
    assert 1 <= len(lines) <= 3, lines  # the first and the final state: 300 steps take < 15 s
    assert lines[-1].startswith("sft: 300/300 steps [") and lines[-1].endswith(", loss=0.003")
