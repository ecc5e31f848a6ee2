"""Round 0: the base model, the prompts (every round's training prompts and the held-out split) and the
benchmarks, each a stage of its own; then the checks that need them, before any engine starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import AutoConfig

from eval.benchmarks import BENCHMARKS
from posttrain.models.chat_turns import Chat, warn_about_template
from posttrain.models.gguf_import import GGUFError, resolve
from posttrain.recipe.config import Recipe, RecipeError
from posttrain.run.dist import barrier, world
from posttrain.run.fingerprint import file_digests
from posttrain.run.rundir import RunDir, storage, write_json
from posttrain.stages.context import Context, tokenizer_of
from posttrain.stages.evaluate import eval_sets, load_benchmarks
from posttrain.stages.generate import fitting_requests
from posttrain.stages.prompts import known_prompts, load_prompts
from posttrain.tiny.base import ensure_base
from posttrain.tiny.world import WORLD_VERSION
from posttrain.training.chat_format import check_model, recipe_lengths


def open_run(recipe: Recipe, stop_after: tuple[int, str] | None, dry_run: bool) -> Context:
    """The run directory (made once the base is usable: a refused recipe leaves none) with recipe.json, and
    round 0's stages."""
    if world().is_main and not dry_run:  # the base may have to be built: once, before the other ranks look for it
        check_chat_template(resolve_base(recipe), recipe)  # cheap when cached; rebuilds a deleted tiny base identically
        RunDir(recipe.run_dir)
        with storage(recipe.run_dir, "write recipe.json"):
            write_json(recipe.run_dir / "recipe.json", dataclasses.asdict(recipe))
    barrier()
    ctx = Context(recipe, RunDir(recipe.run_dir, stop_after, dry_run))
    ctx.base = ctx.run.stage(0, "base", base_config(recipe), [], lambda out: {"model_path": resolve_base(recipe)})
    ctx.prompts = prompts_stage(ctx)
    ctx.heldout = ctx.prompts_table("heldout")
    if recipe.generate.too_long == "error" and not dry_run:  # before any engine starts, not in round 1's generate
        every_round = known_prompts(ctx.prompts.path, list(range(1, recipe.rounds + 1)))
        fitting_requests(every_round, ctx.chat(ctx.base.model), recipe.generate, recipe.seed,
                         context_of(recipe, ctx.base.model))
    ev = recipe.eval
    config = {"benchmarks": ev.benchmarks, "limit": ev.limit, "seed": recipe.seed, "decontaminate": sorted(BENCHMARKS)}
    ctx.benchmarks = ctx.run.stage(0, "benchmarks", config, [],
                                   lambda out: load_benchmarks(out, ev.benchmarks, ev.limit, recipe.seed))
    ctx.eval_sets = eval_sets(ev.benchmarks, ctx.heldout, ctx.benchmarks.path, recipe.score)
    return ctx


def base_config(recipe: Recipe) -> dict:
    """The base stage's fingerprint. Every later stage reads the base (or a model trained from it), so what
    changes how each renders its chat template (`chat_template_kwargs`) is here: changing it reruns them all.
    Left out while empty, so the runs from before the key existed resume."""
    config = {"base_model": recipe.base_model, "build": recipe.base, "seed": recipe.seed}
    if recipe.chat_template_kwargs:
        config["chat_template_kwargs"] = recipe.chat_template_kwargs
    return config


def prompts_stage(ctx: Context):
    """Every source's prompts. A prompt file edited in place must invalidate the stage: its content hash is part
    of the config. The seed draws the generated prompts and splits; the world version is what the tiny families
    draw."""
    recipe = ctx.recipe
    config = {"prompts": recipe.prompts, "files": file_digests(recipe), "seed": recipe.seed,
              "world_version": WORLD_VERSION}
    if any(src.per_round for src in recipe.prompts.sources):  # one more round draws more: earlier rounds' stay
        config["rounds"] = recipe.rounds
    return ctx.run.stage(0, "prompts", config, [],
                         lambda out: load_prompts(out, recipe.prompts, recipe.seed, recipe.rounds))


def resolve_base(recipe: Recipe) -> str:
    """The base model: a local folder, a hub id, the folder a .gguf file is imported into (once, then cached),
    or the tiny base built on first use (then cached)."""
    if recipe.base is not None:
        return str(ensure_base(Path(recipe.base_model), recipe.base, recipe.seed))
    # load_recipe already refused a missing absolute path; anything else may be a hub id.
    try:  # a local folder or a hub id as it is: transformers and vLLM load both the same way
        return resolve(recipe.base_model)
    except GGUFError as e:
        raise RecipeError(f"base_model {e}") from None


def check_chat_template(model: str, recipe: Recipe | None = None) -> None:
    """Every stage renders prompts with the tokenizer's chat template, and SFT and DPO train on it: a model whose
    template cannot train (or whose context is shorter than the recipe's lengths) stops here, before any work
    (`chat_format.check_model`; recipe load checks a model folder the same way)."""
    template_kwargs = dict(recipe.chat_template_kwargs) if recipe else {}
    why = check_model(model, recipe_lengths(recipe) if recipe else {}, packing=bool(recipe and recipe.sft.packing),
                      template_kwargs=template_kwargs)
    if why is not None:
        raise RecipeError(f"base_model {model}: {why}")
    warn_about_template(Chat(tokenizer_of(model), template_kwargs), model)


def context_of(recipe: Recipe, model: str) -> int | None:
    """The context the engine will have: `generate.max_model_len`, else the model's own."""
    return recipe.generate.max_model_len or getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
