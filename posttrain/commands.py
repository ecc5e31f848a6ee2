"""The commands that run stages: `posttrain round` (the whole run, or `--dry-run`: what a rerun would reuse),
the one-stage commands `posttrain <stage> --round N` (the loop up to that stage, then stop) and
`posttrain eval` (the recipe's eval of any model)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

import yaml

from posttrain.models.chat_turns import Chat, warn_about_template
from posttrain.models.engine import Engine
from posttrain.models.gguf_import import GGUFError, resolve
from posttrain.pipeline import run_rounds
from posttrain.recipe.config import Recipe, RecipeError
from posttrain.stages.context import tokenizer_of
from posttrain.reporting import report
from posttrain.run.dist import world
from posttrain.run import schema
from posttrain.run.rundir import StageReached, WouldRun
from posttrain.stages.evaluate import eval_sets, evaluate, load_benchmarks
from posttrain.stages.prompts import load_prompts
from posttrain.stages.setup import resolve_base

log = logging.getLogger("posttrain")

OFF = {  # a one-stage command for a stage the recipe turns off: the key that turns it on
    "revise": (lambda r: not r.revise.enabled, "revise.enabled is false: set it to true to revise failed samples"),
    "judge": (lambda r: r.mix.judge.model is None,
              "mix.judge.model is not set: name a judge model (or policy) to judge"),
    "push": (lambda r: r.hub.push == "never",
             "hub.push is never: set it to every_round or final (and hub.repo_id) to push"),
}


def run_command(recipe: Recipe, path: str, dry: bool = False) -> int:
    """`posttrain round`: every round of the recipe loaded from `path`, then the summary table."""
    if dry:
        return dry_run(recipe)
    log.info("recipe %s:\n%s", path,
             yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(recipe))), sort_keys=False))
    summary = run_rounds(recipe)
    if world().is_main:
        print(report.table(summary))
        print(f"\nsummary: {Path(summary['run']) / 'summary.json'}\n"
              f"report:  {Path(summary['run']) / 'report' / 'report.md'}")
    return 0


def stage_command(recipe: Recipe, path: str, stage: str, round_: int) -> int:
    """`posttrain <stage> --recipe R [--round N]`: the round loop up to that stage of round N (earlier
    stages run or are reused, as in `posttrain round`), then stop; prints where its outputs are."""
    if not 1 <= round_ <= recipe.rounds:
        raise RecipeError(f"{path}: --round {round_} is not one of the recipe's rounds (1..{recipe.rounds})")
    if stage in OFF and OFF[stage][0](recipe):
        raise RecipeError(f"{path}: {OFF[stage][1]}")
    try:
        run_rounds(recipe, stop_after=(round_, stage))
    except StageReached as reached:  # raised on every rank at the same stage (cli.main ends the process group)
        if world().is_main:
            print(f"{stage} of round {round_}: {reached.output.path}")
            print(json.dumps(reached.output.manifest["results"], indent=1, default=str))
        return 0
    raise AssertionError(f"round {round_} finished without running its {stage} stage")


def dry_run(recipe) -> int:
    """`posttrain round --dry-run`: what rerunning the recipe would reuse, and where it would start."""
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


def run_eval(model: str | None, recipe: Recipe, out: str | None) -> Path:
    """`posttrain eval`: the recipe's eval of any model (None: the recipe's base model; a .gguf file is
    imported first, posttrain.models.gguf_import), written atomically to `out`; returns `out`."""
    try:
        model = resolve_base(recipe) if model is None else resolve(model)
    except GGUFError as e:
        raise RecipeError(f"--model {e}") from None
    ev = recipe.eval
    final = Path(out) if out else recipe.run_dir / "eval" / Path(model).name
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        heldout = schema.PROMPTS.empty_table()
        if "heldout" in ev.benchmarks:
            load_prompts(Path(scratch), recipe.prompts, recipe.seed)
            heldout = schema.read(Path(scratch) / "heldout.parquet", "prompts")
        load_benchmarks(Path(scratch), ev.benchmarks, ev.limit, recipe.seed)
        sets = eval_sets(ev.benchmarks, heldout, Path(scratch), recipe.score)
        engine = Engine(model, recipe.generate, recipe.seed, recipe.generate.max_model_len)
        try:
            chat = Chat(tokenizer_of(model), dict(recipe.chat_template_kwargs))
            warn_about_template(chat, model)
            evaluate(tmp, engine, chat, sets, ev, recipe.score, recipe.seed)
        finally:
            engine.close()
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final
