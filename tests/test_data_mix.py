"""Mix stage: exact / near-duplicate dedup, decontamination against eval prompts, rebalancing toward targets.

The table builders here (sft_table, heldout, view, tags_for) are shared with tests/test_data_mix_tags.py (semantic
dedup, tag-aware rebalancing, mix() with tags), tests/test_mix_audit.py and tests/test_judge.py.
"""

from __future__ import annotations

import copy
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from data_mix import decontam, dedup
from posttrain.stages.mix import mix
from data_mix.rebalance import quotas, rebalance
from data_mix.text import prompt_text
from posttrain.run import schema
from posttrain.recipe.config import MixConfig, RecipeError
from posttrain.recipe.load import load_recipe
from tests.test_config import TINY

WORDS = [f"w{i}" for i in range(2000)]


def long_prompt(rng: random.Random, n: int = 100) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def one_word_changed(text: str) -> str:
    words = text.split()
    words[len(words) // 2] = "zebra"
    return " ".join(words)


def sft_table(rows: list[tuple]) -> pa.Table:
    """rows: (id, capability, round, user prompt)."""
    return schema.from_records([
        {"id": i, "prompt_id": i.split("/")[0], "capability": cap, "round": r, "reward": 1.0,
         "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "answer"}]}
        for i, cap, r, text in rows], "sft")


def view(rows: list[tuple[str, str]]) -> pa.Table:
    """(id, raw prompt) -> the (id, text) table the dedup and decontamination functions take."""
    msgs = [[{"role": "user", "content": t}] for _, t in rows]
    return pa.table({"id": [i for i, _ in rows], "text": prompt_text(pa.array(msgs, schema.MESSAGES))})


def heldout(rows: list[tuple[str, str]]) -> pa.Table:
    return schema.from_records([{"id": i, "capability": "math", "answer": "1",
                                 "messages": [{"role": "user", "content": t}]}
                                for i, t in rows], "prompts")


def tags_for(table: pa.Table, **columns) -> pa.Table:
    """A tags table (id + the given columns as functions of the id) for `table`'s rows."""
    ids = table["id"].to_pylist()
    return pa.table({"id": ids, **{name: [f(i) for i in ids] for name, f in columns.items()}})


# --------------------------------------------------------------------------- text


def test_prompt_text_joins_non_assistant_messages_normalized():
    msgs = pa.array([[{"role": "system", "content": "Be  BRIEF"}, {"role": "user", "content": "  What is\n2+2? "},
                      {"role": "assistant", "content": "4"}], []], schema.MESSAGES)
    assert prompt_text(msgs).to_pylist() == ["be brief what is 2+2?", ""]


# --------------------------------------------------------------------------- exact dedup


def test_exact_dups_ignore_case_and_whitespace_and_keep_the_first():
    t = view([("a", "What is 2 + 2?"), ("b", "what  is 2 +\t2?  "), ("c", "What is 2 + 3?"), ("d", "WHAT IS 2 + 2?")])
    assert dedup.exact(t).to_pylist() == [{"id": "b", "dup_of": "a"}, {"id": "d", "dup_of": "a"}]


# --------------------------------------------------------------------------- near dedup


def test_near_dup_catches_a_one_word_change_in_a_long_prompt_only():
    rng = random.Random(0)
    base = long_prompt(rng)
    t = view([("a", base), ("b", long_prompt(rng)), ("c", one_word_changed(base)), ("d", base.upper())])
    got = dedup.near(t, threshold=0.8, num_perm=64, seed=0).to_pylist()
    assert got == [{"id": "c", "dup_of": "a"}, {"id": "d", "dup_of": "a"}]  # "b" (unrelated) stays


def test_near_dup_keeps_short_prompts_that_differ_in_a_number():
    t = view([("a", "Ana has 3 apples and finds 5 more. How many apples does Ana have now?"),
              ("b", "Ana has 3 apples and finds 6 more. How many apples does Ana have now?")])
    assert dedup.near(t, 0.8, 64, seed=0).num_rows == 0  # Jaccard of 3-gram shingles 9/15 = 0.6


def test_near_dup_is_deterministic_and_seeded():
    rng = random.Random(1)
    rows = [(f"p{i:03d}", long_prompt(rng, 30)) for i in range(200)]
    rows += [(f"q{i:03d}", one_word_changed(t)) for i, (_, t) in enumerate(rows[:50])]
    t = view(rows)
    first = dedup.near(t, 0.8, 64, seed=3)
    assert first.equals(dedup.near(t, 0.8, 64, seed=3))
    assert set(first.column("dup_of").to_pylist()) <= {i for i, _ in rows[:50]}
    assert dedup.bands(0.8, 64) == (9, 7)  # datasketch's optimum with false negatives weighted 0.9


# --------------------------------------------------------------------------- decontamination


def test_planted_eval_prompt_is_removed_and_listed():
    rng = random.Random(2)
    planted = long_prompt(rng, 20)
    train = view([("t1", long_prompt(rng, 40)),
                  ("t2", f"{long_prompt(rng, 10)} {planted.upper()} {long_prompt(rng, 10)}"),
                  ("t3", "What is 2+2?"), ("t4", "what is 2+2? please")])
    evals = view([("e2", long_prompt(rng, 30)), ("e1", planted), ("e0", "WHAT is 2+2?")])
    got = decontam.contaminated(train, evals, n=13).to_pylist()
    # A short eval item (< n words) counts where its cleaned words appear whole in a training prompt.
    assert got == [{"id": "t2", "eval_id": "e1"}, {"id": "t3", "eval_id": "e0"}, {"id": "t4", "eval_id": "e0"}]


def test_decontamination_n_is_settable():
    train, evals = view([("t", "a b c d e f")]), view([("e", "x c d e y")])
    assert decontam.contaminated(train, evals, n=3).to_pylist() == [{"id": "t", "eval_id": "e"}]
    assert decontam.contaminated(train, evals, n=4).num_rows == 0


# --------------------------------------------------------------------------- rebalancing


TARGETS = {"math": 0.5, "code": 0.25, "tools": 0.25}


def test_quotas_by_hand():
    counts = {"math": 60, "code": 30, "tools": 10}
    # tools allows 10 * 2 / 0.25 = 80 rows in all: 40 / 20 / 20.
    assert quotas(counts, TARGETS, max_repeat=2) == {"math": 40, "code": 20, "tools": 20}
    assert quotas(counts, TARGETS, max_repeat=1) == {"math": 20, "code": 10, "tools": 10}
    # An explicit total: 50 / 25 / 25, but tools is capped at 10 * 2; its 5 short go to the others by
    # their targets (2:1): math 50 + 3.33, code 25 + 1.67 -> 53 / 27 by largest remainder.
    assert quotas(counts, TARGETS, max_repeat=2, total=100) == {"math": 53, "code": 27, "tools": 20}
    # A capability with no target is dropped; one absent from the data leaves the others' shares renormalized.
    assert quotas({"math": 60, "code": 30, "multilingual": 5}, TARGETS, 1) == \
        {"math": 60, "code": 30, "multilingual": 0}
    assert quotas({"math": 7, "code": 7, "tools": 7}, {"math": 1 / 3, "code": 1 / 3, "tools": 1 / 3}, 1, 10) == \
        {"code": 4, "math": 3, "tools": 3}  # largest remainder, ties by name


def test_rebalance_60_30_10_toward_50_25_25_with_max_repeat_2():
    rows = [(f"{cap}{i:02d}/round1", cap, 1, f"{cap} prompt {i}")
            for cap, n in (("math", 60), ("code", 30), ("tools", 10)) for i in range(n)]
    out = schema.validate(rebalance(sft_table(rows), TARGETS, max_repeat=2, total=None, seed=0), "sft")  # ids unique
    caps = out.column("capability").to_pylist()
    assert {c: caps.count(c) for c in TARGETS} == {"math": 40, "code": 20, "tools": 20}
    tools = sorted(i for i, c in zip(out.column("id").to_pylist(), caps) if c == "tools")
    assert tools == sorted([f"tools{i:02d}/round1" for i in range(10)]
                           + [f"tools{i:02d}/round1#rep1" for i in range(10)])
    again = schema.validate(rebalance(sft_table(list(reversed(rows))), TARGETS, 2, None, seed=0), "sft")
    assert again.equals(out)  # seeded, and independent of input row order
    assert not rebalance(sft_table(rows), TARGETS, 2, None, seed=1).equals(out)


@pytest.mark.parametrize("targets, key, words", [
    ({"math": 0.5, "code": 0.25}, "mix.targets", "sum to 1"),
    ({"math": 0.5, "cooking": 0.5}, "mix.targets.cooking", "not a known capability"),
    ({"math": 1.5, "code": -0.5}, "mix.targets.code", ">= 0"),
])
def test_invalid_targets_are_recipe_errors(tmp_path, targets, key, words):
    data = copy.deepcopy(yaml.safe_load(TINY.read_text()))
    data["mix"] = {"targets": targets}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert key in str(e.value) and words in str(e.value) and path.name in str(e.value)


def test_valid_mix_section_loads():
    r = load_recipe(TINY, ["mix.targets={math: 0.4, code: 0.2, tools: 0.2, multilingual: 0.2}", "mix.max_repeat=2",
                           "mix.ngram=8"])
    assert r.mix.targets == {"math": 0.4, "code": 0.2, "tools": 0.2, "multilingual": 0.2}
    assert (r.mix.max_repeat, r.mix.ngram, r.mix.near_threshold, r.mix.total) == (2, 8, 0.8, None)
    with pytest.raises(RecipeError, match="mix.total"):
        load_recipe(TINY, ["mix.total=10"])  # total without targets does nothing


# --------------------------------------------------------------------------- mix() end to end


def test_mix_end_to_end(tmp_path):
    rng = random.Random(4)
    planted = long_prompt(rng, 15)
    long = long_prompt(rng, 80)
    near = one_word_changed(long)
    r1 = [("m0/round1", "math", 1, "What is 2+2?"), ("m1/round1", "math", 1, long),
          ("m2/round1", "math", 1, f"Solve: {planted}"), ("c0/round1", "code", 1, "Write f(x)."),
          ("c1/round1", "code", 1, "Write g(x)."), ("t0/round1", "tools", 1, "Call the weather tool.")]
    r2 = [("m0/round2", "math", 2, "what is  2+2?"), ("m3/round2", "math", 2, near),
          ("m4/round2", "math", 2, "What is 3+3?"), ("c2/round2", "code", 2, "Write h(x).")]
    pairs = schema.from_records([
        {"id": f"{p}/round2", "prompt_id": p, "capability": "math", "round": 2,
         "prompt": [{"role": "user", "content": t}],
         "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}],
         "chosen_reward": 1.0, "rejected_reward": 0.0}
        for p, t in (("m4", "What is 3+3?"), ("x", f"{planted}!"))], "pairs")
    evals = heldout([("h1", planted), ("h2", "Something else entirely.")])
    cfg = MixConfig(targets={"math": 0.5, "code": 0.5}, max_repeat=1)
    counts = mix(tmp_path, [sft_table(r1), sft_table(r2)], pairs, evals, cfg, seed=0)

    # 10 in; exact: m0/round2 (round 1 wins); near: m3/round2; contaminated: m2/round1 -> math m0, m1, m4 and
    # code c0, c1, c2 and tools t0 (no target: dropped) -> 3 math + 3 code.
    assert counts == {"sft": 6, "pairs": 1, "input": 10, "exact_dups": 1, "near_dups": 1, "contaminated": 1,
                      "contaminated_pairs": 1, "by_capability": {"code": 3, "math": 3},
                      "input_by_capability": {"code": 3, "math": 6, "tools": 1},
                      "before_rebalance": {"code": 3, "math": 3, "tools": 1}}
    sft = schema.read(tmp_path / "sft.parquet", "sft")
    assert sft.column("id").to_pylist() == ["c0/round1", "c1/round1", "m0/round1", "m1/round1", "c2/round2",
                                            "m4/round2"]
    assert schema.read(tmp_path / "pairs.parquet", "pairs").column("id").to_pylist() == ["m4/round2"]
    assert pq.read_table(tmp_path / "decontaminated.parquet").to_pylist() == [
        {"table": "sft", "id": "m2/round1", "eval_id": "h1"}, {"table": "pairs", "id": "x/round2", "eval_id": "h1"}]


def test_mix_disabled_passes_through(tmp_path):
    rows = [("a/round1", "math", 1, "Q"), ("b/round1", "math", 1, "q")]
    counts = mix(tmp_path, [sft_table(rows)], schema.from_records([], "pairs"), heldout([("h", "Q")]),
                 MixConfig(enabled=False), seed=0)
    assert (counts["sft"], counts["exact_dups"], counts["contaminated"]) == (2, 0, 0)
    assert pq.read_table(tmp_path / "decontaminated.parquet").num_rows == 0


def test_decontamination_reads_user_turns_only(tmp_path):
    """A long system message (instructions, a tool list) shared by train and eval prompts is no leak;
    an eval question inside a user turn is."""
    rng = random.Random(3)
    system, planted = long_prompt(rng, 40), long_prompt(rng, 20)
    sft = schema.from_records([
        {"id": f"t{i}/round1", "prompt_id": f"t{i}", "capability": "tools", "round": 1, "reward": 1.0,
         "messages": [{"role": "system", "content": system}, {"role": "user", "content": question},
                      {"role": "assistant", "content": "call"}]}
        for i, question in enumerate(["call mom please", f"now {planted} thanks"])], "sft")
    evals = schema.from_records([{"id": "e", "capability": "tools", "tools": "[]", "expected_call": "{}",
                                  "messages": [{"role": "system", "content": system},
                                               {"role": "user", "content": planted}]}], "prompts")
    pairs = schema.PAIRS.empty_table()
    counts = mix(tmp_path, [sft], pairs, evals, MixConfig(dedup_near=False), seed=0)
    assert counts["contaminated"] == 1
    assert schema.read(tmp_path / "sft.parquet", "sft")["id"].to_pylist() == ["t0/round1"]

