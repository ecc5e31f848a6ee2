"""Prompts stage: loads every prompt source of the recipe into `train.parquet` and `heldout.parquet`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from posttrain import schema
from posttrain.config import PromptsConfig
from posttrain.tiny import world


def load_source(src, seed: int) -> dict[str, pa.Table]:
    """One source -> {"train": table, "heldout": table} (a file source feeds the split it names)."""
    if src.kind == "tiny":
        tables = {}
        for split, n in (("train", src.num_train), ("heldout", src.num_heldout)):
            records = [rec for cap in src.capabilities for rec, _reply in world.draw(cap, split, n, seed)]
            tables[split] = schema.from_records(records, "prompts", f"tiny/{split}")
        return tables
    table = schema.read_prompt_file(Path(src.path))
    return {src.split: table.filter(pc.is_in(table["capability"], pa.array(src.capabilities)))}


def load_prompts(out: Path, cfg: PromptsConfig, seed: int) -> dict:
    splits: dict[str, list[pa.Table]] = {"train": [], "heldout": []}
    for src in cfg.sources:
        for split, table in load_source(src, seed).items():
            splits[split].append(table)
    rows = {}
    for split, tables in splits.items():
        table = pa.concat_tables(tables) if tables else schema.PROMPTS.empty_table()
        rows[split] = schema.write(table, "prompts", out / f"{split}.parquet")  # validates id uniqueness
    train_ids = set(pa.concat_tables(splits["train"]).column("id").to_pylist()) if splits["train"] else set()
    heldout_ids = set(pa.concat_tables(splits["heldout"]).column("id").to_pylist()) if splits["heldout"] else set()
    if train_ids & heldout_ids:
        raise ValueError(f"prompt ids appear in both train and heldout: {sorted(train_ids & heldout_ids)[:3]}")
    return rows
