"""SFT stage: TRL's SFTTrainer on the round's mix, loss on assistant tokens only."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from posttrain.config import SFTConfig
from posttrain.training import common_args, copy_model, lora_args, train_and_save


def sft(out: Path, start_model: str | Path, mix: pa.Table, cfg: SFTConfig, seed: int) -> dict:
    """Fine-tunes `start_model` on `mix` (the `sft` schema) and saves it to `out/model`."""
    if mix.num_rows == 0:
        copy_model(start_model, out / "model")
        return {"examples": 0, "steps": 0}
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig as TRLSFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(start_model)
    dataset = Dataset.from_dict({"messages": mix.column("messages").to_pylist()})
    args = TRLSFTConfig(**common_args(out, cfg, seed), assistant_only_loss=True, packing=cfg.packing,
                        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio,  # < 1: a fraction
                        weight_decay=cfg.weight_decay)
    trainer = SFTTrainer(**{"model": str(start_model), **lora_args(cfg.lora, start_model)}, args=args,
                         train_dataset=dataset, processing_class=tokenizer)
    return {"examples": mix.num_rows, **train_and_save(trainer, tokenizer, out)}
