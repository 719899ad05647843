"""Progress bars that read well in a terminal and in a log (Prefect, CI, ``dvc repro > log``).

In a terminal, tqdm redraws one line in place. Anywhere else every redraw would become a log line
(a 30-step bar gave 33 lines), so off a TTY the bar is a plain line -- ``sft: 600/1200 steps
[00:21<00:21, 28.10step/s], loss=0.412`` -- printed at most every ``LOG_EVERY_S`` seconds, each on
its own line. Callers update the postfix with ``refresh=False`` so only the interval redraws.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_EVERY_S = 15.0
PLAIN = "{desc}: {n_fmt}/{total_fmt} {unit}s [{elapsed}<{remaining}, {rate_fmt}]{postfix}"


class _Lines:
    """A stream for tqdm that turns its in-place redraws (``\\r...``) into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> None:
        text = s.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable, desc: str, disable: bool = False, **kwargs: Any) -> tqdm:
    """A step bar on stderr: tqdm's in a terminal, periodic plain lines elsewhere."""
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, unit="step", file=sys.stderr, mininterval=1.0, disable=disable, **kwargs)
    return tqdm(iterable, desc=desc, unit="step", file=_Lines(sys.stderr), mininterval=LOG_EVERY_S, disable=disable,
                bar_format=PLAIN, ascii=True, **kwargs)
