"""Generate stage: K completions per prompt from the current policy with vLLM `n=K`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from posttrain import schema
from posttrain.config import GenerateConfig
from posttrain.engine import Engine


def prompt_seed(seed: int, prompt_id: str) -> int:
    """A per-prompt sampling seed: a prompt samples the same completions whatever batch or shard it is in."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{prompt_id}".encode()).digest()[:4], "little") >> 1


def requests_for(prompts: pa.Table, tokenizer, *, n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int) -> list[dict]:
    """One engine request per prompt row; the chat template renders the prompt exactly as SFT/DPO will."""
    return [{
        "prompt_token_ids": tokenizer.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=True,
                                                          return_dict=True)["input_ids"],
        "n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
        "seed": prompt_seed(seed, p["id"]),
    } for p in prompts.select(["id", "messages"]).to_pylist()]


def generate(out: Path, engine: Engine, prompts: pa.Table, tokenizer, cfg: GenerateConfig, seed: int) -> dict:
    requests = requests_for(prompts, tokenizer, n=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, seed=seed)
    results = engine.generate(requests)
    rows = []
    for prompt_id, result in zip(prompts.column("id").to_pylist(), results):
        for i, c in enumerate(result["completions"]):
            rows.append({"prompt_id": prompt_id, "sample_index": i, "completion": c["text"],
                         "num_prompt_tokens": result["num_prompt_tokens"], "num_completion_tokens": c["num_tokens"],
                         "logprob": c["logprob"], "finish_reason": c["finish_reason"]})
    table = schema.from_records(rows, "samples", str(out / "samples.parquet"))
    return {"samples": schema.write(table, "samples", out / "samples.parquet"),
            "completion_tokens": sum(r["num_completion_tokens"] for r in rows)}
