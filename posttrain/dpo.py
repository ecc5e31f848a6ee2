"""DPO stage: TRL's DPOTrainer with Llama 3's two changes.

- NLL term: sigmoid DPO loss + 0.2 x NLL on the chosen response (`loss_type=["sigmoid", "sft"]`).
- Formatting tokens (header and termination tokens) carry no loss in chosen or rejected: both
  responses share them, and pushing their likelihood apart caused tail repetition and abrupt stops.
  TRL has no switch for this, so `FormattingTokenMaskCollator` removes them from the completion mask.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference

from posttrain.config import DPOConfig
from posttrain.training import common_args, copy_model, lora_args, train_and_save

# Formatting tokens of the chat templates we know (Llama 3, ChatML); any that exist in a vocabulary count.
FORMATTING_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
                     "<|end_of_text|>", "<|im_start|>", "<|im_end|>")


def formatting_token_ids(tokenizer) -> list[int]:
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in FORMATTING_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


class FormattingTokenMaskCollator(DataCollatorForPreference):
    """TRL's preference collator, with formatting tokens dropped from `completion_mask`."""

    def __init__(self, *args, masked_token_ids: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.masked_token_ids = torch.tensor(masked_token_ids, dtype=torch.long)

    def torch_call(self, examples):
        out = super().torch_call(examples)
        formatting = torch.isin(out["input_ids"], self.masked_token_ids)
        out["completion_mask"] = out["completion_mask"] * (~formatting).to(out["completion_mask"].dtype)
        return out


def dpo(out: Path, sft_model: str | Path, pairs: pa.Table, cfg: DPOConfig, seed: int) -> dict:
    """Trains the SFT model on `pairs` (the `pairs` schema) against itself as reference; saves `out/model`."""
    if pairs.num_rows == 0 or not cfg.enabled:
        copy_model(sft_model, out / "model")
        return {"pairs": pairs.num_rows if cfg.enabled else 0, "steps": 0}
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig as TRLDPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    dataset = Dataset.from_dict({k: pairs.column(k).to_pylist() for k in ("prompt", "chosen", "rejected")})
    args = TRLDPOConfig(**common_args(out, cfg, seed), beta=cfg.beta, loss_type=["sigmoid", "sft"],
                        loss_weights=[1.0, cfg.nll_weight], lr_scheduler_type="linear")
    collator = None
    if cfg.mask_formatting_tokens:
        collator = FormattingTokenMaskCollator(pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                               max_length=cfg.max_length,
                                               masked_token_ids=formatting_token_ids(tokenizer))
    # With LoRA the reference is the same model with its adapters off: no second copy in memory.
    trainer = DPOTrainer(**{"model": str(sft_model), **lora_args(cfg.lora, sft_model)}, args=args,
                         data_collator=collator, train_dataset=dataset, processing_class=tokenizer)
    return {"pairs": pairs.num_rows, **train_and_save(trainer, tokenizer, out)}
