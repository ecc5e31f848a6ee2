"""A run of post-training rounds, Llama 3 style (§4): read top to bottom, this is the whole loop.

Round 0 builds or imports the base, draws the prompts, loads the benchmarks and evaluates the base. Each
round then: generate -> score [-> revise] [-> reward_model] -> select [-> judge] -> mix -> SFT -> DPO ->
eval, and the round's policy seeds the next. Every stage is one function `stage(ctx, r, ...)` in
posttrain/stages/<stage>.py, which says what it reads (the stage outputs it is given), what it writes (its
folder `runs/<name>/round_<r>/<stage>/`, made atomically) and what fingerprints it (its recipe section
without the keys that only say how it runs). Rerunning resumes at the first stage whose fingerprint changed.

Under a multi-process launch every rank runs this same loop: generation, scoring, judging and eval are
sharded by prompt id and merged on the main process, training runs on every rank, and the other stages run
on the main process only (RunDir.stage's modes).
"""

from __future__ import annotations

from posttrain.models.engine import Engines
from posttrain.recipe.config import Recipe
from posttrain.reporting import report
from posttrain.run.dist import barrier
from posttrain.run.rundir import StageOutput, storage, write_json
from posttrain.stages import (dpo, evaluate, generate, judge, mix, push, revise, reward_model, scoring, selection,
                              setup, sft)
from posttrain.stages.context import Context


def run_rounds(recipe: Recipe, stop_after: tuple[int, str] | None = None, dry_run: bool = False) -> dict:
    """Runs (or resumes) every round of `recipe`; returns the run summary.

    stop_after (round, stage): stop once that stage is complete, raising rundir.StageReached (the one-stage
    commands). dry_run: write nothing; rundir.WouldRun names the first stage that would run."""
    ctx = setup.open_run(recipe, stop_after, dry_run)  # round 0: base, prompts, benchmarks
    with Engines(recipe.generate, recipe.seed, recipe.generate.max_model_len) as ctx.engines:
        policy = ctx.base
        evaluate.stage(ctx, 0, policy)
        for r in range(1, recipe.rounds + 1):
            policy = one_round(ctx, r, policy)
    return finish(ctx)


def one_round(ctx: Context, r: int, policy: StageOutput) -> StageOutput:
    """Round r from the policy of round r - 1; returns the round's policy."""
    samples = generate.stage(ctx, r, policy)  # K completions per prompt (vLLM)
    scored = scoring.stage(ctx, r, samples)  # verifiers
    scored = revise.stage(ctx, r, policy, scored)  # execution feedback for failed code (revise.enabled)
    ranked = reward_model.stage(ctx, r, scored)  # + rm_score (reward_model.enabled)
    chosen = selection.stage(ctx, r, ranked)  # rejection sampling: SFT examples and DPO pairs
    judge.stage(ctx, r, policy, chosen)  # LLM-judged tags (mix.judge.model)
    mixed = mix.stage(ctx, r)  # dedup, decontamination, tagging, rebalancing
    ctx.engines.close()  # free the generation engine's memory before training
    sft_out = sft.stage(ctx, r, policy, mixed)
    policy = dpo.stage(ctx, r, sft_out, mixed)
    evaluate.stage(ctx, r, policy)  # this round's eval engine is also the next round's generation engine
    write_report(ctx, r)
    push.stage(ctx, r, policy, mixed)  # to the Hugging Face Hub (hub.push)
    return policy


def write_report(ctx: Context, r: int) -> None:
    """The report page, one section per round so far (main process; not in a dry run)."""
    if ctx.is_main and not ctx.dry_run:
        with storage(ctx.run.root, "write the report"):
            report.write_report(ctx.run.root, report.summarize(ctx.run, r), ctx.recipe.mix.targets)


def finish(ctx: Context) -> dict:
    """summary.json and the final report; every rank returns the summary."""
    summary = report.summarize(ctx.run, ctx.recipe.rounds)
    if ctx.is_main and not ctx.dry_run:
        with storage(ctx.run.root, "write the summary and report"):
            write_json(ctx.run.root / "summary.json", summary)
            report.write_report(ctx.run.root, summary, ctx.recipe.mix.targets)
    barrier()  # every rank here (cli.main then ends the process group)
    return summary
