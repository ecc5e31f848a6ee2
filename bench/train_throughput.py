"""Training throughput of the SFT and DPO stages: TRL's defaults vs the stage's fast switches, same model and data.

    .venv/bin/python bench/train_throughput.py --repeats 2     # CPU: 10M-parameter random Llama, ~8 min a repeat
    python3 bench/train_throughput.py --device cuda --out r.jsonl  # GPU: Llama-3.2-1B shape (bench/gpu/run.sh)

Both variants of a pair build their trainer with the stage's own code (`posttrain.stages.sft.sft_trainer`,
`posttrain.stages.dpo.dpo_trainer`: assistant-only SFT loss; DPO sigmoid + NLL with formatting tokens masked),
from one saved random-init model and one synthetic data set (word-level conversations, lengths lognormal,
sigma 0.8: CPU median 120 tokens, max 512; GPU median 600, max 2048 like ../shared/gpu's baseline; DPO prompts
a quarter and completions half as long). Weights stay float32 as the stage loads them; on a GPU the stage's
bf16 autocast is on. Every variant runs in its own process (Liger patches model classes globally, and
peak RSS is per process) and times the steps after `--warmup`:

  sft_trl      stage defaults = TRL defaults: padded batches, gradient checkpointing
  sft_packed   padding-free packing into rows of max_length, rows kept apart (the stage's layout under sdpa)
  sft_packed_flat  the same with TRL's collator, which flattens a batch's rows into one (flash attention's layout)
  sft_fast     packing, no gradient checkpointing (sft_fast_liger: + use_liger_kernel; sft_fast_compile:
               + torch_compile; sft_nogc: padded, no gradient checkpointing)
  dpo_trl      stage defaults = TRL defaults: a reference forward every step, gradient checkpointing
  dpo_precompute  reference log-probs precomputed once
  dpo_fast     precomputed reference, length-grouped batches, no gradient checkpointing (dpo_fast_liger: + Liger)
  dpo_padding_free  dpo_fast with each batch's sequences packed into rows (no compute on padding; _liger: + Liger)
  dpo_shared_prefix  dpo_padding_free with each pair's prompt run once where that is estimated cheaper (_liger too)
  sft_fast_liger_b16  sft_fast_liger with 16 rows a step instead of 8
  sft_lora     sft_packed training r=16 LoRA adapters on a frozen base (sft_qlora: the base in 4-bit, bitsandbytes)

SFT reports tokens/s (tokens that are not padding). DPO reports pairs/s at the data set's mean pair
length (real tokens/s over mean real tokens per pair: length-grouped batches come longest first, so raw
pairs/s over a few steps would depend on which steps were timed) and, for a precomputing variant, the same
with the reference pass paid once per epoch of the data set. Peak memory: torch.cuda.max_memory_allocated
on a GPU, ru_maxrss on CPU. Ratios are against the `_trl` variant of the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {  # model shape and vocabulary, conversation lengths (median, max), batch, data set sizes
    "cpu": dict(model=dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                           num_key_value_heads=2, vocab_size=2048, tie_word_embeddings=True),
                median=120, max_length=512, batch_size=8, sft_docs=512, dpo_pairs=128),
    "cuda": dict(model=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                            num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
                 median=600, max_length=2048, batch_size=8, sft_docs=1024, dpo_pairs=256),
}
FAST = {"packing": True, "gradient_checkpointing": False}
DPO_FAST = {"precompute_ref_log_probs": True, "group_by_length": True, "gradient_checkpointing": False}
VARIANTS = {
    "sft_trl": {}, "sft_nogc": {"gradient_checkpointing": False}, "sft_packed": {"packing": True},
    "sft_packed_flat": {"packing": True},  # with TRL's own collator: a batch's packed rows flattened into one
    "sft_fast": FAST, "sft_fast_liger": {**FAST, "use_liger_kernel": True},
    "sft_fast_compile": {**FAST, "torch_compile": True},
    "dpo_trl": {}, "dpo_precompute": {"precompute_ref_log_probs": True}, "dpo_fast": DPO_FAST,
    "dpo_fast_liger": {**DPO_FAST, "use_liger_kernel": True},
    "dpo_padding_free": {**DPO_FAST, "padding_free": True},
    "dpo_padding_free_liger": {**DPO_FAST, "padding_free": True, "use_liger_kernel": True},
    "dpo_shared_prefix": {**DPO_FAST, "padding_free": True, "share_prefix": True},
    "dpo_shared_prefix_liger": {**DPO_FAST, "padding_free": True, "share_prefix": True, "use_liger_kernel": True},
    # the memory the fast path frees, spent on twice the rows per step
    "sft_fast_liger_b16": {**FAST, "use_liger_kernel": True, "batch_size": 16},
    # adapters on a frozen base (merged on save): r=16 on every linear layer; QLoRA's base in 4-bit NF4 (a GPU)
    "sft_lora": {"packing": True, "lora": {"r": 16}},
    "sft_qlora": {"packing": True, "lora": {"r": 16, "quantize_4bit": True}},
}
# 1,500 made-up two-syllable words, each one token once the tokenizer has learned them
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
WORDS = [a + b for a in SYLLABLES for b in SYLLABLES][:1500]


# --------------------------------------------------------------------------- model and data


def words(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n)))


def lognormal(rng: random.Random, median: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), 0.8))))


def prepare(workdir: Path, device: str) -> None:
    """The random-init model and a tokenizer whose vocabulary holds every made-up word."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from posttrain.tiny.base import train_tokenizer

    rng = random.Random(0)
    tok = train_tokenizer([words(200, rng) for _ in range(2000)], vocab_size=2048)
    size = SIZES[device]
    torch.manual_seed(0)
    with torch.device(device):  # a 1B model initialises in seconds on the GPU
        model = LlamaForCausalLM(LlamaConfig(**size["model"], max_position_embeddings=size["max_length"],
                                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                             pad_token_id=tok.pad_token_id))
    model.save_pretrained(workdir / "model")
    tok.save_pretrained(workdir / "model")
    print(f"model: {model.num_parameters() / 1e6:.0f}M parameters, {device}", flush=True)


def sft_mix(n: int, median: int, max_length: int):
    """n conversations of ~lognormal length: a user turn (a quarter) and an assistant turn."""
    from posttrain.run import schema

    rng = random.Random(1)
    rows = []
    for i in range(n):
        length = lognormal(rng, median, 32, max_length)
        msgs = [{"role": "user", "content": words(length // 4, rng)},
                {"role": "assistant", "content": words(length - length // 4 - 20, rng)}]  # 20: template tokens
        rows.append({"id": f"s{i}", "prompt_id": f"s{i}", "capability": "math", "round": 1, "reward": 1.0,
                     "messages": msgs})
    return schema.from_records(rows, "sft")


def dpo_pairs(n: int, median: int, max_length: int, prompt_scale: float = 1.0):
    """n pairs: prompt ~median/4 tokens (times `prompt_scale`), chosen ~median/2, rejected another pair's
    chosen length."""
    from posttrain.run import schema

    rng = random.Random(2)
    longest = int(max_length * min(0.5, prompt_scale / 4))
    prompts = [lognormal(rng, prompt_scale * median / 4, 16, longest) for _ in range(n)]
    completions = [lognormal(rng, median / 2, 16, max_length // 2) for _ in range(n)]
    rows = [{"id": f"p{i}", "prompt_id": f"p{i}", "capability": "math", "round": 1,
             "prompt": [{"role": "user", "content": words(prompts[i], rng)}],
             "chosen": [{"role": "assistant", "content": words(completions[i], rng)}],
             "rejected": [{"role": "assistant", "content": words(completions[-1 - i], rng)}],
             "chosen_reward": 1.0, "rejected_reward": 0.0} for i in range(n)]
    return schema.from_records(rows, "pairs")


# --------------------------------------------------------------------------- one variant, in its own process


def run_variant(workdir: Path, device: str, name: str, warmup: int, steps: int, prompt_scale: float = 1.0,
                profile: Path | None = None) -> dict:
    import torch
    from transformers import TrainerCallback

    from posttrain.recipe.config import DPOConfig, LoRAConfig, SFTConfig

    cuda = device == "cuda"
    switches = VARIANTS[name]
    size = SIZES[device]
    common = {"batch_size": size["batch_size"], "max_length": size["max_length"], **switches}
    if "lora" in common:
        common["lora"] = LoRAConfig(**common["lora"])
    # with `profile`, one more step after the timed ones runs under torch.profiler (its overhead untimed)
    overrides = dict(max_steps=warmup + steps + (profile is not None), save_strategy="no", logging_steps=10_000)
    out = workdir / name
    timing: dict = {"t0": None, "t1": None, "tokens": 0, "rows": 0, "steps": 0, "precompute_s": 0.0}

    def sync():
        if cuda:
            torch.cuda.synchronize()

    setup = time.perf_counter()
    if name.startswith("sft"):
        from posttrain.stages.sft import sft_trainer

        trainer, _ = sft_trainer(out, workdir / "model", sft_mix(size["sft_docs"], size["median"], size["max_length"]),
                                 SFTConfig(**common), 0, **overrides)
        if name == "sft_packed_flat":
            from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

            pad = trainer.data_collator.pad_token_id
            trainer.data_collator = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)
    else:
        from trl import DPOTrainer

        from posttrain.stages.dpo import dpo_trainer

        precompute = DPOTrainer._precompute_ref_logps

        def timed_precompute(self, *args, **kwargs):
            sync()
            start = time.perf_counter()
            result = precompute(self, *args, **kwargs)
            sync()
            timing["precompute_s"] += time.perf_counter() - start
            return result

        DPOTrainer._precompute_ref_logps = timed_precompute
        trainer, _ = dpo_trainer(out, workdir / "model",
                                 dpo_pairs(size["dpo_pairs"], size["median"], size["max_length"], prompt_scale),
                                 DPOConfig(**common), 0, **overrides)
    setup = time.perf_counter() - setup

    class Clock(TrainerCallback):
        profiler = None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                sync()
                timing["t0"] = time.perf_counter()
            if state.global_step == warmup + steps and profile is not None:
                sync()
                timing["t1"] = time.perf_counter()
                activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] * cuda)
                try:  # a profiler that cannot start (no CUPTI) costs the table, not the variant's numbers
                    self.profiler = torch.profiler.profile(activities=activities)
                    self.profiler.__enter__()
                except Exception as e:  # noqa: BLE001
                    print(f"profiler: {e!r}", file=sys.stderr)
                    self.profiler = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.profiler is None:
                return
            sync()
            try:
                self.profiler.__exit__(None, None, None)
                table = self.profiler.key_averages().table(
                    sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=40, max_name_column_width=80)
                profile.mkdir(parents=True, exist_ok=True)
                (profile / f"{name}.txt").write_text(f"{name}: one training step after the timed ones\n{table}\n")
            except Exception as e:  # noqa: BLE001
                print(f"profiler: {e!r}", file=sys.stderr)
            self.profiler = None

    trainer.add_callback(Clock())
    compute_loss = trainer.compute_loss

    def counting(model, inputs, *args, **kwargs):
        if timing["t0"] is not None and timing["t1"] is None:
            mask = inputs.get("attention_mask")
            timing["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            timing["rows"] += inputs["input_ids"].shape[0]
            timing["steps"] += 1
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = counting
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    sync()
    seconds = (timing["t1"] or time.perf_counter()) - timing["t0"]
    result = {"name": name, "device": torch.cuda.get_device_name() if cuda else "cpu", "switches": switches,
              "timed_steps": timing["steps"], "seconds": round(seconds, 2), "setup_s": round(setup, 1),
              "tokens_per_s": round(timing["tokens"] / seconds, 1)}
    if name.startswith("dpo"):
        ds = trainer.train_dataset
        limit = size["max_length"]
        per_pair = sum(min(limit, len(p) + len(c)) + min(limit, len(p) + len(r))  # real tokens of a pair's two rows
                       for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True))
        per_pair /= len(ds)
        rate = result["tokens_per_s"] / per_pair
        result |= {"pairs_per_s": round(rate, 3), "raw_pairs_per_s": round(timing["rows"] / 2 / seconds, 3),
                   "precompute_s": round(timing["precompute_s"], 1),
                   # one epoch of the data set, the reference pass included
                   "pairs_per_s_epoch": round(len(ds) / (len(ds) / rate + timing["precompute_s"]), 3)}
        if timing["precompute_s"]:  # the reference pass alone (forward only: ~3x a step's rate at equal efficiency)
            result["reference_pairs_per_s"] = round(len(ds) / timing["precompute_s"], 2)
    if cuda:
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        # the baseline's (../shared/gpu) MFU: 6 x matmul parameters x tokens/s over the dense bf16 peak (not for
        # adapters: a frozen base computes no weight gradients, ~4N)
        if "lora" not in switches:
            result["mfu_6N"] = round(6 * matmul_params(trainer.model.config) * result["tokens_per_s"] / PEAK_BF16, 3)
    else:
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16, the datasheet's figure (the baseline's MFU denominator)


def matmul_params(cfg) -> int:
    """Parameters that take part in a matmul per token: the layers' projections and the LM head."""
    h, i, layers, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = h // cfg.num_attention_heads * cfg.num_key_value_heads
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i) + v * h


# --------------------------------------------------------------------------- driver


def child(*args: str, timeout: float) -> dict | None:
    """Runs this script in a fresh process; its last stdout line is the JSON result."""
    try:
        res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  {args[-1]}: timed out after {timeout:.0f} s", flush=True)
        return None
    if res.returncode != 0:
        print(f"  {args[-1]}: failed (exit {res.returncode})\n{res.stderr[-3000:]}", flush=True)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1]) if "--run" in args else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                   default=["sft_trl", "sft_packed", "sft_fast", "dpo_trl", "dpo_precompute", "dpo_fast"])
    p.add_argument("--prompt-scale", type=float, default=1.0,
                   help="DPO prompts this many times longer than the default (a quarter of the median length; "
                        "multi-turn preference data has long prompts, where share_prefix saves the most)")
    p.add_argument("--profile", type=Path, help="write each variant's torch.profiler table (one extra, untimed "
                                                "step) to DIR/<variant>.txt")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing starts")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the variant list this many times, round robin; the summary keeps each variant's "
                        "fastest run (interference from other work on a shared machine only slows a run down)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per variant")
    p.add_argument("--workdir", type=Path, help="model and outputs (default: a temporary directory)")
    p.add_argument("--out", type=Path, help="append one JSON line per variant here")
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.prepare:
        return prepare(args.workdir, args.device)
    if args.run:
        print(json.dumps(run_variant(args.workdir, args.device, args.run, args.warmup, args.steps,
                                     args.prompt_scale, args.profile)))
        return None

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        base = ["--device", args.device, "--workdir", str(workdir), "--warmup", str(args.warmup),
                "--prompt-scale", str(args.prompt_scale), *(["--profile", str(args.profile)] if args.profile else []),
                "--steps", str(args.steps)]
        if child(*base, "--prepare", timeout=args.timeout) is None:
            sys.exit(1)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for name in args.variants:
                r = child(*base, "--run", name, timeout=args.timeout)
                if r is None:
                    continue
                if name not in best or r["tokens_per_s"] > best[name]["tokens_per_s"]:
                    best[name] = r
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                print(format_row(r, best), flush=True)
        if args.repeats > 1:
            print(f"best of {args.repeats}:")
            for r in best.values():
                print(format_row(r, best), flush=True)


def format_row(r: dict, results: dict) -> str:
    """One variant's line, with its ratio to the `_trl` variant in `results` (when there is one)."""
    mem = f"{r['peak_gib']} GiB" if "peak_gib" in r else f"{r['peak_rss_mib']} MiB RSS"
    if "mfu_6N" in r:
        mem += f", MFU {r['mfu_6N']:.1%}"
    if r["name"].startswith("sft"):
        base = results.get("sft_trl")
        ratio = f"  {r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else ""
        return f"{r['name']:<18} {r['tokens_per_s']:>10.0f} tokens/s{ratio}   peak {mem}"
    base = results.get("dpo_trl")
    ratio = (f"  {r['pairs_per_s'] / base['pairs_per_s']:.2f}x steps, "
             f"{r['pairs_per_s_epoch'] / base['pairs_per_s_epoch']:.2f}x epoch") if base else ""
    pre = (f" (reference pass {r['precompute_s']} s, {r['reference_pairs_per_s']} pairs/s)"
           if r["precompute_s"] else "")
    return (f"{r['name']:<18} {r['pairs_per_s']:>8.2f} pairs/s, {r['pairs_per_s_epoch']:.2f} per epoch{pre}{ratio}"
            f"   peak {mem}")


if __name__ == "__main__":
    main()
