"""Eval stage: every benchmark of the recipe, generated with vLLM, scored by its verifier.

Sets: "heldout" (the prompts stage's held-out split, scored with the recipe's verifiers, accuracy per
capability) and the shipped benchmarks of eval/benchmarks (scored with the benchmark's verifier).
For each set: pass@k for every k of `eval.pass_k` (unbiased estimator over `eval.num_samples`
samples), item counts, prompts too long for the context (scored as failures: a model that cannot read
the question has not answered it), and the benchmark's own metrics (e.g. accuracy per language).
Writes evals.parquet (one row per set/item/sample) and eval.json ({set: {metric: value}}).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from eval import metrics
from eval.benchmarks import get as get_benchmark
from posttrain.run import schema
from posttrain.recipe.config import EvalConfig, ScoreConfig
from posttrain.run.dist import in_prompt_order, read_shards, shard
from posttrain.models.chat_turns import Chat
from posttrain.models.engine import Engine
from posttrain.stages.generate import completion_rows, in_chunks, requests_for
from posttrain.stages.scoring import score_samples
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context
from eval.benchmarks import BENCHMARKS

# (generate.chunk_samples, the stage's partial folder): each set generated a chunk at a time, every finished
# chunk kept for a rerun of a killed eval (generate.in_chunks); None: one engine call per set, nothing kept.
Chunks = tuple[int, Path | None] | None

TOO_LONG = "prompt too long for the context"


ALL = "all"  # benchmarks/all.parquet: every item of every shipped benchmark, what decontamination guards


def load_benchmarks(out: Path, names: list[str], limit: int | None, seed: int) -> dict:
    """Stage `benchmarks`: each named benchmark's items as a prompts table, benchmarks/<name>.parquet, and
    every item of every shipped benchmark (named or not, whatever `limit`) in benchmarks/all.parquet."""
    everything = [schema.check_prompt_record(r, f"benchmark {name}") for name in BENCHMARKS
                  for r in get_benchmark(name).load(None, seed)]
    counts = {ALL: schema.write(schema.from_records(everything, "prompts", "benchmarks"), "prompts",
                                out / f"{ALL}.parquet")}
    for name in names:
        if name == "heldout":
            continue
        bench = get_benchmark(name)
        records = [schema.check_prompt_record(r, f"benchmark {name}") for r in bench.load(limit, seed)]
        counts[name] = schema.write(schema.from_records(records, "prompts", f"benchmark {name}"), "prompts",
                                    out / f"{name}.parquet")
    return counts


def eval_sets(names: list[str], heldout: pa.Table, benchmarks_dir: Path | None, score_cfg: ScoreConfig
              ) -> dict[str, tuple[pa.Table, dict[str, str]]]:
    """{set name: (prompts, capability -> verifier)} in the recipe's order."""
    sets = {}
    for name in names:
        if name == "heldout":
            sets[name] = (heldout, score_cfg.verifiers)
        else:
            bench = get_benchmark(name)
            sets[name] = (schema.read(benchmarks_dir / f"{name}.parquet", "prompts"),
                          {bench.capability: bench.verifier})
    return sets


def evaluate(out: Path, engine: Engine, chat: Chat, sets: dict[str, tuple[pa.Table, dict[str, str]]],
             cfg: EvalConfig, score_cfg: ScoreConfig, seed: int, chunks: Chunks = None) -> dict:
    """One process, every set: writes evals.parquet and eval.json; returns the manifest results."""
    return write_scores(out, eval_rows(engine, chat, sets, cfg, score_cfg, seed, chunks), sets, cfg)


def evaluate_shard(out: Path, engine: Engine, chat: Chat, sets: dict[str, tuple[pa.Table, dict[str, str]]],
                   cfg: EvalConfig, score_cfg: ScoreConfig, seed: int, w, chunks: Chunks = None) -> dict:
    """One rank of a sharded eval: its share of every set's items -> out/evals.parquet (no metrics)."""
    mine = {name: (shard(prompts, w), verifiers) for name, (prompts, verifiers) in sets.items()}
    return {"evals": schema.write(eval_rows(engine, chat, mine, cfg, score_cfg, seed, chunks), "evals",
                                  out / "evals.parquet")}


def merge_evals(out: Path, shard_dirs: list[Path], _results: list[dict],
                sets: dict[str, tuple[pa.Table, dict[str, str]]], cfg: EvalConfig) -> dict:
    """Sharded eval: every rank's rows in the single-process order, then the metrics over all of them."""
    table = read_shards(shard_dirs, "evals")
    ordered = [in_prompt_order(table.filter(pc.equal(table["benchmark"], name)), prompts.column("id").to_pylist())
               for name, (prompts, _) in sets.items()]
    return write_scores(out, pa.concat_tables(ordered) if ordered else table, sets, cfg)


def eval_rows(engine: Engine, chat: Chat, sets: dict[str, tuple[pa.Table, dict[str, str]]], cfg: EvalConfig,
              score_cfg: ScoreConfig, seed: int, chunks: Chunks = None) -> pa.Table:
    """Every set's completions and verdicts as an `evals` table (set order, then prompt order)."""
    tables = [in_prompt_order(schema.from_records(set_rows(name, engine, chat, prompts, verifiers, cfg,
                                                           score_cfg, seed, chunks), "evals", f"eval {name}"),
                              prompts.column("id").to_pylist())
              for name, (prompts, verifiers) in sets.items()]
    return pa.concat_tables(tables) if tables else schema.EVALS.empty_table()


def write_scores(out: Path, evals: pa.Table, sets: dict[str, tuple[pa.Table, dict[str, str]]],
                 cfg: EvalConfig) -> dict:
    rows = schema.write(evals, "evals", out / "evals.parquet")
    scores = {name: set_scores(name, evals.filter(pc.equal(evals["benchmark"], name)).to_pylist(), prompts, cfg)
              for name, (prompts, _) in sets.items()}
    (out / "eval.json").write_text(json.dumps(scores, indent=2))
    return {"evals": rows, "scores": scores}


def set_rows(name: str, engine: Engine, chat: Chat, prompts: pa.Table, verifiers: dict[str, str],
             cfg: EvalConfig, score_cfg: ScoreConfig, seed: int, chunks: Chunks = None) -> list[dict]:
    """One set's rows: generated (a chunk at a time, kept as each finishes: `chunks`) and scored; prompts too
    long for the context are failures."""
    requests, too_long = requests_for(prompts, chat, n=cfg.num_samples, temperature=cfg.temperature,
                                      top_p=1.0, max_tokens=cfg.max_tokens, seed=seed,
                                      max_model_len=engine.max_model_len)
    chunk_samples, partial = chunks or (max(1, len(requests) * cfg.num_samples), None)
    samples = completion_rows(requests, in_chunks(engine, list(requests.values()), chunk_samples, partial,
                                                  desc=f"eval {name}", point=f"{name}/chunk"))
    answers_only = dataclasses.replace(score_cfg, check_steps=[])  # eval grades answers, as benchmarks do
    scored = score_samples(schema.from_records(samples, "samples"), prompts, answers_only, verifiers).to_pylist()
    capability = dict(zip(prompts["id"].to_pylist(), prompts["capability"].to_pylist()))
    scored += [{"prompt_id": pid, "sample_index": i, "capability": capability[pid], "completion": "",
                "reward": 0.0, "reason": TOO_LONG} for pid in too_long for i in range(cfg.num_samples)]
    for r in scored:
        r["benchmark"] = name
    return scored


def set_scores(name: str, rows: list[dict], prompts: pa.Table, cfg: EvalConfig) -> dict:
    """{metric: value} of one set from all of its rows and its full prompt table."""
    too_long = len({r["prompt_id"] for r in rows if r["reason"] == TOO_LONG})
    result = {"items": prompts.num_rows, "too_long": too_long, **metrics.pass_rates(rows, cfg.pass_k)}
    if name == "heldout":
        result["accuracy"] = metrics.accuracy_by_capability(rows)
    elif (extra := get_benchmark(name).metrics) is not None:
        by_id = {p["id"]: p for p in prompts.to_pylist()}
        result.update(extra([{**by_id[r["prompt_id"]], **r} for r in rows]))
    return result


def stage(ctx: Context, r: int, policy: StageOutput) -> StageOutput:
    """Every eval set of the recipe on round r's policy (round 0: the base), sharded by item over the engines.
    The fingerprint holds what the engine decides about an eval beside its own section: dtype, context (too
    long), eager."""
    recipe, engines, ev = ctx.recipe, ctx.engines, ctx.recipe.eval
    sets = ctx.eval_sets
    config = {"eval": ev, "score": ctx.score_config, "engine": {
        k: getattr(recipe.generate, k) for k in ("dtype", "max_model_len", "enforce_eager")}}
    chunks = (recipe.generate.chunk_samples, ctx.run.partial_dir(r, "eval"))
    return ctx.run.stage(r, "eval", config, [policy, ctx.prompts.part("heldout.parquet"), ctx.benchmarks],
                         lambda out: evaluate_shard(out, engines.get(policy.model), ctx.chat(policy.model), sets,
                                                    ev, recipe.score, ctx.seed, engines.world, chunks),
                         resumable=True, mode="shards",
                         merge=lambda out, dirs, res: merge_evals(out, dirs, res, sets, ev))
