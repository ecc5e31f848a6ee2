"""Fault injection for crash-and-resume tests: `POSTTRAIN_KILL_AT=<point>` SIGKILLs the run at that point.

Points: `round_<r>/<stage>/before`, `.../written` (mid-stage: outputs in the temp folder, no manifest),
`round_<r>/<stage>/after` (stage boundaries, see RunDir.stage) and
`round_<r>/<stage>/step<N>` (after optimizer step N of a training stage), `round_<r>/<stage>/saved` (a
training stage's model and results saved, checkpoints gone, nothing else done), `round_<r>/push/model` (the push
stage's model repo committed, its dataset repo not yet). SIGKILL, not an exception:
nothing gets to clean up, exactly as when a machine dies. `POSTTRAIN_SIGNAL_AT=round_<r>/<stage>/step<N>[@<rank>]`
sends SIGTERM after that optimizer step instead: a preemption, which training answers with a checkpoint.

`POSTTRAIN_PROCESSES_AT_KILL=<file>`: first writes the run's live descendant processes there (one JSON
list of {pid, ppid, cmdline}), so a test can see what was running at that point (e.g. no vLLM engine in SFT).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

ENV = "POSTTRAIN_KILL_AT"
SIGNAL_ENV = "POSTTRAIN_SIGNAL_AT"
PROCESSES_ENV = "POSTTRAIN_PROCESSES_AT_KILL"


def kill_if(point: str) -> None:
    if os.environ.get(ENV) == point:
        if os.environ.get(PROCESSES_ENV):
            Path(os.environ[PROCESSES_ENV]).write_text(json.dumps(descendants(os.getpid())))
        os.kill(os.getpid(), signal.SIGKILL)


def signal_if(point: str) -> None:
    """`POSTTRAIN_SIGNAL_AT=<point>[@<rank>]`: sends this process SIGTERM there (on that rank only, if named), as a
    scheduler preempting the job would; training catches it (posttrain.run.preemption)."""
    want, _, rank = os.environ.get(SIGNAL_ENV, "").partition("@")
    if want == point and (not rank or int(rank) == int(os.environ.get("RANK", "0"))):
        os.kill(os.getpid(), signal.SIGTERM)


def descendants(pid: int) -> list[dict]:
    """Live descendants of `pid` (Linux /proc): [{pid, ppid, cmdline}], parents before children."""
    children: dict[int, list[int]] = {}
    parent: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state, past a name with spaces
        children.setdefault(ppid, []).append(int(entry))
        parent[int(entry)] = ppid
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append({"pid": p, "ppid": parent[p], "cmdline": cmd})
        todo.extend(children.get(p, []))
    return out


def stage_point(stage_dir: Path, event: str) -> str:
    """`.../round_1/sft.tmp` + "step2" -> "round_1/sft/step2"."""
    return f"{stage_dir.parent.name}/{stage_dir.name.removesuffix('.tmp')}/{event}"
