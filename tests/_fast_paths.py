"""What the fast-path tests share (tests/test_fast_paths.py, tests/test_dpo_packing.py): a tiny random Llama
with a tokenizer trained on tiny-world conversations, its SFT mix and DPO pairs (tests/conftest.py serves them
as the `model_dir`, `mix` and `pairs` fixtures), and loss/gradient helpers. Comparisons run in float32 (bf16
off), so the tolerances hold on a GPU too."""

from __future__ import annotations

from pathlib import Path

import torch

from posttrain.run import schema
from posttrain.tiny import world
from posttrain.tiny.base import CHAT_TEMPLATE, train_tokenizer

FP32 = {"bf16": False}  # the stage turns bf16 on where a GPU has it; comparisons here are in float32
RTOL, ATOL = 1e-4, 1e-6


def conversations() -> list[tuple[list[dict], str]]:
    """Four of each tiny-world family: prompts and replies of different lengths."""
    return [(r["messages"], reply) for cap in ("math", "code", "tools", "multilingual")
            for r, reply in world.draw(cap, "train", 4, 0)]


def build_model(path: Path) -> Path:
    """A random 2-layer Llama with a tokenizer trained on the test conversations (Llama 3 chat template),
    saved at `path`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = [" ".join(m["content"] for m in msgs) + " " + reply for msgs, reply in conversations()]
    tokenizer = train_tokenizer(texts * 10, vocab_size=400)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def sft_mix():
    """The test conversations as an `sft` table."""
    return schema.from_records([{"id": f"c{i}", "prompt_id": f"c{i}", "capability": "math", "round": 1, "reward": 1.0,
                                 "messages": msgs + [{"role": "assistant", "content": reply}]}
                                for i, (msgs, reply) in enumerate(conversations())], "sft")


def dpo_pairs():
    """A `pairs` table: each prompt's reply as chosen, the next conversation's reply as rejected."""
    convs = conversations()
    return schema.from_records([{"id": f"p{i}", "prompt_id": f"p{i}", "capability": "math", "round": 1,
                                 "prompt": msgs, "chosen": [{"role": "assistant", "content": reply}],
                                 "rejected": [{"role": "assistant", "content": convs[(i + 1) % len(convs)][1]}],
                                 "chosen_reward": 1.0, "rejected_reward": 0.0}
                                for i, (msgs, reply) in enumerate(convs)], "pairs")


def whole_dataset_batch(trainer) -> dict:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    return trainer._prepare_inputs(batch)


def loss_and_grads(trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    model = trainer.model
    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.detach().cpu(), torch.cat([p.grad.flatten().cpu() for p in model.parameters()])


def move_policy(trainer) -> None:
    """Moves the policy's weights away from the reference's by the same seeded noise in every trainer."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.device))
