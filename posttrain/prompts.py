"""Prompts stage: loads every prompt source of the recipe into `train.parquet` and `heldout.parquet`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from posttrain import schema, sources
from posttrain.config import PromptsConfig
from posttrain.tiny import world


def load_source(src, seed: int) -> dict[str, pa.Table]:
    """One source -> {"train": table, "heldout": table} (a file or hf source feeds the split it names)."""
    if src.kind == "tiny":
        tables = {}
        for split, n in (("train", src.num_train), ("heldout", src.num_heldout)):
            records = [rec for cap in src.capabilities for rec, _reply in world.draw(cap, split, n, seed)]
            tables[split] = schema.from_records(records, "prompts", f"tiny/{split}")
        return tables
    if src.kind == "generator":
        draw = sources.get(src.name)
        return {split: schema.from_records([schema.check_prompt_record(r, f"generator {src.name}") for r in
                                            draw(split, n, seed)], "prompts", f"generator {src.name}/{split}")
                for split, n in (("train", src.num_train), ("heldout", src.num_heldout)) if n > 0}
    table = (schema.read_prompt_file(Path(src.path)) if src.kind == "file"
             else read_hf(src.name, src.hf_split, src.hf_revision))
    return {src.split: table.filter(pc.is_in(table["capability"], pa.array(src.capabilities)))}


def read_hf(name: str, split: str, revision: str | None = None) -> pa.Table:
    """A Hugging Face dataset (hub id or local folder) whose rows are prompt records, checked row by row."""
    import datasets

    folder = Path(name)
    if (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        saved = datasets.load_from_disk(name)  # a folder written by save_to_disk: load_dataset refuses those
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise ValueError(f"dataset {name}: no split {split!r} (it has {sorted(saved)})")
            saved = saved[split]
        rows = saved
    else:
        rows = datasets.load_dataset(name, split=split, revision=revision)
    where = f"dataset {name} [{split}]"
    records = [schema.check_prompt_record({k: v for k, v in r.items() if v is not None}, f"{where}: row {i}")
               for i, r in enumerate(rows, 1)]
    return schema.from_records(records, "prompts", where)


def load_prompts(out: Path, cfg: PromptsConfig, seed: int) -> dict:
    splits: dict[str, list[pa.Table]] = {"train": [], "heldout": []}
    first_seen: dict[str, str] = {}  # prompt id -> the source (and split) that gave it first
    for i, src in enumerate(cfg.sources):
        for split, table in load_source(src, seed).items():
            where = f"prompts.sources[{i}] ({src.kind} {src.path or src.name or ''}, {split})".replace(" ,", ",")
            for pid in table.column("id").to_pylist():
                if (other := first_seen.setdefault(pid, where)) is not where:
                    raise ValueError(f"prompt id {pid!r} comes from both {other} and {where}: ids must be unique "
                                     f"across sources and splits (they key every table of the run)")
            splits[split].append(table)
    rows = {}
    for split, tables in splits.items():
        table = pa.concat_tables(tables) if tables else schema.PROMPTS.empty_table()
        rows[split] = schema.write(table, "prompts", out / f"{split}.parquet")  # validates id uniqueness
    return rows
