"""Revise stage (Llama 3 §4.3.1, execution feedback and self-correction): a prompt none of whose K samples
passed its verifier gets its best failing sample back with the verifier's reason (the failing assertion,
the exception, the timeout), and the policy answers again; the revisions are scored like the samples.

The output is the score stage's table plus the revisions, as more samples of the same prompts
(sample_index K, K+1, ...): selection then takes a passing revision as the prompt's SFT answer and can
pair it, as chosen, against the failing first try. In the paper about 20% of initially wrong code
solutions were corrected this way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from posttrain.run import schema
from posttrain.recipe.config import GenerateConfig, ReviseConfig, ScoreConfig
from posttrain.models.chat_turns import Chat
from posttrain.models.engine import Engine
from posttrain.stages.generate import completion_rows, in_chunks, prompt_seed, requests_for
from posttrain.stages.scoring import score_samples
from posttrain.run import fingerprint
from posttrain.run.dist import shard
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read
from posttrain.run.dist import in_prompt_order, read_shards

log = logging.getLogger("posttrain")


def failed_first_tries(scored: pa.Table, capabilities: list[str], pass_threshold: float) -> dict[str, dict]:
    """{prompt id: its best failing sample} for the prompts of `capabilities` that a verifier scored and
    none of whose samples passed (best = highest reward, then lowest sample index)."""
    best: dict[str, dict] = {}
    passed: set[str] = set()
    for row in scored.select(["prompt_id", "sample_index", "capability", "reward", "reason", "completion"]).to_pylist():
        if row["capability"] not in capabilities or row["reward"] is None:
            continue
        if row["reward"] >= pass_threshold:
            passed.add(row["prompt_id"])
            continue
        kept = best.get(row["prompt_id"])
        if kept is None or (row["reward"], -row["sample_index"]) > (kept["reward"], -kept["sample_index"]):
            best[row["prompt_id"]] = row
    return {pid: row for pid, row in best.items() if pid not in passed}


def revision_prompts(prompts: pa.Table, failed: dict[str, dict], feedback: str) -> pa.Table:
    """The failed prompts as revision conversations: the prompt, the failing answer, the feedback turn."""
    rows = []
    for p in prompts.filter(pc.is_in(prompts["id"], pa.array(list(failed), pa.string()))).to_pylist():
        first = failed[p["id"]]
        p["messages"] = [*p["messages"], {"role": "assistant", "content": first["completion"]},
                         {"role": "user", "content": feedback.format(reason=first["reason"] or "wrong answer")}]
        rows.append(p)
    return pa.Table.from_pylist(rows, schema=prompts.schema)


def revise(out: Path, engine: Engine, scored: pa.Table, prompts: pa.Table, chat: Chat, cfg: ReviseConfig,
           gen: GenerateConfig, score_cfg: ScoreConfig, pass_threshold: float, seed: int,
           partial: Path | None = None) -> dict:
    """This shard's scored samples plus the scored revisions of its failed prompts -> out/scored.parquet.
    `partial`: where each chunk of revisions is kept as it finishes (generate.in_chunks)."""
    failed = failed_first_tries(scored, cfg.capabilities, pass_threshold)
    conversations = revision_prompts(prompts, failed, cfg.feedback)
    requests, too_long = requests_for(conversations, chat, n=cfg.samples, temperature=gen.temperature,
                                      top_p=gen.top_p, max_tokens=gen.max_tokens, seed=seed,
                                      max_model_len=engine.max_model_len, system_prompts=gen.system_prompts)
    for pid, request in requests.items():  # a revision's own seed: not the first try's samples again
        request["seed"] = prompt_seed(seed, f"revise/{pid}")
    rows = completion_rows(requests, in_chunks(engine, list(requests.values()), gen.chunk_samples, partial, "revise"))
    first_index = scored.group_by("prompt_id").aggregate([("sample_index", "max")])
    after = dict(zip(first_index["prompt_id"].to_pylist(), first_index["sample_index_max"].to_pylist()))
    for row in rows:  # the revisions continue the prompt's sample indices
        row["sample_index"] += after[row["prompt_id"]] + 1
        row["logprob"] = None  # sampled after the feedback turn: not a logprob given the prompt alone
    revisions = score_samples(schema.from_records(rows, "samples"), prompts, score_cfg)
    rescued = {r["prompt_id"] for r in revisions.select(["prompt_id", "reward"]).to_pylist()
               if r["reward"] is not None and r["reward"] >= pass_threshold}
    if too_long:
        log.warning("revise: %d failed prompt(s) too long to revise with max_tokens=%d, e.g. %s", len(too_long),
                    gen.max_tokens, too_long[:3])
    table = pa.concat_tables([scored, revisions.cast(scored.schema)])
    return {"scored": schema.write(table, "scored", out / "scored.parquet"), "failed_prompts": len(failed),
            "revisions": revisions.num_rows, "rescued_prompts": len(rescued), "too_long": len(too_long)}


def merge_revised(out: Path, shard_dirs: list[Path], results: list[dict], prompts: pa.Table) -> dict:
    """Sharded revise stage: every rank's table in the single-process order; counts add up."""
    table = in_prompt_order(read_shards(shard_dirs, "scored"), prompts.column("id").to_pylist())
    counts = {k: sum(r[k] for r in results) for k in ("failed_prompts", "revisions", "rescued_prompts", "too_long")}
    return {"scored": schema.write(table, "scored", out / "scored.parquet"), **counts}


def stage(ctx: Context, r: int, policy: StageOutput, tried: StageOutput) -> StageOutput:
    """With `revise.enabled`, failed code gets its error back and more tries (Llama 3 §4.3.1); the round's
    scored table either way, recorded in ctx.scored (what the reward model and the mix read)."""
    recipe, threshold, engines = ctx.recipe, ctx.recipe.select.pass_threshold, ctx.engines
    scored = tried
    if recipe.revise.enabled:
        train = ctx.train_prompts(r)
        config = {"revise": recipe.revise, "generate": fingerprint.outputs(recipe.generate),
                  "score": ctx.score_config, "pass_threshold": threshold}
        scored = ctx.run.stage(r, "revise", config, [policy, tried, *ctx.train_parts([r])], lambda out: revise(
            out, engines.get(policy.model), shard(read(tried, "scored"), engines.world, "prompt_id"), train,
            ctx.chat(policy.model), recipe.revise, recipe.generate, recipe.score, threshold, ctx.round_seed(r),
            ctx.run.partial_dir(r, "revise")),
            resumable=True, mode="shards", merge=lambda out, dirs, res: merge_revised(out, dirs, res, train))
    ctx.scored.append(scored)
    return scored
