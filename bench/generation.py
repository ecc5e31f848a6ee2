"""Generation throughput: vLLM `n=K` (prompt prefilled once) vs transformers `generate(num_return_sequences=K)`.

    python bench/generation.py [--prompts 8] [--new-tokens 64] [--ks 1 4 8]

Same random-init Llama (~100M parameters: hidden 768, 12 layers), same prompts, fp32, on this
machine's cores; prints new tokens/s for both and the ratio per K, measured in one run. Engine start
is timed separately: `--starts N` engines started (and closed) as spawned children, then N forked from
the fork server that imports vLLM once per process (its first start pays that import), and the ratio; and
each engine's first answer (a one-time cost there, e.g. a torch.compile, is paid by every round's engines).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def build_model(path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from posttrain.tiny.base import train_tokenizer

    tok = train_tokenizer([f"question {i}: what is {i} plus {i}?" for i in range(500)], vocab_size=512)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=768, num_hidden_layers=12,
                                         num_attention_heads=12, num_key_value_heads=12, intermediate_size=2048,
                                         max_position_embeddings=512,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    print(f"model: {model.num_parameters() / 1e6:.0f}M parameters")


def hf_generate(path: Path, prompts: list[list[int]], k: int, new_tokens: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    start = time.time()
    produced = 0
    with torch.inference_mode():
        for ids in prompts:  # one prompt at a time, K sequences each: HF's own n-samples path
            out = model.generate(torch.tensor([ids]), do_sample=True, temperature=1.0, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, num_return_sequences=k, pad_token_id=0)
            produced += (out.shape[1] - len(ids)) * k
    return produced / (time.time() - start)


def vllm_generate(engine, prompts: list[list[int]], k: int, new_tokens: int) -> float:
    requests = [{"prompt_token_ids": ids, "n": k, "temperature": 1.0, "top_p": 1.0, "max_tokens": new_tokens,
                 "seed": i} for i, ids in enumerate(prompts)]
    start = time.time()
    results = engine.generate(requests)
    produced = sum(c["num_tokens"] for r in results for c in r["completions"])
    return produced / (time.time() - start)


def engine_starts(path: Path, n: int, method: str) -> tuple[list[float], list[float]]:
    """Seconds to a ready engine, and then to its first answer (one short request, with the logprobs every
    request asks for), `n` times in turn (each closed before the next), by start method."""
    from posttrain.recipe.config import GenerateConfig
    from posttrain.models.engine import Engine

    os.environ["POSTTRAIN_ENGINE_START"] = method
    starts, firsts = [], []
    for _ in range(n):
        start = time.time()
        engine = Engine(path, GenerateConfig(dtype="float32"), seed=0, max_model_len=512)
        starts.append(time.time() - start)
        assert engine.start_method == method, engine.start_method
        start = time.time()
        engine.generate([{"prompt_token_ids": [1, 5, 6], "n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": 4,
                          "seed": 0}])
        firsts.append(time.time() - start)
        engine.close()
    del os.environ["POSTTRAIN_ENGINE_START"]
    return starts, firsts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--ks", type=int, nargs="*", default=[1, 4, 8], help="K values (none: engine starts only)")
    p.add_argument("--starts", type=int, default=3, help="engine starts per start method (0: skip)")
    args = p.parse_args()
    from posttrain.recipe.config import GenerateConfig
    from posttrain.models.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        build_model(path)
        prompts = [[1] + [(7 * i + j) % 500 + 5 for j in range(32)] for i in range(args.prompts)]
        if args.starts:
            (spawned, s_first), (forked, f_first) = (engine_starts(path, args.starts, m)
                                                     for m in ("spawn", "forkserver"))
            print("engine start, s: spawned " + " ".join(f"{t:.1f}" for t in spawned) + ", fork server "
                  + " ".join(f"{t:.1f}" for t in forked) + f" (first pays vLLM's import); {args.starts} starts "
                  f"{sum(spawned) / sum(forked):.1f}x faster from the fork server")
            print("first answer after start, s: spawned " + " ".join(f"{t:.2f}" for t in s_first) + ", fork server "
                  + " ".join(f"{t:.2f}" for t in f_first))
        start = time.time()
        # ignore_eos is not exposed: random weights rarely hit EOS, and tokens/s counts what was produced.
        engine = Engine(path, GenerateConfig(dtype="float32"), seed=0, max_model_len=512)
        print(f"vLLM engine start: {time.time() - start:.1f} s")
        print(f"{'K':>3} {'HF tok/s':>10} {'vLLM tok/s':>11} {'ratio':>6}")
        try:
            for k in args.ks:
                hf = hf_generate(path, prompts, k, args.new_tokens)
                vl = vllm_generate(engine, prompts, k, args.new_tokens)
                print(f"{k:>3} {hf:>10.0f} {vl:>11.0f} {vl / hf:>5.1f}x", flush=True)
        finally:
            engine.close()


if __name__ == "__main__":
    main()
