"""Generate stage: K completions per prompt from the current policy with vLLM `n=K`."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pyarrow as pa

from posttrain.run import schema
from posttrain.recipe.config import GenerateConfig
from posttrain.models.chat_turns import Chat
from posttrain.models.engine import Engine, generation_progress
from posttrain.run.dist import shard
from posttrain.run.fingerprint import outputs
from posttrain.stages.context import Context
from posttrain.run.faults import kill_if, stage_point
from posttrain.run.rundir import StageOutput, write_json
from posttrain.run.dist import in_prompt_order, read_shards

log = logging.getLogger("posttrain")


class PromptTooLong(ValueError):
    """A prompt does not fit the context and the recipe says `generate.too_long: error`."""


def prompt_seed(seed: int, prompt_id: str) -> int:
    """A per-prompt sampling seed: a prompt samples the same completions whatever batch or shard it is in."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{prompt_id}".encode()).digest()[:4], "little") >> 1


def prompt_temperature(cfg: GenerateConfig, seed: int, prompt_id: str, last_round: bool) -> float:
    """`cfg.temperature`, or before the last round a per-prompt draw from `cfg.temperature_range`
    (seeded by prompt id, so a resumed or sharded run draws the same temperature)."""
    if cfg.temperature_range is None or last_round:
        return cfg.temperature
    low, high = cfg.temperature_range
    u = prompt_seed(seed, f"temperature/{prompt_id}") / 2**31
    return round(low + (high - low) * u, 4)


def with_system_prompt(messages: list[dict], steer: str | None) -> list[dict]:
    """The prompt as sampled: a capability's steering system prompt goes first (before any system
    message the prompt already has, e.g. a tool list)."""
    if not steer:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{steer}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": steer}, *messages]


def requests_for(prompts: pa.Table, chat: Chat, *, n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int, max_model_len: int | None, system_prompts: dict[str, str] | None = None,
                 ) -> tuple[dict[str, dict], list[str]]:
    """({prompt id: engine request}, ids of prompts too long to leave `max_tokens` of context).

    The chat template renders the prompt exactly as SFT/DPO will (plus the steering system prompt): the same
    turns and template variables (`chat`)."""
    requests, too_long = {}, []
    for p in prompts.select(["id", "capability", "messages"]).to_pylist():
        ids = chat.prompt_ids(with_system_prompt(p["messages"], (system_prompts or {}).get(p["capability"])))
        if max_model_len is not None and len(ids) + max_tokens > max_model_len:
            too_long.append(p["id"])
            continue
        requests[p["id"]] = {"prompt_token_ids": ids, "n": n, "temperature": temperature, "top_p": top_p,
                             "max_tokens": max_tokens, "seed": prompt_seed(seed, p["id"])}
    return requests, too_long


def completion_rows(requests: dict[str, dict], results: list[dict]) -> list[dict]:
    """Engine results (in request order) -> `samples` rows, joined back to their prompt ids."""
    rows = []
    for prompt_id, result in zip(requests, results, strict=True):
        for i, c in enumerate(result["completions"]):
            rows.append({"prompt_id": prompt_id, "sample_index": i, "completion": c["text"],
                         "num_prompt_tokens": result["num_prompt_tokens"], "num_completion_tokens": c["num_tokens"],
                         "logprob": c["logprob"], "finish_reason": c["finish_reason"]})
    return rows


def fitting_requests(prompts: pa.Table, chat: Chat, cfg: GenerateConfig, seed: int, max_model_len: int | None
                     ) -> tuple[dict[str, dict], list[str]]:
    """`requests_for` at the recipe's sampling settings; raises PromptTooLong when a prompt does not fit and
    `generate.too_long` is "error". The round calls it once before any model work, so that error comes first."""
    requests, too_long = requests_for(prompts, chat, n=cfg.num_samples, temperature=cfg.temperature,
                                      top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed,
                                      max_model_len=max_model_len, system_prompts=cfg.system_prompts)
    if too_long and cfg.too_long == "error":
        raise PromptTooLong(f"{len(too_long)} prompt(s) leave fewer than generate.max_tokens={cfg.max_tokens} of the "
                            f"{max_model_len}-token context, e.g. {too_long[:3]}; shorten them, raise "
                            f"generate.max_model_len, or set generate.too_long: drop")
    return requests, too_long


def generate(out: Path, engine: Engine, prompts: pa.Table, chat: Chat, cfg: GenerateConfig, seed: int,
             last_round: bool = True, partial: Path | None = None) -> dict:
    """K samples of every prompt that fits the context. `partial`: where each chunk's results are kept as it
    finishes (RunDir.partial_dir), so a rerun after a kill generates only the chunks not yet there."""
    requests, too_long = fitting_requests(prompts, chat, cfg, seed, engine.max_model_len)
    if too_long:  # dropped and counted: a prompt the model cannot read has nothing to teach
        log.warning("generate: %d prompt(s) leave fewer than max_tokens=%d of the %d-token context; skipped, e.g. %s",
                    len(too_long), cfg.max_tokens, engine.max_model_len, too_long[:3])
    for pid, request in requests.items():
        request["temperature"] = prompt_temperature(cfg, seed, pid, last_round)
    rows = completion_rows(requests, in_chunks(engine, list(requests.values()), cfg.chunk_samples, partial))
    table = schema.from_records(rows, "samples", str(out / "samples.parquet"))
    return {"samples": schema.write(table, "samples", out / "samples.parquet"), "too_long": len(too_long),
            "completion_tokens": sum(r["num_completion_tokens"] for r in rows)}


def in_chunks(engine: Engine, requests: list[dict], chunk_samples: int, partial: Path | None,
              desc: str = "generate", point: str = "chunk") -> list[dict]:
    """`engine.generate(requests)`, a chunk of about `chunk_samples` samples at a time, each chunk's results
    written to `partial` when it is done, named by the chunk's requests (prompt tokens, per-prompt seed and
    sampling settings; the stage's fingerprint covers the model): any rank, any later run of the stage that asks
    the same finds them. A prompt samples the same with its own seed in any chunk, so chunking changes no
    sample (the `logprob` sums only in their last digits, as any batch composition does). `desc` names the work
    in the log; `point` + the chunk's index is its kill point in the stage (tests: "round_1/generate/chunk0")."""
    size = max(1, chunk_samples // max((r["n"] for r in requests), default=1))
    chunks = [requests[i:i + size] for i in range(0, len(requests), size)]
    paths = [partial / f"{_digest(chunk)}.json" if partial else None for chunk in chunks]
    kept = [json.loads(path.read_text()) if path and path.is_file() else None for path in paths]
    if any(kept):
        log.info("%s: %d of %d chunk(s) done before, kept", desc, sum(k is not None for k in kept), len(chunks))
    todo = [r for chunk, k in zip(chunks, kept) if k is None for r in chunk]
    done = [r for chunk, k in zip(chunks, kept) if k is not None for r in chunk]
    with generation_progress(todo, done, desc) as progress:
        for i, (chunk, path) in enumerate(zip(chunks, paths)):
            if kept[i] is None:
                kept[i] = engine.generate(chunk, progress=progress)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_json(path, kept[i])
                    kill_if(stage_point(path.parent.parent, f"{point}{i}"))
    return [result for chunk_results in kept for result in chunk_results]


def _digest(requests: list[dict]) -> str:
    return hashlib.sha256(json.dumps(requests, sort_keys=True).encode()).hexdigest()[:24]


def merge_samples(out: Path, shard_dirs: list[Path], results: list[dict], prompts: pa.Table) -> dict:
    """Sharded generate stage: every rank's samples, in the single-process order (prompt table order,
    then sample index); counts add up."""
    table = read_shards(shard_dirs, "samples")
    table = in_prompt_order(table, prompts.column("id").to_pylist())
    return {"samples": schema.write(table, "samples", out / "samples.parquet"),
            "too_long": sum(r["too_long"] for r in results),
            "completion_tokens": sum(r["completion_tokens"] for r in results)}


def stage(ctx: Context, r: int, policy: StageOutput) -> StageOutput:
    """Round r's samples: K completions per training prompt from the round's policy, sharded by prompt id."""
    g, last = ctx.recipe.generate, r == ctx.recipe.rounds
    train = ctx.train_prompts(r)
    # With a temperature schedule, whether this is the last round changes what is sampled.
    config = outputs(g) if g.temperature_range is None else {"generate": outputs(g), "last_round": last}
    engines = ctx.engines
    return ctx.run.stage(r, "generate", config, [policy, *ctx.train_parts([r])], lambda out: generate(
        out, engines.get(policy.model), shard(train, engines.world), ctx.chat(policy.model), g, ctx.round_seed(r),
        last_round=last, partial=ctx.run.partial_dir(r, "generate")),
        resumable=True, mode="shards", merge=lambda out, dirs, res: merge_samples(out, dirs, res, train))
