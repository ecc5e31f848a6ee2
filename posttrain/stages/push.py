"""The push stage (`hub.push`: every_round or final): the round's model, data and report to the Hugging Face
Hub (posttrain/publish/hub.py). A stage, so a rerun does not push the same round again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from posttrain.publish import hub
from posttrain.reporting import report
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context


def stage(ctx: Context, r: int, policy: StageOutput, mixed: StageOutput) -> StageOutput | None:
    recipe = ctx.recipe
    if recipe.hub.push == "never":
        return None
    final = r == recipe.rounds  # what `push: final` does depends on it: part of the fingerprint
    return ctx.run.stage(r, "push", {"hub": recipe.hub, "final": final}, [policy, mixed], lambda out: hub.push(
        ctx.run.root, dataclasses.asdict(recipe), report.summarize(ctx.run, r), r, Path(policy.model), mixed.path,
        final=final))
