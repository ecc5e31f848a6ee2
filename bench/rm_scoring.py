"""Benchmark of reward-model scoring: length-sorted batches vs a naive one-sample-at-a-time loop.

    .venv/bin/python bench/rm_scoring.py                  # 512 samples, batch 64, ~10M-parameter RM

Builds a random-init LlamaForSequenceClassification (~10M parameters: hidden 384, 4 layers, MLP 1536,
a 512-token tokenizer of the project's kind), saves it, and scores the same N (prompt, completion)
inputs, 20..200 tokens long after the chat template, two ways on the same device (CUDA if available):

  naive    for each sample: apply_chat_template, one forward, .item()  (the model loaded once)
  batched  reward.model.score_with_reward_model: sorted by length, padded per batch, one forward per batch

Both time end to end (model load, tokenization, forwards), after one warm-up call. Prints samples/s for both, the
ratio, and the largest difference between the two score lists (same numbers up to float rounding).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig, LlamaForSequenceClassification  # noqa: E402

from posttrain.tiny.base import train_tokenizer  # noqa: E402
from reward.model import score_with_reward_model  # noqa: E402

WORDS = ("the of and to in is it that for on with as was at by an be this have from or one had not but what all "
         "were when we there can said which do their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could people my than first "
         "water been call who oil its now find long down day did get come made may part answer apples trains").split()


def build(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(2000)]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=6,
        intermediate_size=1536, max_position_embeddings=512, num_labels=1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    print(f"model: {model.num_parameters() / 1e6:.1f}M parameters, {len(tokenizer)}-token vocabulary")


def inputs(path: Path, n: int, seed: int) -> tuple[list[list[dict]], list[str], list[int]]:
    """n (prompt, completion) pairs whose templated length is drawn uniformly from 20..200 tokens."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    rng = random.Random(seed)
    prompts, completions, lengths = [], [], []
    for _ in range(n):
        target = rng.randint(20, 200)
        prompt = [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))}]
        words: list[str] = []
        while True:
            ids = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": " ".join(words)}],
                                                tokenize=True, return_dict=True)["input_ids"]
            if len(ids) >= target:
                break
            words.extend(rng.choice(WORDS) for _ in range(max(1, (target - len(ids)) // 2)))
        prompts.append(prompt)
        completions.append(" ".join(words))
        lengths.append(len(ids))
    return prompts, completions, lengths


def naive(path: Path, prompts: list[list[dict]], completions: list[str]) -> tuple[list[float], float]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device).eval()
    with torch.inference_mode():
        scores = []
        for p, c in zip(prompts, completions):
            ids = tokenizer.apply_chat_template(p + [{"role": "assistant", "content": c}], tokenize=True,
                                                return_dict=True)["input_ids"]
            scores.append(model(input_ids=torch.tensor([ids], device=device)).logits[0, 0].item())
        if device.type == "cuda":
            torch.cuda.synchronize()
    return scores, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rm"
        build(path, args.seed)
        prompts, completions, lengths = inputs(path, args.n, args.seed)
        print(f"inputs: {args.n} samples, {min(lengths)}..{max(lengths)} tokens "
              f"(mean {sum(lengths) / len(lengths):.0f})")

        score_with_reward_model(str(path), prompts[:8], completions[:8], batch_size=8, progress=False)  # warm-up
        naive_scores, naive_s = naive(path, prompts, completions)
        start = time.perf_counter()
        batched_scores = score_with_reward_model(str(path), prompts, completions, batch_size=args.batch_size,
                                                 progress=False)
        batched_s = time.perf_counter() - start

    diff = max(abs(a - b) for a, b in zip(naive_scores, batched_scores))
    print(f"naive   (1 at a time): {args.n / naive_s:8.1f} samples/s  ({naive_s:.2f} s)")
    print(f"batched (sorted, {args.batch_size:>3}): {args.n / batched_s:8.1f} samples/s  ({batched_s:.2f} s)")
    print(f"speed-up: {naive_s / batched_s:.1f}x   max |score difference|: {diff:.2e}")


if __name__ == "__main__":
    main()
