"""Builds the tiny base: a byte-level BPE tokenizer with Llama 3 special tokens and chat template, and a
small LlamaForCausalLM pretrained briefly on the tiny world's documents.

The result is an ordinary Hugging Face model folder (safetensors, config, tokenizer) that vLLM and
transformers both load, so the rest of the pipeline never knows it is tiny.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from posttrain.recipe.config import CAPABILITIES, TINY_BASE_MARKER, BaseBuildConfig, may_build_tiny_base_in
from posttrain.tiny import world

log = logging.getLogger("posttrain")

BOS, EOT, START, END, PAD = ("<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                             "<|finetune_right_pad_id|>")
SPECIAL_TOKENS = [BOS, EOT, START, END, PAD]

# Llama 3's layout. `{% generation %}` marks assistant tokens so TRL's assistant_only_loss can find them.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
BUILD_INFO = TINY_BASE_MARKER
# Llama 3's split pattern with one change: digits are single tokens (arithmetic is learnable only if
# numbers are spelled digit by digit). Its `\s*[\r\n]+` keeps the header's "\n\n" one piece whatever
# follows, so a prompt ending in the generation header tokenizes as a prefix of prompt + reply.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def ensure_base(path: Path, cfg: BaseBuildConfig, seed: int) -> Path:
    """Builds the tiny base at `path` unless a build with the same config and seed is already there."""
    info = {"config": dataclasses.asdict(cfg), "seed": seed, "world_version": world.WORLD_VERSION}
    try:
        if json.loads((path / BUILD_INFO).read_text()) == info:
            log.info("tiny base: reusing %s", path)
            return path
        log.info("tiny base: %s was built with other settings; rebuilding", path)
    except FileNotFoundError:
        if not may_build_tiny_base_in(path):  # load_recipe refuses this first
            raise FileExistsError(f"{path} holds files posttrain did not build (no {BUILD_INFO}); "
                                  f"refusing to replace it with the tiny base") from None
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build_base(tmp, cfg, seed)
    (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def corpus(cfg: BaseBuildConfig, seed: int) -> list[list[dict]]:
    """Pretraining conversations from the training half of every family (never the held-out half)."""
    per_family = cfg.num_documents // len(CAPABILITIES)
    convs = []
    for cap in CAPABILITIES:
        for record, reply in world.draw(cap, "train", per_family, seed=10_000 + seed):
            convs.append(record["messages"] + [{"role": "assistant", "content": reply}])
    random.Random(seed).shuffle(convs)
    return convs


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT, pad_token=PAD,
                                   model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_base(out: Path, cfg: BaseBuildConfig, seed: int) -> None:
    torch.manual_seed(seed)
    start = time.time()
    convs = corpus(cfg, seed)
    texts = [_render(c) for c in convs[:2500]] + ["".join(_render_plain(c)) for c in convs[2500:5000]]
    tokenizer = train_tokenizer(texts,
                                cfg.vocab_size)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa"))
    log.info("tiny base: %.2fM parameters, %d-token vocabulary, %d documents",
             model.num_parameters() / 1e6, len(tokenizer), len(convs))
    ids, labels = _pack(tokenizer, convs, cfg, seed)
    _pretrain(model, ids, labels, cfg, seed)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("tiny base: built in %.0f s -> %s", time.time() - start, out)


def _render(conv: list[dict]) -> str:
    return "".join(f"{START}{m['role']}{END}\n\n{m['content']}{EOT}" for m in conv)


def _render_plain(conv: list[dict]) -> tuple[str, str]:
    """A conversation as plain pretraining text: (prompt part, answer part)."""
    return BOS + "\n".join(m["content"] for m in conv[:-1]) + "\nAnswer: ", conv[-1]["content"] + "\n\n"


def _pack(tokenizer, convs: list[list[dict]], cfg: BaseBuildConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenates encoded documents into rows of `max_length`; labels are -100 off-target.

    Only `chat_fraction` of the documents use the chat template; the rest are plain "question / Answer:"
    text. So the base knows the tasks but is shaky in the chat format, the way a pretrained model is
    before post-training, and its own verified chat-format samples have something general to teach.
    """
    rng = random.Random(seed)
    ids, labels = [], []
    for conv in convs:
        doc_ids, mask = (_chat_doc if rng.random() < cfg.chat_fraction else _plain_doc)(tokenizer, conv)
        if not cfg.answer_only_loss:
            mask = [1] * len(doc_ids)
        ids.extend(doc_ids)
        labels.extend(t if m else -100 for t, m in zip(doc_ids, mask))
    n = len(ids) // cfg.max_length * cfg.max_length
    shape = (-1, cfg.max_length)
    return torch.tensor(ids[:n]).view(shape), torch.tensor(labels[:n]).view(shape)


def _chat_doc(tokenizer, conv: list[dict]) -> tuple[list[int], list[int]]:
    enc = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return enc["input_ids"], enc["assistant_masks"]


def _plain_doc(tokenizer, conv: list[dict]) -> tuple[list[int], list[int]]:
    prompt, answer = _render_plain(conv)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return p_ids + a_ids, [0] * len(p_ids) + [1] * len(a_ids)


def _pretrain(model, ids: torch.Tensor, labels: torch.Tensor, cfg: BaseBuildConfig, seed: int) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, cfg.num_steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.num_steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start = time.time()
    for step in range(cfg.num_steps):
        rows = torch.randint(0, ids.shape[0], (cfg.batch_size,), generator=gen)
        loss = model(input_ids=ids[rows], labels=labels[rows]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == cfg.num_steps - 1:
            log.info("tiny base: step %d/%d loss %.3f (%.0f s)", step + 1, cfg.num_steps, loss.item(),
                     time.time() - start)
    model.eval()
