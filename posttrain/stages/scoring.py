"""Score stage: every sample gets a reward and a reason from its capability's verifier, joined by prompt id."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from posttrain.run import schema
from posttrain.recipe.config import ScoreConfig
from posttrain.run.dist import in_prompt_order, read_shards
from posttrain.run.progress import Progress
from reward import steps, verifier
from posttrain.run.dist import shard, world
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read

META_COLUMNS = [f.name for f in schema.META]
SCORE_CHUNK = 256  # samples per verifier call: the unit of the score progress
log = logging.getLogger("posttrain")


def score_samples(samples: pa.Table, prompts: pa.Table, cfg: ScoreConfig,
                  verifiers: dict[str, str] | None = None, desc: str = "score") -> pa.Table:
    """samples (one row per prompt_id/sample_index) -> the `scored` table, in the same row order.

    `verifiers` (capability -> verifier name) defaults to the recipe's `score.verifiers`; an eval
    benchmark passes its own. `desc` names the work in the progress log."""
    verifiers = cfg.verifiers if verifiers is None else verifiers
    by_id = {p["id"]: p for p in prompts.to_pylist()}
    rows = samples.to_pylist()
    missing = {r["prompt_id"] for r in rows} - by_id.keys()
    if missing:
        raise KeyError(f"samples reference {len(missing)} unknown prompt id(s), e.g. {sorted(missing)[:3]}")
    by_verifier: dict[str | None, list[dict]] = {}  # a prompt's own verifier, else its capability's
    for r in rows:
        prompt = by_id[r["prompt_id"]]
        r["capability"] = prompt["capability"]
        by_verifier.setdefault(prompt.get("verifier") or verifiers.get(r["capability"]), []).append(r)
    with Progress(desc, len(rows), "samples") as progress:
        for name, group in by_verifier.items():
            if name is None:  # no verifier for this capability: not applicable, left to a reward model
                for r in group:
                    r.update(verifier="none", reward=None, reason="no verifier configured")
                progress.update(len(group))
                continue
            # In chunks, so that progress shows (sandboxed code takes seconds per sample that times out).
            for i in range(0, len(group), SCORE_CHUNK):
                chunk = group[i:i + SCORE_CHUNK]
                columns = {c: [by_id[r["prompt_id"]][c] for r in chunk] for c in [*META_COLUMNS, "messages"]}
                columns["prompts"] = columns.pop("messages")  # TRL's name for them
                verdicts = verifier(name)([r["completion"] for r in chunk], timeout_s=cfg.code_timeout_s,
                                          num_workers=cfg.num_workers, **columns)
                for r, v in zip(chunk, verdicts, strict=True):
                    r.update(verifier=name, reward=v.reward, reason=v.reason)
                progress.update(len(chunk))
    for r in rows:
        if r["capability"] in cfg.check_steps and r["reward"] and (step := steps.wrong_step(r["completion"])):
            r.update(reward=0.0, reason=f"{steps.REASON}: {step}")
    return schema.from_records(rows, "scored")


def score(out: Path, samples: pa.Table, prompts: pa.Table, cfg: ScoreConfig, pass_threshold: float = 1.0) -> dict:
    return score_results(score_samples(samples, prompts, cfg), out, pass_threshold)


def score_results(table: pa.Table, out: Path, pass_threshold: float = 1.0) -> dict:
    """Writes the scored table; its row count and the fraction of scored samples that pass, at the
    threshold rejection sampling uses (select.pass_threshold), recorded beside it for the report, and how
    many right answers `score.check_steps` failed for a false equation (`wrong_steps`), when any."""
    rewards = [x for x in table.column("reward").to_pylist() if x is not None]
    wrong_steps = sum((r or "").startswith(steps.REASON) for r in table.column("reason").to_pylist())
    return {"scored": schema.write(table, "scored", out / "scored.parquet"),
            "pass_rate": round(sum(x >= pass_threshold for x in rewards) / max(1, len(rewards)), 4),
            "pass_threshold": pass_threshold, **({"wrong_steps": wrong_steps} if wrong_steps else {})}


def merge_scored(out: Path, shard_dirs: list[Path], _results: list[dict], prompts: pa.Table,
                 pass_threshold: float = 1.0) -> dict:
    """Sharded score stage: every rank's scored samples, in the single-process order."""

    table = read_shards(shard_dirs, "scored")
    return score_results(in_prompt_order(table, prompts.column("id").to_pylist()), out, pass_threshold)


def stage(ctx: Context, r: int, samples: StageOutput) -> StageOutput:
    """Round r's samples scored by the recipe's verifiers, sharded by prompt id."""
    recipe, threshold = ctx.recipe, ctx.recipe.select.pass_threshold  # what counts as a pass in the pass_rate
    train = ctx.train_prompts(r)
    return ctx.run.stage(r, "score", {"score": ctx.score_config, "pass_threshold": threshold},
                         [samples, *ctx.train_parts([r])], lambda out: score(
        out, shard(read(samples, "samples"), world(), "prompt_id"), train, recipe.score, threshold),
        mode="shards", merge=lambda out, dirs, res: merge_scored(out, dirs, res, train, threshold))
