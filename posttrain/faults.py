"""Fault injection for crash-and-resume tests: `POSTTRAIN_KILL_AT=<point>` SIGKILLs the run at that point.

Points: `round_<r>/<stage>/before`, `.../written` (mid-stage: outputs in the temp folder, no manifest),
`round_<r>/<stage>/after` (stage boundaries, see RunDir.stage) and
`round_<r>/<stage>/step<N>` (after optimizer step N of a training stage), `round_<r>/<stage>/saved` (a
training stage's model and results saved, checkpoints gone, nothing else done). SIGKILL, not an exception:
nothing gets to clean up, exactly as when a machine dies.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "POSTTRAIN_KILL_AT"


def kill_if(point: str) -> None:
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def stage_point(stage_dir: Path, event: str) -> str:
    """`.../round_1/sft.tmp` + "step2" -> "round_1/sft/step2"."""
    return f"{stage_dir.parent.name}/{stage_dir.name.removesuffix('.tmp')}/{event}"
