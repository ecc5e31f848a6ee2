"""Prompts stage: loads every prompt source of the recipe into `train.parquet` (asked every round) and
`heldout.parquet`, and, when a source draws new prompts each round (`per_round`), `train_round_<r>.parquet`:
the prompts asked in round r only. Round r's training prompts are `train.parquet` plus its own file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from posttrain.run import schema

from posttrain import sources
from posttrain.recipe.config import PromptsConfig
from posttrain.tiny import world


def round_split(r: int) -> str:
    """The split (file stem) of the prompts asked in round r only: the per_round sources' draws for it."""
    return f"train_round_{r}"


def load_source(src, seed: int, rounds: int = 1) -> dict[str, pa.Table]:
    """One source -> {"train": table, "heldout": table} (a file or hf source feeds the split it names).

    A tiny or generator source with `per_round` gives `round_split(r)` tables for r = 1..rounds instead of
    "train": one draw of rounds x num_train, cut in order (draws are prefix-stable, so adding a round keeps
    the earlier rounds' prompts)."""
    if src.kind in ("tiny", "generator"):
        if src.kind == "tiny":
            def draw(split: str, n: int) -> list[list[dict]]:  # one list per capability
                return [[rec for rec, _reply in world.draw(cap, split, n, seed)] for cap in src.capabilities]
        else:
            def draw(split: str, n: int) -> list[list[dict]]:
                return [[schema.check_prompt_record(r, f"generator {src.name}")
                         for r in sources.get(src.name)(split, n, seed)]]
        where = f"{src.kind} {src.name or ''}".strip()
        tables = {}
        if src.num_train > 0 and not src.per_round:
            tables["train"] = draw("train", src.num_train)
        elif src.num_train > 0:
            n, drawn = src.num_train, draw("train", src.num_train * rounds)
            tables |= {round_split(r): [part[n * (r - 1):n * r] for part in drawn] for r in range(1, rounds + 1)}
        if src.num_heldout > 0:
            tables["heldout"] = draw("heldout", src.num_heldout)
        return {split: schema.from_records([rec for part in parts for rec in part], "prompts", f"{where}/{split}")
                for split, parts in tables.items()}
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


def load_prompts(out: Path, cfg: PromptsConfig, seed: int, rounds: int = 1) -> dict:
    """Every source's prompts -> out/train.parquet, out/heldout.parquet (and the per_round sources'
    round files); returns the row count of each file, by its name without .parquet."""
    splits: dict[str, list[pa.Table]] = {"train": [], "heldout": []}
    if any(src.per_round for src in cfg.sources):
        splits |= {round_split(r): [] for r in range(1, rounds + 1)}
    first_seen: dict[str, str] = {}  # prompt id -> the source (and split) that gave it first
    for i, src in enumerate(cfg.sources):
        for split, table in load_source(src, seed, rounds).items():
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


def round_prompts(folder: Path, r: int) -> pa.Table:
    """Round r's training prompts from the prompts stage's folder: those asked every round, then its own."""
    return known_prompts(folder, [r])


def known_prompts(folder: Path, rounds: list[int]) -> pa.Table:
    """The training prompts of `rounds` (e.g. every round so far, for the reward model's lookups by id)."""
    return pa.concat_tables([schema.read(f, "prompts") for f in train_files(folder, rounds)])


def train_files(folder: Path, rounds: list[int]) -> list[Path]:
    """The prompts stage's files that hold `rounds`' training prompts: train.parquet, then the round files
    that exist (none without per_round sources)."""
    files = [folder / f"{split}.parquet" for split in ("train", *map(round_split, rounds))]
    return [f for f in files if f.exists()]
