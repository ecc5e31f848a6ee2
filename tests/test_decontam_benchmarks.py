"""Decontamination on the real benchmarks, as the round runs it: the mix stage (`data_mix.mix.mix`) against
`benchmarks/all.parquet`
(`posttrain.stages.evaluate.load_benchmarks`: every item of every shipped benchmark, loaded offline
from the installed packages) and the run's held-out prompts.

- Every item of HumanEval, GSM-symbolic, MATH-500, MMATH and BFCL (simple and multiple), its user turn copied
  into a longer training prompt, is removed, from the SFT rows and from the DPO pairs alike.
- The README's false positives: of 300 GSM-symbolic training prompts none is removed, of 300 generated code
  prompts 2 are, and those 2 are a held-out prompt's words with other punctuation.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.stages.mix import mix
from data_mix.text import plain_words
from posttrain.stages.evaluate import ALL, load_benchmarks
from posttrain.run import schema
from posttrain.recipe.config import MixConfig
from posttrain.sources import code
from posttrain.sources import math as math_source

# every shipped benchmark and its size: a loader that lost its items would make the copies below vacuous
SIZES = {"humaneval": 164, "gsm_symbolic": 500, "math500": 311, "mmath": 3740, "bfcl_simple": 400,
         "bfcl_multiple": 200}
NO_DEDUP = MixConfig(dedup_exact=False, dedup_near=False)  # MATH-500's items are MMATH's English ones: keep both


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory) -> pa.Table:
    out = tmp_path_factory.mktemp("benchmarks")
    load_benchmarks(out, [], None, 0)  # the round's benchmarks stage (all.parquet whatever the recipe scores)
    return schema.read(out / f"{ALL}.parquet", "prompts")


def copied(messages: list[dict], n: int) -> list[dict]:
    """`messages` with the user turn inside a longer request (other turns, BFCL's tool list, as they are)."""
    around = [("Here is a problem from my homework.", "Thanks a lot!"), ("Please help me with this:", "Show work."),
              ("My teacher gave us", "and I am stuck on it.")][n % 3]
    return [{**m, "content": f"{around[0]} {m['content']} {around[1]}"} if m["role"] == "user" else m
            for m in messages]


def sft_rows(records: list[dict], make=lambda r, i: r["messages"]) -> pa.Table:
    return schema.from_records([
        {"id": f"t{i:05d}", "prompt_id": f"t{i:05d}", "capability": r["capability"], "round": 1, "reward": 1.0,
         "messages": make(r, i) + [{"role": "assistant", "content": "The answer is 1."}]}
        for i, r in enumerate(records)], "sft")


def test_every_benchmark_item_copied_into_a_training_prompt_is_removed(tmp_path, benchmarks):
    items = benchmarks.to_pylist()
    by_benchmark = {}
    for item in items:
        by_benchmark[item["id"].split("/")[0]] = by_benchmark.get(item["id"].split("/")[0], 0) + 1
    assert by_benchmark == SIZES
    sft = sft_rows(items, lambda r, i: copied(r["messages"], i))
    pairs = schema.from_records([
        {"id": f"p{i:05d}", "prompt_id": f"p{i:05d}", "capability": r["capability"], "round": 1,
         "prompt": copied(r["messages"], i + 1), "chosen": [{"role": "assistant", "content": "A"}],
         "rejected": [{"role": "assistant", "content": "B"}], "chosen_reward": 1.0, "rejected_reward": 0.0}
        for i, r in enumerate(items)], "pairs")
    clean = sft_rows(code.draw("train", 20, 0) + math_source.draw_gsm_symbolic("train", 20, 0))
    clean = clean.set_column(0, "id", pa.array([f"clean{i:02d}" for i in range(clean.num_rows)]))
    heldout = schema.from_records(code.draw("heldout", 10, 0), "prompts")

    counts = mix(tmp_path, [sft, clean], pairs, heldout, NO_DEDUP, seed=0, benchmarks=benchmarks)

    removed = pq.read_table(tmp_path / "decontaminated.parquet")
    assert (counts["contaminated"], counts["contaminated_pairs"]) == (len(items), len(items))
    assert sorted(removed["id"].to_pylist()) == sorted(sft["id"].to_pylist() + pairs["id"].to_pylist())
    # what is left is the clean prompts, and every removal names a benchmark item
    assert schema.read(tmp_path / "sft.parquet", "sft")["id"].to_pylist() == clean["id"].to_pylist()
    assert counts["pairs"] == 0
    assert set(removed["eval_id"].to_pylist()) <= set(benchmarks["id"].to_pylist())


def removed_by_the_mix(tmp_path, train: list[dict], heldout: list[dict], benchmarks: pa.Table) -> list[dict]:
    """The training prompts the mix stage (recipe defaults) removes as contaminated: (train id, eval id) rows."""
    tmp_path.mkdir()
    mix(tmp_path, [sft_rows(train)], schema.PAIRS.empty_table(), schema.from_records(heldout, "prompts"),
        MixConfig(), seed=0, benchmarks=benchmarks)
    by_id = {f"t{i:05d}": r["id"] for i, r in enumerate(train)}
    return [{"id": by_id[r["id"]], "eval_id": r["eval_id"]}
            for r in pq.read_table(tmp_path / "decontaminated.parquet").to_pylist()]


def test_readme_false_positives_hold(tmp_path, benchmarks):
    """README: "now 0 of 300 and 2 of 300 (a held-out prompt's words, with other punctuation)": 300 training
    prompts of each generator at seed 0, against every benchmark and 100 held-out prompts of the same generator
    (code.yaml's num_heldout). The 2 code prompts are `copies_string` tasks that differ from a held-out one only in
    the separator ('+', '/' against ', '): the held-out split hashes the raw text, decontamination the words."""
    gsm = removed_by_the_mix(tmp_path / "gsm", math_source.draw_gsm_symbolic("train", 300, 0),
                             math_source.draw_gsm_symbolic("heldout", 100, 0), benchmarks)
    assert gsm == []

    train, heldout = code.draw("train", 300, 0), code.draw("heldout", 100, 0)
    removed = removed_by_the_mix(tmp_path / "code", train, heldout, benchmarks)
    assert len(removed) == 2
    text = {r["id"]: r["messages"][0]["content"] for r in train + heldout}
    for row in removed:
        assert row["eval_id"].startswith("code/heldout/")  # a held-out sibling, no benchmark item
        train_text, held_text = text[row["id"]], text[row["eval_id"]]
        assert train_text != held_text
        assert plain_words(pa.array([train_text])) == plain_words(pa.array([held_text]))
