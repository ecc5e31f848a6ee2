"""Eval stage: greedy pass@1 on held-out prompts, per capability and overall (mean over capabilities)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from posttrain import schema
from posttrain.config import EvalConfig, ScoreConfig
from posttrain.engine import Engine
from posttrain.generate import requests_for
from posttrain.scoring import score_samples


def accuracy(evals: list[dict]) -> dict[str, float]:
    """{capability: fraction of rows with reward >= 1, "overall": mean over capabilities}; None rewards excluded."""
    per: dict[str, list[bool]] = {}
    for row in evals:
        if row["reward"] is not None:
            per.setdefault(row["capability"], []).append(row["reward"] >= 1.0)
    acc = {cap: round(sum(v) / len(v), 4) for cap, v in sorted(per.items())}
    acc["overall"] = round(sum(acc.values()) / len(acc), 4) if acc else 0.0
    return acc


def evaluate(out: Path, engine: Engine, heldout: pa.Table, tokenizer, cfg: EvalConfig, score_cfg: ScoreConfig,
             seed: int) -> dict:
    requests = requests_for(heldout, tokenizer, n=1, temperature=0.0, top_p=1.0, max_tokens=cfg.max_tokens, seed=seed)
    results = engine.generate(requests)
    samples = schema.from_records([
        {"prompt_id": pid, "sample_index": 0, "completion": r["completions"][0]["text"],
         "num_prompt_tokens": r["num_prompt_tokens"], "num_completion_tokens": r["completions"][0]["num_tokens"],
         "logprob": r["completions"][0]["logprob"], "finish_reason": r["completions"][0]["finish_reason"]}
        for pid, r in zip(heldout.column("id").to_pylist(), results)], "samples")
    scored = score_samples(samples, heldout, score_cfg)
    evals = scored.select(schema.EVALS.names)
    rows = schema.write(evals, "evals", out / "evals.parquet")
    acc = accuracy(evals.to_pylist())
    (out / "eval.json").write_text(json.dumps(acc, indent=2))
    return {"evals": rows, "accuracy": acc}
