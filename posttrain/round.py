"""Post-training rounds, Llama 3 style: generate -> score [-> revise] -> select -> mix -> SFT -> DPO -> eval.

    accelerate launch posttrain/round.py --recipe recipes/tiny.yaml [sft.learning_rate=2e-5 ...]
    posttrain round --recipe recipes/tiny.yaml

Every stage writes `runs/<name>/round_<r>/<stage>/` atomically; rerunning the same command resumes at
the first incomplete stage, and a changed recipe section reruns that stage and everything after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
from pathlib import Path

if __name__ == "__main__" and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep posttrain/*.py from shadowing top-level modules

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from posttrain.run import schema
from posttrain.recipe.config import Recipe, load_recipe
from posttrain.run.dist import barrier, shard, world
from posttrain.run.rundir import RunDir, StageOutput, storage, write_json
from posttrain.tiny.world import WORLD_VERSION

log = logging.getLogger("posttrain")


def run_rounds(recipe: Recipe, stop_after: tuple[int, str] | None = None, dry_run: bool = False) -> dict:
    """Runs (or resumes) every round of `recipe`; returns the run summary.

    stop_after (round, stage): stop once that stage is complete, raising rundir.StageReached (the
    one-stage commands: `posttrain mix --round 2` runs or reuses everything before it, then the mix).
    dry_run: write nothing (no base built, no report); rundir.WouldRun names the first stage that would run.

    Under a multi-process launch every rank runs this same loop: generation, scoring and eval are
    sharded by prompt id (mode="shards", merged on the main process), training runs on every rank
    (mode="all"), and the other stages run on the main process only (see RunDir.stage).
    """
    from data_mix.judge import judge_stage, merge_judged, templates
    from data_mix.mix import mix
    from eval.benchmarks import BENCHMARKS
    from posttrain.stages.evaluate import ALL, eval_sets, evaluate_shard, load_benchmarks, merge_evals
    from posttrain.publish import hub
    from posttrain.reporting import report
    from posttrain.stages.dpo import dpo
    from posttrain.models.engine import Engines
    from posttrain.stages.generate import fitting_requests, generate, merge_samples
    from posttrain.stages.prompts import known_prompts, load_prompts, round_prompts
    from posttrain.stages.revise import merge_revised, revise
    from posttrain.stages.scoring import merge_scored, reward_model, score
    from posttrain.stages.selection import run as select
    from posttrain.stages.sft import sft
    from posttrain.training.trainer import tracking_args
    from posttrain.training.variants import train_variants

    w = world()
    if w.is_main and not dry_run:  # the base may have to be built: once, before the other ranks look for it
        check_chat_template(resolve_base(recipe), recipe)  # cheap when cached; rebuilds a deleted tiny base identically
        RunDir(recipe.run_dir)  # only once the base is usable: a refused recipe leaves no run directory
        with storage(recipe.run_dir, "write recipe.json"):
            write_json(recipe.run_dir / "recipe.json", dataclasses.asdict(recipe))
    barrier()
    run = RunDir(recipe.run_dir, stop_after, dry_run)
    seed = recipe.seed
    base = run.stage(0, "base", {"base_model": recipe.base_model, "build": recipe.base, "seed": seed}, [],
                     lambda out: {"model_path": resolve_base(recipe)})
    # A prompt file edited in place must invalidate the prompts stage: its content hash is part of the config.
    # The seed draws the generated prompts and splits; the world version is what the tiny families draw.
    prompts_cfg = {"prompts": recipe.prompts, "files": file_digests(recipe), "seed": seed,
                   "world_version": WORLD_VERSION}
    if any(src.per_round for src in recipe.prompts.sources):  # one more round draws more: earlier rounds' stay
        prompts_cfg["rounds"] = recipe.rounds
    prompts = run.stage(0, "prompts", prompts_cfg, [],
                        lambda out: load_prompts(out, recipe.prompts, seed, recipe.rounds))
    heldout = schema.read(prompts.path / "heldout.parquet", "prompts")
    if recipe.generate.too_long == "error" and not dry_run:  # before any engine starts, not in round 1's generate
        every_round = known_prompts(prompts.path, list(range(1, recipe.rounds + 1)))
        fitting_requests(every_round, _tokenizer(base), recipe.generate, seed, _context(recipe, base.model))
    # Stages read the prompts stage's tables as inputs by content: a prompts rerun that leaves them unchanged
    # (e.g. a new eval-only source, or one more round's draw) reruns none of them.
    heldout_in = prompts.part("heldout.parquet")
    ev = recipe.eval
    benchmarks = run.stage(0, "benchmarks", {"benchmarks": ev.benchmarks, "limit": ev.limit, "seed": seed,
                                             "decontaminate": sorted(BENCHMARKS)}, [],
                           lambda out: load_benchmarks(out, ev.benchmarks, ev.limit, seed))
    sets = eval_sets(ev.benchmarks, heldout, benchmarks.path, recipe.score)
    # Decontamination guards training data against every shipped benchmark, not only the ones scored here.
    benchmark_prompts = schema.read(benchmarks.path / f"{ALL}.parquet", "prompts")
    # What the engine decides about an eval beside its own section: weights dtype, context (too long), eager.
    score_cfg = scoring(recipe)  # the score section as score, revise and eval see it (hashes custom verifiers)
    eval_cfg = {"eval": ev, "score": score_cfg, "engine": {
        k: getattr(recipe.generate, k) for k in ("dtype", "max_model_len", "enforce_eager")}}

    def tracked(r: int, stage: str) -> dict:  # the trained stages' runs in the recipe's trackers
        return tracking_args(recipe.tracking, recipe.name, stage, r)

    with Engines(recipe.generate, seed, recipe.generate.max_model_len) as engines:
        def evaluate(r: int, policy: StageOutput) -> StageOutput:
            return run.stage(r, "eval", eval_cfg, [policy, heldout_in, benchmarks], lambda out: evaluate_shard(
                out, engines.get(policy.model), _tokenizer(policy), sets, ev, recipe.score, seed, engines.world),
                mode="shards", merge=lambda out, dirs, res: merge_evals(out, dirs, res, sets, ev))

        def judge(r: int, policy: StageOutput, chosen: StageOutput) -> StageOutput:
            """The judge stage over the select stage's (`chosen`) SFT examples, sharded by id over the engines;
            the round's policy judges (`mix.judge.model: policy`) or the named model does."""
            cfg = recipe.mix.judge
            model = policy.model if cfg.model == "policy" else cfg.model
            new = _read(chosen, "sft")
            config = {"judge": cfg, "topics": recipe.mix.topics, "templates": templates(cfg.prompt_dir, cfg.judgments)}
            return run.stage(
                r, "judge", config, [chosen, *([policy] if cfg.model == "policy" else [])],
                lambda out: judge_stage(out, shard(new, engines.world), cfg, recipe.mix.topics, engines.get(model),
                                        _tokenizer_of(model), seed),
                mode="shards", merge=lambda out, dirs, res: merge_judged(out, dirs, res, new["id"].to_pylist()))

        policy = base
        evaluate(0, policy)
        selected: list[StageOutput] = []
        score_stages: list[StageOutput] = []
        ranked: list[StageOutput] = []
        judged: list[StageOutput] = []  # per round, with mix.judge.model: that round's SFT examples judged
        for r in range(1, recipe.rounds + 1):
            round_seed = seed * 1000 + r  # new samples each round, reproducible per prompt
            train, train_in = round_prompts(prompts.path, r), train_parts(prompts, [r])  # this round's prompts
            # With a temperature schedule, whether this is the last round changes what is sampled.
            gen_cfg = outputs(recipe.generate) if recipe.generate.temperature_range is None else {
                "generate": outputs(recipe.generate), "last_round": r == recipe.rounds}
            samples = run.stage(r, "generate", gen_cfg, [policy, *train_in], lambda out: generate(
                out, engines.get(policy.model), shard(train, engines.world), _tokenizer(policy), recipe.generate,
                round_seed, last_round=r == recipe.rounds),
                mode="shards", merge=lambda out, dirs, res: merge_samples(out, dirs, res, train))
            threshold = recipe.select.pass_threshold  # what counts as a pass in the stage's pass_rate
            tried = run.stage(r, "score", {"score": score_cfg, "pass_threshold": threshold},
                              [samples, *train_in], lambda out: score(
                out, shard(_read(samples, "samples"), w, "prompt_id"), train, recipe.score, threshold),
                mode="shards", merge=lambda out, dirs, res: merge_scored(out, dirs, res, train, threshold))
            scored = tried
            if recipe.revise.enabled:  # failed code gets its error back and more tries (Llama 3 §4.3.1)
                revise_cfg = {"revise": recipe.revise, "generate": outputs(recipe.generate),
                              "score": score_cfg, "pass_threshold": threshold}
                scored = run.stage(r, "revise", revise_cfg, [policy, tried, *train_in], lambda out: revise(
                    out, engines.get(policy.model), shard(_read(tried, "scored"), engines.world, "prompt_id"), train,
                    _tokenizer(policy), recipe.revise, recipe.generate, recipe.score, threshold, round_seed),
                    mode="shards", merge=lambda out, dirs, res: merge_revised(out, dirs, res, train))
            score_stages.append(scored)
            if recipe.reward_model.enabled:  # trained from the base on the preference data of every round so far
                engines.close()
                rm_cfg = {"rm": outputs(recipe.reward_model, "weight"),  # the weight only ranks, in select
                          "pass_threshold": recipe.select.pass_threshold,
                          "files": digests(recipe.reward_model.preference_sources)}
                so_far = list(range(1, r + 1))  # the RM learns from every round's samples: their prompts by id
                asked = known_prompts(prompts.path, so_far)
                scored = run.stage(r, "reward_model", rm_cfg, [base, *score_stages, *train_parts(prompts, so_far)],
                                   lambda out: reward_model(
                    out, base.model, [_read(s, "scored") for s in score_stages], asked, recipe.reward_model,
                    recipe.select.pass_threshold, seed, tracked(r, "reward_model")), resumable=True, mode="all")
            ranked.append(scored)  # what selection ranked: the RM stage's table when an RM is trained
            rm_weight = recipe.reward_model.weight  # one number, or one per capability
            selected.append(run.stage(r, "select", {"select": recipe.select, "rm_weight": rm_weight},
                                      [scored, *train_in], lambda out: select(
                out, _read(scored, "scored"), train, recipe.select, seed, r, recipe.reward_model.weights())))
            # The paper re-fine-tunes the base on all SFT data so far; `previous` continues on this round's.
            first = 1 if recipe.sft.start_from == "base" else r
            history, scores = selected[first - 1:], {i: ranked[i - 1] for i in range(first, r + 1)}
            if recipe.mix.judge.model is not None:  # an LLM judge tags the round's new SFT examples
                judged.append(judge(r, policy, selected[-1]))
            judgments = judged[first - 1:]
            mixed = run.stage(r, "mix", recipe.mix, [*history, *scores.values(), heldout_in, benchmarks, *judgments],
                              lambda out: mix(
                out, [_read(s, "sft") for s in history], _read(selected[-1], "pairs"), heldout, recipe.mix,
                seed, benchmarks=benchmark_prompts, scored={i: _read(s, "scored") for i, s in scores.items()},
                pass_threshold=recipe.select.pass_threshold, judged=_judged(judgments),
                judge_counts=judgments[-1].manifest["results"]["counts"] if judgments else None))

            engines.close()  # free the generation engine's memory before training
            start = base if recipe.sft.start_from == "base" else policy
            # Each trainer reads one table of the mix: the same table (by content) reuses the trained model.
            sft_data, dpo_data = mixed.part("sft.parquet"), mixed.part("pairs.parquet")
            sft_out = run.stage(r, "sft", outputs(recipe.sft), [start, sft_data], lambda out: train_variants(
                out, recipe.sft, seed, lambda o, cfg, s: sft(o, start.model, _read(mixed, "sft"), cfg, s,
                                                             tracked(r, "sft"))),
                resumable=True, mode="all")
            policy = run.stage(r, "dpo", outputs(recipe.dpo), [sft_out, dpo_data], lambda out: train_variants(
                out, recipe.dpo, seed, lambda o, cfg, s: dpo(o, sft_out.model, _read(mixed, "pairs"), cfg, s,
                                                             tracked(r, "dpo"))),
                resumable=True, mode="all")
            evaluate(r, policy)  # this round's eval engine is also the next round's generation engine
            if w.is_main and not dry_run:
                with storage(run.root, "write the report"):  # a page per round so far
                    report.write_report(run.root, report.summarize(run, r), recipe.mix.targets)
            if recipe.hub.push != "never":  # a stage: a rerun does not push the same round again
                # Whether this round is the last decides what `push: final` does: part of the fingerprint.
                final = r == recipe.rounds
                run.stage(r, "push", {"hub": recipe.hub, "final": final}, [policy, mixed], lambda out: hub.push(
                    run.root, dataclasses.asdict(recipe), report.summarize(run, r), r, Path(policy.model), mixed.path,
                    final=final))

    summary = report.summarize(run, recipe.rounds)
    if w.is_main and not dry_run:
        with storage(run.root, "write the summary and report"):
            write_json(run.root / "summary.json", summary)
            report.write_report(run.root, summary, recipe.mix.targets)
    barrier()  # every rank here (cli.main then ends the process group)
    return summary


def train_parts(prompts: StageOutput, rounds: list[int]) -> list:
    """The prompts stage's tables that hold `rounds`' training prompts, as stage inputs (rundir.Part)."""
    from posttrain.stages.prompts import train_files

    return [prompts.part(f.name) for f in train_files(prompts.path, rounds)]


def resolve_base(recipe: Recipe) -> str:
    """The base model: a local folder, a hub id, the folder a .gguf file is imported into (once, then cached),
    or the tiny base built on first use (then cached)."""
    if recipe.base is not None:
        from posttrain.tiny.base import ensure_base

        return str(ensure_base(Path(recipe.base_model), recipe.base, recipe.seed))
    from posttrain.recipe.config import RecipeError
    from posttrain.models.gguf_import import GGUFError, resolve

    # load_recipe already refused a missing absolute path; anything else may be a hub id.
    try:  # a local folder or a hub id as it is: transformers and vLLM load both the same way
        return resolve(recipe.base_model)
    except GGUFError as e:
        raise RecipeError(f"base_model {e}") from None


def check_chat_template(model: str, recipe: Recipe | None = None) -> None:
    """Every stage renders prompts with the tokenizer's chat template, and SFT and DPO train on it: a model whose
    template cannot train (or whose context is shorter than the recipe's lengths) stops here, before any work
    (`chat_format.check_model`; recipe load checks a model folder the same way)."""
    from posttrain.training.chat_format import check_model, recipe_lengths
    from posttrain.recipe.config import RecipeError

    why = check_model(model, recipe_lengths(recipe) if recipe else {}, packing=bool(recipe and recipe.sft.packing))
    if why is not None:
        raise RecipeError(f"base_model {model}: {why}")


# Keys that decide how a stage runs (memory, parallelism, checkpoint cadence, kernels), not what it outputs:
# changing them, e.g. to resume on other hardware or to turn gradient checkpointing on after running out of
# memory, does not redo the stage, and a stage killed midway resumes from its last checkpoint. The training
# switches among them take the same steps on the same batches (tests/test_fast_paths.py; attention kernels
# and Liger's up to their rounding); packing, length grouping and precomputed reference log-probs change
# what a batch holds, so they stay in.
HOW_NOT_WHAT = frozenset({"kv_cache_gib", "gpu_memory_utilization", "num_workers", "checkpoint_every_steps",
                          "gradient_checkpointing", "padding_free", "share_prefix", "use_liger_kernel",
                          "torch_compile", "attn_implementation", "sandbox"})


def outputs(cfg, *also: str) -> dict:
    """A config section as a stage's fingerprint sees it: without HOW_NOT_WHAT keys (nor `also`)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in HOW_NOT_WHAT and k not in also}


def scoring(recipe: Recipe) -> dict:
    """The score section as the stages that score see it, plus the module file digest of each verifier of the
    user's (reward/custom.py): editing one reruns score, revise and eval."""
    from reward import custom

    refs = sorted({name for name in recipe.score.verifiers.values() if custom.is_reference(name)})
    extra = {"verifier_sources": {ref: custom.source_digest(ref) for ref in refs}} if refs else {}
    return {**outputs(recipe.score), **extra}


def file_digests(recipe: Recipe) -> dict[str, str]:
    """Content hashes of the prompt files and of every file in a local `hf` dataset folder."""
    files = [src.path for src in recipe.prompts.sources if src.kind == "file"]
    for src in recipe.prompts.sources:
        if src.kind == "hf" and Path(src.name).is_dir():
            files += sorted(str(p) for p in Path(src.name).rglob("*") if p.is_file())
    return digests(files)


def digests(paths: list[str]) -> dict[str, str]:
    """Content hashes: a file edited in place changes the fingerprint of the stage that reads it."""
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _read(stage: StageOutput, table: str):
    return schema.read(stage.path / f"{table}.parquet", table)


def _judged(stages: list[StageOutput]) -> pa.Table | None:
    """The judgments of the rounds being mixed, one table (None without a judge)."""
    return pa.concat_tables([pq.read_table(s.path / "judged.parquet") for s in stages]) if stages else None


def _tokenizer(stage: StageOutput):
    return _tokenizer_of(stage.model)


def _context(recipe: Recipe, model: str) -> int | None:
    """The context the engine will have: `generate.max_model_len`, else the model's own."""
    from transformers import AutoConfig

    return recipe.generate.max_model_len or getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)


def _tokenizer_of(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="recipe YAML, e.g. recipes/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.learning_rate=2e-5 rounds=1")


def main(argv: list[str] | None = None) -> int:
    """`round.py --recipe R [overrides]` is `posttrain round --recipe R [overrides]` (same error handling)."""
    from posttrain.cli import main as cli_main

    return cli_main(["round", *(sys.argv[1:] if argv is None else argv)])


STAGE_COMMANDS = {  # one-stage commands: stage -> what it makes
    "generate": "sample K completions per prompt with vLLM",
    "revise": "execution feedback: failed prompts get the verifier's reason back and more tries",
    "select": "rejection sampling: the best sample per prompt for SFT, chosen/rejected pairs for DPO",
    "judge": "the LLM judge (mix.judge) tags the round's new SFT examples",
    "mix": "dedup, decontaminate, tag and rebalance the SFT mix and DPO pairs",
    "sft": "fine-tune on the round's SFT mix",
    "dpo": "DPO on the round's pairs",
    "push": "push the round's model, data and report to the Hugging Face Hub",
}


def stage_command(args: argparse.Namespace) -> int:
    """`posttrain <stage> --recipe R [--round N]`: the round loop up to that stage of round N (earlier
    stages run or are reused, as in `posttrain round`), then stop; prints where its outputs are."""
    from posttrain.cli import setup_logging
    from posttrain.recipe.config import RecipeError
    from posttrain.run.rundir import StageReached

    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    if not 1 <= args.round <= recipe.rounds:
        raise RecipeError(f"{args.recipe}: --round {args.round} is not one of the recipe's rounds (1..{recipe.rounds})")
    if args.stage == "revise" and not recipe.revise.enabled:
        raise RecipeError(f"{args.recipe}: revise.enabled is false: set it to true to revise failed samples")
    if args.stage == "judge" and recipe.mix.judge.model is None:
        raise RecipeError(f"{args.recipe}: mix.judge.model is not set: name a judge model (or policy) to judge")
    if args.stage == "push" and recipe.hub.push == "never":
        raise RecipeError(f"{args.recipe}: hub.push is never: set it to every_round or final (and hub.repo_id) to push")
    try:
        run_rounds(recipe, stop_after=(args.round, args.stage))
    except StageReached as reached:  # raised on every rank at the same stage (cli.main ends the process group)
        if world().is_main:
            print(f"{args.stage} of round {args.round}: {reached.output.path}")
            print(json.dumps(reached.output.manifest["results"], indent=1, default=str))
        return 0
    raise AssertionError(f"round {args.round} finished without running its {args.stage} stage")


def run_command(args: argparse.Namespace) -> int:
    from posttrain.reporting import report
    from posttrain.cli import setup_logging

    setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        return dry_run(recipe)
    log.info("recipe %s:\n%s", args.recipe,
             yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(recipe))), sort_keys=False))
    summary = run_rounds(recipe)
    if world().is_main:
        print(report.table(summary))
        print(f"\nsummary: {Path(summary['run']) / 'summary.json'}\n"
              f"report:  {Path(summary['run']) / 'report' / 'report.md'}")
    return 0


def dry_run(recipe: Recipe) -> int:
    """`posttrain round --dry-run`: what rerunning the recipe would reuse, and where it would start."""
    from posttrain.run.rundir import WouldRun

    try:
        run_rounds(recipe, dry_run=True)
    except WouldRun as would:
        if world().is_main:
            print(f"{recipe.run_dir}: {len(would.reused)} stage(s) complete and reused"
                  + (f" (last: round {would.reused[-1][0]} {would.reused[-1][1]})" if would.reused else ""))
            print(f"first to run: round {would.round} {would.name}: {would.reason}")
            print("then the stages after it whose inputs it changes")
        return 0
    if world().is_main:
        print(f"{recipe.run_dir}: every stage of the {recipe.rounds} round(s) is complete: nothing to run")
    return 0


if __name__ == "__main__":  # vLLM's engine is started with `spawn`: this guard keeps children from rerunning it
    raise SystemExit(main())
