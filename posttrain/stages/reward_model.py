"""The reward-model stage (Llama 3 §4.1.2, `reward_model.enabled`): an RM trained from the base on the
recipe's preference files plus every round's passing-vs-failing samples, then this round's samples scored
with it (`rm_score`), which selection adds to the verifier's reward with `reward_model.weight`."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.models.chat_turns import prompt_turns
from posttrain.reporting.summary import by_capability
from posttrain.run import schema
from posttrain.run.dist import barrier, shard, world
from posttrain.run.schema import SchemaError, jsonl_records
from posttrain.training.reward_model import train_reward_model
from posttrain.training.variants import train_variants
from reward.model import (PREFERENCE_FILES, accuracy_by_capability, expand_ranking, pairwise_wins, preference_pairs,
                          score_with_reward_model, split_held_out)
from posttrain.run.fingerprint import digests, outputs
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read, tokenizer_of
from posttrain.stages.prompts import known_prompts

log = logging.getLogger("posttrain")


def reward_model(out: Path, base_model: str, scored_rounds: list[pa.Table], prompts: pa.Table, cfg,
                 pass_threshold: float, seed: int, trainer_args: dict | None = None,
                 template_kwargs: dict | None = None) -> dict:
    """Reward-model stage: trains an RM on the recipe's preference files plus passing-vs-failing samples
    of every round so far (`scored_rounds`, oldest first; the last is this round's), then scores this
    round's samples (`rm_score`): every rank its shard of the prompts, joined back by sample id."""
    pairs = preference_data(scored_rounds, prompts, cfg.preference_sources, pass_threshold)
    info = train_rm(out, base_model, pairs, cfg, seed, trainer_args, template_kwargs)  # every rank: data-parallel
    barrier()  # the main process has saved the model and its tokenizer: every rank scores with it
    scored = scored_rounds[-1]
    w, shards = world(), out / "rm_shards"
    shards.mkdir(exist_ok=True)
    pq.write_table(rm_scores(out / "model", shard(scored, w, "prompt_id"), prompts, cfg, template_kwargs),
                   shards / f"rank{w.rank}.parquet")
    barrier()
    if not w.is_main:
        return {}
    merged = pa.concat_tables([pq.read_table(shards / f"rank{k}.parquet") for k in range(w.size)]).to_pydict()
    by_sample = dict(zip(zip(merged["prompt_id"], merged["sample_index"]), merged["rm_score"]))
    rm = [by_sample[key] for key in zip(scored.column("prompt_id").to_pylist(),
                                        scored.column("sample_index").to_pylist())]
    shutil.rmtree(shards)
    table = scored.drop_columns(["rm_score"]).append_column("rm_score", pa.array(rm, pa.float64()))
    nonfinite = sum(not math.isfinite(x) for x in rm)  # kept as scored, left out by selection, counted here
    if nonfinite:
        log.warning("reward model: %d of %d scores are NaN or infinite; those samples are not selected",
                    nonfinite, len(rm))
    return {**info, "scored": schema.write(table, "scored", out / "scored.parquet"), "rm_nonfinite": nonfinite}


def rm_scores(model_dir: Path, samples: pa.Table, prompts: pa.Table, cfg,
              template_kwargs: dict | None = None) -> pa.Table:
    """{prompt_id, sample_index, rm_score} of `samples` (rows with prompt_id, sample_index, completion), rendered
    as the RM trained on them (its turns and the recipe's `chat_template_kwargs`)."""
    turns = prompt_turns(tokenizer_of(str(model_dir)), template_kwargs)
    messages = dict(zip(prompts.column("id").to_pylist(), map(turns, prompts.column("messages").to_pylist())))
    scores = score_with_reward_model(str(model_dir), [messages[p] for p in samples.column("prompt_id").to_pylist()],
                                     samples.column("completion").to_pylist(), batch_size=cfg.score_batch_size,
                                     max_length=cfg.max_length, progress=world().is_main,
                                     chat_template_kwargs=template_kwargs)
    return pa.table({"prompt_id": samples["prompt_id"], "sample_index": samples["sample_index"],
                     "rm_score": pa.array(scores, pa.float64())})


def train_rm(out: Path, base_model: str, pairs: list[dict], cfg, seed: int, trainer_args: dict | None = None,
             template_kwargs: dict | None = None) -> dict:
    """The reward model in out/model: trained once, or per `cfg.variants` and averaged. Variants share the
    score head's initialisation (the recipe seed), so their heads average like the rest of the weights.

    The pairs of a `cfg.eval_fraction` of the prompts are held out of training; the final model's accuracy
    on them (`eval_accuracy`, main process) says whether its ranking is worth its `weight`."""
    train, held = split_held_out(pairs, cfg.eval_fraction, seed)
    info = train_variants(out, cfg, seed,
                          lambda o, c, s: train_reward_model(o, base_model, train, c, s, init_seed=seed,
                                                             trainer_args=trainer_args,
                                                             template_kwargs=template_kwargs))
    if held and world().is_main:
        turns = prompt_turns(tokenizer_of(str(out / "model")), template_kwargs)  # as it trained (train_reward_model)
        held = [{**p, "prompt": turns(p["prompt"])} for p in held]
        wins = pairwise_wins(out / "model", held, cfg.score_batch_size, cfg.max_length, template_kwargs)
        accuracy = sum(wins) / len(wins)
        info = {**info, "eval_pairs": len(held), "eval_accuracy": round(accuracy, 4),
                "eval_by_capability": accuracy_by_capability(held, wins)}
        log.info("reward model: %.1f%% of %d held-out pairs ranked right (50%% = chance)%s", 100 * accuracy, len(held),
                 by_capability(info["eval_by_capability"]))
    return info


def preference_data(scored_rounds: list[pa.Table], prompts: pa.Table, files: list[str],
                    pass_threshold: float) -> list[dict]:
    """Every RM pair: each preference file's (expanded) rankings, then each round's verifier pairs."""
    pairs = [p for f in files for p in read_preference_file(Path(f))]
    for r, scored in enumerate(scored_rounds, 1):
        pairs += [{**p, "prompt_id": f"{p['prompt_id']}/round{r}"}
                  for p in preference_pairs(scored, prompts, pass_threshold)]
    return pairs


def read_preference_file(path: Path) -> list[dict]:
    """A JSONL of human (or other) preference data -> RM pair records, every error naming file:line.

    Each line: {"prompt": messages or text, "ranking": [best, ..., worst]} or {"prompt", "chosen",
    "rejected"} with an optional "edited" (better than chosen, Llama 3's edited responses). Responses
    are assistant texts. A ranking expands into every ordered pair (`expand_ranking`); pair ids are
    "<file name>:<line>/<better>><worse>".
    """
    pairs = []
    for where, _label, rec in jsonl_records(Path(path)):
        if not isinstance(rec, dict):
            raise SchemaError(f"{where}: a preference record is a JSON object, got {type(rec).__name__}")
        prompt = rec.get("prompt")
        if isinstance(prompt, str) and prompt:
            prompt = [{"role": "user", "content": prompt}]
        if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                             and isinstance(m.get("content"), str) for m in prompt)):
            raise SchemaError(f"{where}: 'prompt' must be text or a non-empty list of {{role, content}} messages")
        if "ranking" in rec:
            ranking = rec["ranking"]
        elif "chosen" in rec and "rejected" in rec:
            ranking = ([rec["edited"]] if rec.get("edited") is not None else []) + [rec["chosen"], rec["rejected"]]
        else:
            raise SchemaError(f"{where}: needs 'ranking' (best first) or 'chosen' and 'rejected'")
        if not (isinstance(ranking, list) and len(ranking) >= 2 and all(isinstance(x, str) for x in ranking)):
            raise SchemaError(f"{where}: a ranking is a list of at least 2 response texts, best first")
        for i, j in expand_ranking(ranking):
            pairs.append({"prompt_id": f"{Path(path).name}:{where.rsplit(':', 1)[1]}/{i}>{j}",
                          "capability": PREFERENCE_FILES, "prompt": prompt,
                          "chosen": [{"role": "assistant", "content": ranking[i]}],
                          "rejected": [{"role": "assistant", "content": ranking[j]}]})
    return pairs


def stage(ctx: Context, r: int, scored: StageOutput) -> StageOutput:
    """With `reward_model.enabled`: an RM trained from the base on the preference data of every round so far
    scores this round's samples. What selection ranks either way, recorded in ctx.ranked."""
    recipe = ctx.recipe
    if recipe.reward_model.enabled:
        ctx.engines.close()  # training: the generation engine's memory back first
        config = {"rm": outputs(recipe.reward_model, "weight"),  # the weight only ranks, in select
                  "pass_threshold": recipe.select.pass_threshold,
                  "files": digests(recipe.reward_model.preference_sources)}
        so_far, stages = list(range(1, r + 1)), list(ctx.scored)  # every round's samples: their prompts by id
        asked = known_prompts(ctx.prompts.path, so_far)
        scored = ctx.run.stage(r, "reward_model", config, [ctx.base, *stages, *ctx.train_parts(so_far)],
                               lambda out: reward_model(
            out, ctx.base.model, [read(s, "scored") for s in stages], asked, recipe.reward_model,
            recipe.select.pass_threshold, ctx.seed, ctx.tracked(r, "reward_model"), ctx.template_kwargs),
            resumable=True, mode="all")
    ctx.ranked.append(scored)
    return scored
