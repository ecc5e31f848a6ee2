"""SFT stage: TRL's SFTTrainer on the round's mix, loss on the reply only.

Each example is one prompt and its reply, given to TRL in its prompt-completion layout
(`posttrain.training.chat_format`): TRL trains on the tokens after the prompt (the reply and the template's end of
turn), for any chat template, without `{% generation %}` markers.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from posttrain.training.chat_format import PackedRowsCollator as PackedRowsCollator  # sft's collator
from posttrain.models.chat_turns import prompt_turns, template_column
from posttrain.training.chat_format import prompt_completion
from posttrain.recipe.config import SFTConfig
from posttrain.training.trainer import common_args, copy_model, lora_args, model_init_args, train_and_save, trained
from posttrain.run.fingerprint import outputs
from posttrain.run.rundir import StageOutput
from posttrain.stages.context import Context, read
from posttrain.training.variants import train_variants


def sft(out: Path, start_model: str | Path, mix: pa.Table, cfg: SFTConfig, seed: int,
        trainer_args: dict | None = None, template_kwargs: dict | None = None) -> dict:
    """Fine-tunes `start_model` on `mix` (the `sft` schema) and saves it to `out/model`. `trainer_args`:
    TRL config fields set from outside the section (experiment tracking, `training.tracking_args`);
    `template_kwargs`: the recipe's `chat_template_kwargs`."""
    if mix.num_rows == 0:
        copy_model(start_model, out / "model")
        return {"examples": 0, "steps": 0}
    if (done := trained(out)) is None:
        trainer, tokenizer = sft_trainer(out, start_model, mix, cfg, seed, template_kwargs, **(trainer_args or {}))
        done = train_and_save(trainer, tokenizer, out)
    return {"examples": mix.num_rows, **done}


# Attention implementations that build their mask from position ids row by row (transformers'
# masking_utils); flash attention reads packed sequences from a single flattened row only.
MASKED_ATTENTION = ("sdpa", "eager", "flex_attention")


def sft_trainer(out: Path, start_model: str | Path, mix: pa.Table, cfg: SFTConfig, seed: int,
                template_kwargs: dict | None = None, **overrides):
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
    turns = prompt_turns(tokenizer, template_kwargs)
    examples = [prompt_completion(m, turns) for m in mix.column("messages").to_pylist()]
    dataset = Dataset.from_dict({k: [e[k] for e in examples] for k in ("prompt", "completion")}
                                | template_column(len(examples), template_kwargs))
    args = TRLSFTConfig(**{**common_args(out, cfg, seed), "completion_only_loss": True, "packing": cfg.packing,
                           "lr_scheduler_type": cfg.lr_scheduler_type,
                           "warmup_steps": cfg.warmup_ratio,  # < 1: a fraction
                           "weight_decay": cfg.weight_decay, **model_init_args(cfg), **overrides})
    model = {"model": str(start_model), **lora_args(cfg.lora, start_model, cfg.attn_implementation)}
    trainer = SFTTrainer(**model, args=args, train_dataset=dataset, processing_class=tokenizer)
    if cfg.packing and trainer.model.config._attn_implementation in MASKED_ATTENTION:
        trainer.data_collator = PackedRowsCollator(pad_token_id=trainer.data_collator.pad_token_id)
    return trainer, tokenizer


def stage(ctx: Context, r: int, policy: StageOutput, mixed: StageOutput) -> StageOutput:
    """Fine-tunes the base (`sft.start_from: base`) or the round's policy on the mix's SFT table; a mix that
    reran but wrote the same table (by content) reuses the trained model."""
    cfg = ctx.recipe.sft
    start = ctx.base if cfg.start_from == "base" else policy
    def train(out, c, s):
        return sft(out, start.model, read(mixed, "sft"), c, s, ctx.tracked(r, "sft"), ctx.template_kwargs)

    return ctx.run.stage(r, "sft", outputs(cfg), [start, mixed.part("sft.parquet")],
                         lambda out: train_variants(out, cfg, ctx.seed, train), resumable=True, mode="all")
