"""The mix stage: data_mix's dedup, decontamination, tagging and rebalancing (data_mix/mix.py) over the
selected SFT examples of the rounds trained on and this round's DPO pairs; validates what it reads and
writes sft.parquet, pairs.parquet and the audit tables (decontaminated, tags, semantic_dups)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_mix.config import MixConfig
from data_mix.mix import mix_tables
from posttrain.run import schema
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read
from posttrain.stages.evaluate import ALL


def mix(out: Path, sft_tables: list[pa.Table], pairs: pa.Table, heldout: pa.Table, cfg: MixConfig, seed: int,
        **kwargs) -> dict:
    """sft_tables: the `sft` tables of the rounds to train on (oldest first); pairs: this round's `pairs`; the
    rest as data_mix.mix.mix_tables. Returns the manifest's results: the tables' row counts and the steps' counts."""
    sft = pa.concat_tables([schema.validate(t, "sft") for t in sft_tables])
    mixed = mix_tables(sft, schema.validate(pairs, "pairs"), heldout, cfg, seed, **kwargs)
    for stem, table in mixed.tables.items():
        pq.write_table(table, out / f"{stem}.parquet")
    return {"sft": schema.write(mixed.sft, "sft", out / "sft.parquet"),
            "pairs": schema.write(mixed.pairs, "pairs", out / "pairs.parquet"), **mixed.counts}


def stage(ctx: Context, r: int) -> StageOutput:
    """The round's SFT mix and DPO pairs. The paper re-fine-tunes the base on all SFT data so far
    (`sft.start_from: base`); `previous` continues from the last policy on this round's alone."""
    recipe = ctx.recipe
    first = 1 if recipe.sft.start_from == "base" else r
    history, judgments = ctx.selected[first - 1:], ctx.judged[first - 1:]
    scores = {i: ctx.ranked[i - 1] for i in range(first, r + 1)}
    inputs = [*history, *scores.values(), ctx.prompts.part("heldout.parquet"), ctx.benchmarks, *judgments]
    return ctx.run.stage(r, "mix", recipe.mix, inputs, lambda out: mix(
        out, [read(s, "sft") for s in history], read(ctx.selected[-1], "pairs"), ctx.heldout, recipe.mix, ctx.seed,
        # decontamination guards training data against every shipped benchmark, not only the ones scored here
        benchmarks=schema.read(ctx.benchmarks.path / f"{ALL}.parquet", "prompts"),
        scored={i: read(s, "scored") for i, s in scores.items()}, pass_threshold=recipe.select.pass_threshold,
        judged=pa.concat_tables([pq.read_table(s.path / "judged.parquet") for s in judgments]) if judgments else None,
        judge_counts=judgments[-1].manifest["results"]["counts"] if judgments else None))
