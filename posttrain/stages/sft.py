"""SFT stage: TRL's SFTTrainer on the round's mix, loss on the reply only.

Each example is one prompt and its reply, given to TRL in its prompt-completion layout
(`posttrain.training.chat_format`): TRL trains on the tokens after the prompt (the reply and the template's end of
turn), for any chat template, without `{% generation %}` markers.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from posttrain.training.chat_format import prompt_completion, training_prompts
from posttrain.recipe.config import SFTConfig
from posttrain.training.trainer import common_args, copy_model, lora_args, model_init_args, train_and_save, trained


def sft(out: Path, start_model: str | Path, mix: pa.Table, cfg: SFTConfig, seed: int,
        trainer_args: dict | None = None) -> dict:
    """Fine-tunes `start_model` on `mix` (the `sft` schema) and saves it to `out/model`. `trainer_args`:
    TRL config fields set from outside the section (experiment tracking, `training.tracking_args`)."""
    if mix.num_rows == 0:
        copy_model(start_model, out / "model")
        return {"examples": 0, "steps": 0}
    if (done := trained(out)) is None:
        trainer, tokenizer = sft_trainer(out, start_model, mix, cfg, seed, **(trainer_args or {}))
        done = train_and_save(trainer, tokenizer, out)
    return {"examples": mix.num_rows, **done}


# Attention implementations that build their mask from position ids row by row (transformers'
# masking_utils); flash attention reads packed sequences from a single flattened row only.
MASKED_ATTENTION = ("sdpa", "eager", "flex_attention")


def sft_trainer(out: Path, start_model: str | Path, mix: pa.Table, cfg: SFTConfig, seed: int, **overrides):
    """The stage's SFTTrainer and tokenizer; `overrides` replace TRL SFTConfig fields (benchmarks, tests).

    With `cfg.packing`, TRL packs best-fit-decreasing into rows of `max_length` and trains padding-free:
    position ids restarting at 0 mark each conversation and the first label of every conversation is
    dropped, so none attends to or predicts across a boundary. TRL flattens a batch's rows into one,
    which flash attention needs (its varlen kernel skips the masked blocks); masked attention (sdpa,
    eager) would then build and apply one (B x max_length)^2 mask, so there `PackedRowsCollator` keeps
    the rows apart: B masks of max_length^2, B times less attention work.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig as TRLSFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(start_model)
    turns = training_prompts(tokenizer, start_model)
    dataset = Dataset.from_list([prompt_completion(m, turns) for m in mix.column("messages").to_pylist()])
    args = TRLSFTConfig(**{**common_args(out, cfg, seed), "completion_only_loss": True, "packing": cfg.packing,
                           "lr_scheduler_type": cfg.lr_scheduler_type,
                           "warmup_steps": cfg.warmup_ratio,  # < 1: a fraction
                           "weight_decay": cfg.weight_decay, **model_init_args(cfg), **overrides})
    model = {"model": str(start_model), **lora_args(cfg.lora, start_model, cfg.attn_implementation)}
    trainer = SFTTrainer(**model, args=args, train_dataset=dataset, processing_class=tokenizer)
    if cfg.packing and trainer.model.config._attn_implementation in MASKED_ATTENTION:
        trainer.data_collator = PackedRowsCollator(pad_token_id=trainer.data_collator.pad_token_id)
    return trainer, tokenizer


class PackedRowsCollator(DataCollatorForLanguageModeling):
    """TRL's padding-free collator for packed rows, without flattening the batch into one row.

    Each packed row keeps its own row; position ids restart at 0 at every conversation, which is how
    transformers finds the conversations (with no attention mask given) and masks attention between them.
    Shorter rows are padded at the end with pad tokens that form one more conversation of their own
    (position ids from 0, labels -100), so no real token attends to them. (TRL's logged `num_tokens`,
    which reads the width of `position_ids` when there is no attention mask, then counts one row per batch.)
    """

    def torch_call(self, examples: list[dict]) -> dict:
        width = max(len(e["input_ids"]) for e in examples)
        pad = [width - len(e["input_ids"]) for e in examples]
        seq_lengths = [list(e["seq_lengths"]) + ([n] if n else []) for e, n in zip(examples, pad)]
        input_ids = torch.tensor([list(e["input_ids"]) + [self.pad_token_id] * n for e, n in zip(examples, pad)])
        labels = torch.tensor([list(e["labels"]) + [-100] * n for e, n in zip(examples, pad)])
        position_ids = torch.stack(self.get_position_ids_from_packed_seq_lengths(seq_lengths))
        labels[position_ids == 0] = -100
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
