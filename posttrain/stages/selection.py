"""Select stage: rejection sampling over scored samples, grouped by prompt id.

Per prompt, samples are ranked passing first (the verifier is a gate: reward >= pass_threshold), then
by score (highest first); ties break by a seeded hash of (prompt_id, sample_index), so the choice is
deterministic at a seed and independent of row order.
- SFT: the best passing sample (reward >= pass_threshold; the pass test uses the verifier alone).
- DPO: chosen = the best sample, rejected = the worst, if their verifier reward or their score differs
  by >= min_margin, the two completions differ and (`chosen_must_pass`) the chosen one passes.
Score = verifier reward + rm_weight x reward-model score (rm_weight 0: the verifier alone); the weight is
the prompt's capability's (`rm_weights`).
Samples whose reward is None (no verifier applies) or not finite (NaN / inf reward or RM score) take
part in neither. A sample cut at max_tokens (finish_reason "length") is never the SFT example or the DPO
chosen unless `keep_truncated`; it may be the rejected (SelectConfig says why). The stage's results count
both: `truncated` (samples cut at max_tokens, whatever keep_truncated says) and `nonfinite` (left out).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from posttrain.run import schema
from posttrain.recipe.config import SelectConfig
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read


def tiebreak(seed: int, prompt_id: str, sample_index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{prompt_id}/{sample_index}".encode()).digest()[:8], "big")


def rank(samples: list[dict], seed: int, rm_weight: float = 0.0, pass_threshold: float | None = None) -> list[dict]:
    """Samples of one prompt, best first: reward + rm_weight x reward-model score descending, then the
    seeded tiebreak. With rm_weight 0 (or no RM scores) the verifier reward alone decides.

    With `pass_threshold`, the verifier is a gate: every passing sample (reward >= pass_threshold) ranks
    above every failing one, whatever the RM thinks, and the score orders samples within each group."""
    # A non-finite reward or RM score (a broken scorer) ranks nothing: left out, like "not applicable".
    scored = [s for s in samples if s["reward"] is not None and not nonfinite(s)]
    fails = (lambda s: False) if pass_threshold is None else (lambda s: s["reward"] < pass_threshold)
    return sorted(scored, key=lambda s: (fails(s), -combined(s, rm_weight),
                                         tiebreak(seed, s["prompt_id"], s["sample_index"])))


def combined(sample: dict, rm_weight: float) -> float:
    return sample["reward"] + rm_weight * (sample.get("rm_score") or 0.0)


def nonfinite(sample: dict) -> bool:
    """The reward or the RM score is NaN / inf (a broken scorer); None (not applicable / no RM) is not."""
    return any(sample.get(k) is not None and not math.isfinite(sample[k]) for k in ("reward", "rm_score"))


def truncated(sample: dict) -> bool:
    """vLLM cut the sample at max_tokens. No finish_reason (rows scored elsewhere) counts as not truncated."""
    return sample.get("finish_reason") == "length"


def counts(scored: list[dict]) -> dict[str, int]:
    """The samples selection treats apart: cut at max_tokens (barred from SFT / chosen unless keep_truncated)
    and non-finite (left out). A sample may be both."""
    return {"truncated": sum(map(truncated, scored)), "nonfinite": sum(map(nonfinite, scored))}


def select(scored: list[dict], prompts: dict[str, dict], cfg: SelectConfig, seed: int, round_: int,
           rm_weights: dict[str, float] | None = None) -> tuple[list[dict], list[dict]]:
    """scored rows + prompts by id -> (sft records, pair records), both sorted by prompt id.
    rm_weights: the RM score's weight per capability (RewardModelConfig.weights(); a capability left out: 0)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in scored:
        groups[s["prompt_id"]].append(s)
    sft, pairs = [], []
    for prompt_id in sorted(groups):
        prompt = prompts[prompt_id]
        rm_weight = (rm_weights or {}).get(prompt["capability"], 0.0)
        ranked = rank(groups[prompt_id], seed, rm_weight, cfg.pass_threshold)
        if not ranked:
            continue
        # The chosen (and the SFT example) is the best sample that may be one; the rejected is the worst of
        # all, truncated or not: a reply cut at max_tokens is a fine negative.
        candidates = ranked if cfg.keep_truncated else [x for x in ranked if not truncated(x)]
        best, worst = (candidates[0] if candidates else None), ranked[-1]
        common = {"id": f"{prompt_id}/round{round_}", "prompt_id": prompt_id,
                  "capability": prompt["capability"], "round": round_}
        passing = next((x for x in candidates if x["reward"] >= cfg.pass_threshold), None)
        if passing is not None:
            sft.append({**common, "messages": prompt["messages"] + [_assistant(passing)], "reward": passing["reward"]})
        if best is None or best is worst:
            continue
        # Either the verifier or the whole score must separate them by min_margin: a pass vs a fail is a
        # pair even when the RM prefers the failing sample; two passes pair when the RM tells them apart.
        margin = max(best["reward"] - worst["reward"], combined(best, rm_weight) - combined(worst, rm_weight))
        # Passing samples rank first, so the best fails only when no candidate passes: never teach a wrong answer.
        chosen_ok = best["reward"] >= cfg.pass_threshold or not cfg.chosen_must_pass
        if margin >= cfg.min_margin and chosen_ok and best["completion"] != worst["completion"]:
            pairs.append({**common, "prompt": prompt["messages"], "chosen": [_assistant(best)],
                          "rejected": [_assistant(worst)], "chosen_reward": best["reward"],
                          "rejected_reward": worst["reward"]})
    return sft, pairs


def _assistant(sample: dict) -> dict:
    return {"role": "assistant", "content": sample["completion"]}


def run(out: Path, scored: pa.Table, prompts: pa.Table, cfg: SelectConfig, seed: int, round_: int,
        rm_weights: dict[str, float] | None = None) -> dict:
    by_id = {p["id"]: p for p in prompts.to_pylist()}
    rows = scored.to_pylist()
    sft, pairs = select(rows, by_id, cfg, seed, round_, rm_weights)
    return {
        "sft": schema.write(schema.from_records(sft, "sft"), "sft", out / "sft.parquet"),
        "pairs": schema.write(schema.from_records(pairs, "pairs"), "pairs", out / "pairs.parquet"),
        "prompts": len(set(scored.column("prompt_id").to_pylist())),
        **counts(rows),  # truncated, nonfinite
    }


def stage(ctx: Context, r: int, ranked: StageOutput) -> StageOutput:
    """Rejection sampling over the round's ranked samples; recorded in ctx.selected (the SFT history)."""
    recipe = ctx.recipe
    train = ctx.train_prompts(r)
    rm_weight = recipe.reward_model.weight  # one number, or one per capability
    selected = ctx.run.stage(r, "select", {"select": recipe.select, "rm_weight": rm_weight},
                             [ranked, *ctx.train_parts([r])], lambda out: run(
        out, read(ranked, "scored"), train, recipe.select, ctx.seed, r, recipe.reward_model.weights()))
    ctx.selected.append(selected)
    return selected
