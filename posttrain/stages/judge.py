"""The judge stage (between select and mix, with `mix.judge.model`): data_mix/judge.py's LLM judge over the
round's new SFT examples, sharded by id over the ranks' vLLM engines like generation."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_mix.config import JudgeConfig
from data_mix.judge import judge
from posttrain.run.dist import in_prompt_order
from posttrain.stages.generate import prompt_seed
from data_mix.judge import templates
from posttrain.run.dist import shard
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read, tokenizer_of


def judge_shard(out: Path, sft: pa.Table, cfg: JudgeConfig, topics: dict[str, dict[str, str]], engine, tokenizer,
                seed: int, template_kwargs: dict | None = None) -> dict:
    """One rank's share of the judge stage: `sft` rows (its shard) -> out/judged.parquet; the counts.
    A rank with no rows (or no engine of its own) asks nothing and counts zeros."""
    judged, counts = judge(sft, cfg, topics, engine, tokenizer, partial(prompt_seed, seed), template_kwargs)
    pq.write_table(judged, out / "judged.parquet")
    return {"judged": judged.num_rows, "counts": counts}


def merge_judged(out: Path, shard_dirs: list[Path], results: list[dict], sft_ids: list[str]) -> dict:
    """Every rank's judgments in the single-process order (the sft table's); counts add up."""
    table = pa.concat_tables([pq.read_table(d / "judged.parquet") for d in shard_dirs])
    table = in_prompt_order(table, sft_ids, id_column="id", then=None)
    pq.write_table(table, out / "judged.parquet")
    counts = {j: {k: sum(r["counts"][j][k] for r in results) for k in c} for j, c in results[0]["counts"].items()}
    return {"judged": table.num_rows, "counts": counts}


def stage(ctx: Context, r: int, policy: StageOutput, chosen: StageOutput) -> StageOutput | None:
    """With `mix.judge.model`: the select stage's (`chosen`) new SFT examples judged, sharded by id over the
    engines; the round's policy judges (`model: policy`, its chat template with the recipe's variables) or the
    named model does (its template as it is). Recorded in ctx.judged."""
    cfg, topics, engines = ctx.recipe.mix.judge, ctx.recipe.mix.topics, ctx.engines
    if cfg.model is None:
        return None
    model = policy.model if cfg.model == "policy" else cfg.model
    new = read(chosen, "sft")
    config = {"judge": cfg, "topics": topics, "templates": templates(cfg.prompt_dir, cfg.judgments)}
    judged = ctx.run.stage(
        r, "judge", config, [chosen, *([policy] if cfg.model == "policy" else [])],
        lambda out: judge_shard(out, shard(new, engines.world), cfg, topics, engines.get(model), tokenizer_of(model),
                                ctx.seed, ctx.template_kwargs if cfg.model == "policy" else None),
        mode="shards", merge=lambda out, dirs, res: merge_judged(out, dirs, res, new["id"].to_pylist()))
    ctx.judged.append(judged)
    return judged
