"""Prompts stage: file and `hf` sources (offline, from local folders), the capability filter, split routing,
and ids that must be unique across sources and splits."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from posttrain.recipe.config import PromptsConfig, PromptSource
from posttrain.stages.prompts import known_prompts, load_prompts, load_source, read_hf, round_prompts
from posttrain.run.schema import META, SchemaError

MATH = {"id": "m1", "capability": "math", "messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}
CODE = {"id": "c1", "capability": "code", "messages": [{"role": "user", "content": "Write f."}],
        "tests": "assert f() == 1", "entry_point": "f"}
MATH2 = {"id": "m2", "capability": "math", "messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}
NONE = dict.fromkeys([*(f.name for f in META), "verifier"])


def row(rec: dict) -> dict:
    """A record as the prompts table holds it: every optional column present, None where not given."""
    return {**NONE, **rec}


def jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def out(tmp_path: Path) -> Path:
    """The stage's (existing) temp folder, as RunDir.stage gives it."""
    (tmp_path / "out").mkdir(exist_ok=True)
    return tmp_path / "out"


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """datasets' cache under tmp_path and the hub off: a local folder must load without the network."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


# --------------------------------------------------------------------------- hf sources


def test_read_hf_reads_a_local_dataset_folder(tmp_path, offline_datasets):
    folder = tmp_path / "ds"
    jsonl(folder / "train.jsonl", [MATH, CODE])  # the code row has no "answer": the dataset fills None
    jsonl(folder / "test.jsonl", [MATH2])
    assert read_hf(str(folder), "train").to_pylist() == [row(MATH), row(CODE)]
    assert read_hf(str(folder), "test").to_pylist() == [row(MATH2)]


def test_read_hf_names_the_dataset_and_row_of_a_bad_record(tmp_path, offline_datasets):
    folder = tmp_path / "ds"
    jsonl(folder / "train.jsonl", [MATH, {**MATH2, "answer": None}])
    with pytest.raises(SchemaError, match=rf"dataset {folder} \[train\]: row 2: capability 'math' needs 'answer'"):
        read_hf(str(folder), "train")


def test_read_hf_reads_a_save_to_disk_folder(tmp_path, offline_datasets):
    import datasets

    datasets.Dataset.from_list([row(MATH), row(CODE)]).save_to_disk(str(tmp_path / "saved"))
    assert read_hf(str(tmp_path / "saved"), "train").to_pylist() == [row(MATH), row(CODE)]
    datasets.DatasetDict({"test": datasets.Dataset.from_list([row(CODE)])}).save_to_disk(str(tmp_path / "dict"))
    assert read_hf(str(tmp_path / "dict"), "test").to_pylist() == [row(CODE)]
    with pytest.raises(ValueError, match=r"no split 'train' \(it has \['test'\]\)"):
        read_hf(str(tmp_path / "dict"), "train")


def test_hf_source_keeps_its_capabilities_and_feeds_its_split(tmp_path, offline_datasets):
    jsonl(tmp_path / "ds" / "train.jsonl", [MATH, CODE, MATH2])
    src = PromptSource(kind="hf", name=str(tmp_path / "ds"), split="heldout", capabilities=["math"])
    tables = load_source(src, 0)
    assert list(tables) == ["heldout"] and tables["heldout"].column("id").to_pylist() == ["m1", "m2"]


# --------------------------------------------------------------------------- file sources


def test_file_source_filters_capabilities_and_defaults_to_train(tmp_path):
    path = jsonl(tmp_path / "p.jsonl", [MATH, CODE, MATH2])
    tables = load_source(PromptSource(kind="file", path=str(path), capabilities=["code"]), 0)
    assert list(tables) == ["train"] and tables["train"].to_pylist() == [row(CODE)]
    tables = load_source(PromptSource(kind="file", path=str(path), split="heldout", capabilities=["math"]), 0)
    assert list(tables) == ["heldout"] and tables["heldout"].column("id").to_pylist() == ["m1", "m2"]


def test_load_prompts_routes_each_file_to_its_split(tmp_path):
    train = jsonl(tmp_path / "train.jsonl", [MATH, CODE])
    held = jsonl(tmp_path / "held.jsonl", [MATH2])
    cfg = PromptsConfig(sources=[PromptSource(kind="file", path=str(train)),
                                 PromptSource(kind="file", path=str(held), split="heldout")])
    assert load_prompts(out(tmp_path), cfg, 0) == {"train": 2, "heldout": 1}
    assert pq.read_table(tmp_path / "out" / "train.parquet").column("id").to_pylist() == ["m1", "c1"]
    assert pq.read_table(tmp_path / "out" / "heldout.parquet").to_pylist() == [row(MATH2)]


def test_load_prompts_without_heldout_writes_an_empty_heldout(tmp_path):
    cfg = PromptsConfig(sources=[PromptSource(kind="file", path=str(jsonl(tmp_path / "p.jsonl", [MATH])))])
    assert load_prompts(out(tmp_path), cfg, 0) == {"train": 1, "heldout": 0}
    assert pq.read_table(tmp_path / "out" / "heldout.parquet").num_rows == 0


def test_an_id_in_both_train_and_heldout_is_refused_naming_both_sources(tmp_path):
    train = jsonl(tmp_path / "train.jsonl", [MATH, CODE])
    held = jsonl(tmp_path / "held.jsonl", [MATH2, CODE])  # c1 again: it would be trained on and evaluated
    cfg = PromptsConfig(sources=[PromptSource(kind="file", path=str(train)),
                                 PromptSource(kind="file", path=str(held), split="heldout")])
    with pytest.raises(ValueError, match=rf"prompt id 'c1' comes from both prompts\.sources\[0\] \(file {train}, "
                                         rf"train\) and prompts\.sources\[1\] \(file {held}, heldout\)"):
        load_prompts(out(tmp_path), cfg, 0)
    assert not (tmp_path / "out" / "train.parquet").exists()  # refused before anything is written


def test_the_capability_filter_applies_before_the_uniqueness_check(tmp_path):
    # the same file as train (math only) and heldout (code only): no id is in both, so it is allowed
    path = jsonl(tmp_path / "p.jsonl", [MATH, CODE])
    cfg = PromptsConfig(sources=[PromptSource(kind="file", path=str(path), capabilities=["math"]),
                                 PromptSource(kind="file", path=str(path), split="heldout", capabilities=["code"])])
    assert load_prompts(out(tmp_path), cfg, 0) == {"train": 1, "heldout": 1}


# --------------------------------------------------------------------------- new prompts each round


def ids(table) -> list[str]:
    return table.column("id").to_pylist()


def test_a_per_round_source_gives_each_round_its_own_prompts(tmp_path):
    """Round r asks the every-round prompts plus its own slice of one prefix-stable draw: another round
    leaves the earlier rounds' files as they were, and no prompt is asked in two rounds."""
    fixed = PromptSource(kind="generator", name="code", num_train=2, num_heldout=1)
    fresh = PromptSource(kind="tiny", capabilities=["math", "tools"], num_train=3, num_heldout=2, per_round=True)
    cfg = PromptsConfig(sources=[fixed, fresh])
    two, three = tmp_path / "two", tmp_path / "three"
    for folder, rounds in ((two, 2), (three, 3)):
        folder.mkdir()
        counts = load_prompts(folder, cfg, 0, rounds)
        assert counts == {"train": 2, "heldout": 1 + 2 * 2, **{f"train_round_{r}": 2 * 3 for r in range(1, rounds + 1)}}
    for r in (1, 2):  # byte-equal: a run extended by a round reruns nothing of its earlier rounds
        assert (two / f"train_round_{r}.parquet").read_bytes() == (three / f"train_round_{r}.parquet").read_bytes()
    asked = {r: ids(round_prompts(three, r)) for r in (1, 2, 3)}
    every = ids(pq.read_table(three / "train.parquet"))
    assert all(a[:2] == every for a in asked.values())  # the fixed source's prompts come first, every round
    own = [set(a[2:]) for a in asked.values()]
    assert all(len(o) == 6 for o in own) and not (own[0] & own[1] or own[0] & own[2] or own[1] & own[2])
    # round r's slice of the tiny draw, per capability: prompts 3(r-1) .. 3r-1
    assert sorted(asked[2][2:]) == sorted(f"{cap}-train-0-{i:05d}" for cap in ("math", "tools") for i in (3, 4, 5))
    assert set(ids(known_prompts(three, [1, 3]))) == set(every) | own[0] | own[2]
    assert not set(ids(known_prompts(three, [1, 2, 3]))) & set(ids(pq.read_table(three / "heldout.parquet")))


def test_without_per_round_sources_every_round_asks_the_same_prompts(tmp_path):
    cfg = PromptsConfig(sources=[PromptSource(kind="tiny", capabilities=["code"], num_train=4, num_heldout=1)])
    assert load_prompts(out(tmp_path), cfg, 0, rounds=3) == {"train": 4, "heldout": 1}
    assert not list((tmp_path / "out").glob("train_round_*"))
    assert ids(round_prompts(tmp_path / "out", 1)) == ids(round_prompts(tmp_path / "out", 3))
