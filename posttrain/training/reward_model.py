"""Training a Bradley-Terry reward model (Llama 3 §4.1.2) with TRL's `RewardTrainer`.

A sequence classifier initialised from the pretrained base (`num_labels=1`), loss
-log sigmoid(r_chosen - r_rejected) with no margin term; optional LoRA (`reward_model.lora`, `lora_config`),
merged before saving, so `out/model` is always a plain model folder. Scoring with it: reward/model.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from posttrain.models.chat_turns import prompt_turns, template_column
from posttrain.run.dist import world
from posttrain.training.trainer import attention_kwargs, common_args, release_deepspeed_config, train_and_save, trained

log = logging.getLogger("posttrain")


def train_reward_model(out: Path, base_model: str | Path, pairs: list[dict], cfg, seed: int,
                       init_seed: int | None = None, trainer_args: dict | None = None,
                       template_kwargs: dict | None = None) -> dict:
    """Trains a Bradley-Terry RM from `base_model` on `pairs` (see `preference_pairs`); saves `out/model`.
    seed orders the data; init_seed (default: seed) draws the new score head; trainer_args: TRL config
    fields set from outside the section (experiment tracking); template_kwargs: the recipe's
    `chat_template_kwargs`.

    cfg: a `posttrain.recipe.config.RewardModelConfig`. With no pairs, the saved model is the initialised one
    with a zeroed score head: every score is 0, so ranking with it changes nothing.
    """
    from datasets import Dataset  # datasets, transformers and TRL: imported when a reward model trains
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    out = Path(out)
    if pairs and (done := trained(out)) is not None:
        return {"pairs": len(pairs), **done}
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_seed(seed if init_seed is None else init_seed)  # the score head is initialised at random: same seed, same head
    with suppress_seqcls_warning():  # the missing score head and unused lm_head are expected
        model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1, dtype=torch.float32,
                                                                   **attention_kwargs(cfg.attn_implementation))
    model.config.pad_token_id = tokenizer.pad_token_id  # the classifier pools at the last non-pad token
    if not pairs:
        return _save_constant(model, tokenizer, out)

    turns = prompt_turns(tokenizer, template_kwargs)
    dataset = Dataset.from_dict({"prompt": [turns(p["prompt"]) for p in pairs],
                                 **{k: [p[k] for p in pairs] for k in ("chosen", "rejected")},
                                 **template_column(len(pairs), template_kwargs)})
    args = RewardConfig(**{**common_args(out, cfg, seed), **(trainer_args or {})})
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=lora_config(cfg.lora))
    used = len(trainer.train_dataset)  # TRL drops pairs with a side longer than max_length
    if used == 0:
        release_deepspeed_config()
        log.warning("reward model: all %d pairs are longer than max_length=%d", len(pairs), cfg.max_length)
        return {**_save_constant(model, tokenizer, out), "pairs": len(pairs)}
    # train_accuracy (pairs ranked right in the last logging window) comes with train_and_save's results
    return {"pairs": len(pairs), **train_and_save(trainer, tokenizer, out, lambda _: {"pairs_used": used})}


def lora_config(lora):
    """A peft `LoraConfig` for the RM's `LoRAConfig` section (None when r = 0): the sequence-classification
    task, `target_modules` as in sft.lora / dpo.lora ("all-linear" leaves out the score head under SEQ_CLS),
    and the score head, new and randomly initialised, trained in full beside the adapters (modules_to_save).
    `posttrain.training.trainer.lora_args` builds the causal-LM one of SFT and DPO; QLoRA is refused at recipe load."""
    if lora.r == 0:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="SEQ_CLS", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, modules_to_save=["score"])


def _save_constant(model, tokenizer, out: Path) -> dict:
    with torch.no_grad():
        model.score.weight.zero_()
    if world().is_main:  # one writer under a multi-process launch
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
    return {"pairs": 0, "pairs_used": 0, "steps": 0}
