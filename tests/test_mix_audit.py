"""Mix stage audit fixes: dedup on user turns, punctuation-blind decontamination with short-item containment,
rebalancing (untargeted topics, high-quality-only repetition, redistributed shortfall), Arrow's 2 GiB limit,
and tag counts before dedup. Expectations are derived by hand in the comments."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_mix import decontam, dedup, text
from posttrain.stages.mix import mix
from data_mix.rebalance import quotas, rebalance, topic_shares
from data_mix.text import CONTEXT, PROMPT, USER, plain_words, prompt_texts
from posttrain.run import schema
from posttrain.recipe.config import MixConfig
from tests.test_data_mix import heldout, long_prompt, sft_table, tags_for, view

TARGETS = {"math": 0.5, "code": 0.25, "tools": 0.25}


def tool_rows(rows: list[tuple[str, int, str, str, str]]) -> pa.Table:
    """(id, round, system, user, reply) -> an sft table of tools rows."""
    return schema.from_records([
        {"id": i, "prompt_id": i.split("/")[0], "capability": "tools", "round": r, "reward": 1.0,
         "messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                      {"role": "assistant", "content": reply}]}
        for i, r, system, user, reply in rows], "sft")


def counts_of(table: pa.Table, key) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in table["id"].to_pylist():
        out[key(i)] = out.get(key(i), 0) + 1
    return out


# --------------------------------------------------------------------------- 1. dedup on user turns


def test_a_shared_tool_list_does_not_make_tool_prompts_near_duplicates(tmp_path):
    rng = random.Random(0)
    tools, other_tools = long_prompt(rng, 168), long_prompt(rng, 168)
    rows = [("a/round1", 1, tools, "What is the weather in Paris?", '{"name": "get_weather"}'),
            ("b/round1", 1, tools, "Set a timer for 5 minutes.", '{"name": "set_timer"}'),
            ("c/round1", 1, tools, "Play the song Night Train.", '{"name": "play_song"}'),
            ("a/round2", 2, tools, "What is the weather in Paris?", '{"name": "get_weather"}'),  # prompt + reply dup
            ("d/round2", 2, other_tools, "What is the weather in Paris?", '{"name": "get_weather"}')]
    # Hashing system + user, a, b, c share 166 of ~171 shingles: Jaccard ~0.94, two of them dropped as near dups.
    # On user turns within a tool list: a, b, c differ entirely; a/round2 equals a/round1 in user turns and
    # tool list (exact dup, round 1 kept); d asks a's question with another tool list: another task, kept.
    counts = mix(tmp_path, [tool_rows(rows)], schema.PAIRS.empty_table(), heldout([("h", "Unrelated question.")]),
                 MixConfig(), seed=0)
    assert (counts["input"], counts["exact_dups"], counts["near_dups"], counts["sft"]) == (5, 1, 0, 4)
    assert schema.read(tmp_path / "sft.parquet", "sft")["id"].to_pylist() == \
        ["a/round1", "b/round1", "c/round1", "d/round2"]


def test_near_dup_within_one_tool_list_is_still_caught(tmp_path):
    rng = random.Random(1)
    tools, question = long_prompt(rng, 50), long_prompt(rng, 60)
    edited = question.split()
    edited[30] = "zebra"  # one word of 60: Jaccard of the 3-gram shingles 55 / 61 = 0.90
    rows = [("a/round1", 1, tools, question, "x"), ("b/round1", 1, tools, " ".join(edited), "y")]
    counts = mix(tmp_path, [tool_rows(rows)], schema.PAIRS.empty_table(), heldout([("h", "Unrelated question.")]),
                 MixConfig(), seed=0)
    assert (counts["near_dups"], counts["sft"]) == (1, 1)


def test_exact_and_near_dedup_compare_only_within_a_group():
    t = view([("a", "What is 2 + 2?"), ("b", "what is 2 + 2?"), ("c", "What is 2 + 2?")])
    group = np.array([0, 1, 0])
    assert dedup.exact(t).to_pylist() == [{"id": "b", "dup_of": "a"}, {"id": "c", "dup_of": "a"}]
    assert dedup.exact(t, group).to_pylist() == [{"id": "c", "dup_of": "a"}]  # b: another group
    rng = random.Random(2)
    base = long_prompt(rng, 80)
    t = view([("a", base), ("b", base), ("c", base.upper())])
    assert dedup.near(t, 0.8, 64, seed=0, group=np.array([5, 7, 5])).to_pylist() == [{"id": "c", "dup_of": "a"}]


def test_prompt_texts_split_user_and_context_in_one_pass():
    msgs = pa.array([[{"role": "system", "content": "Tools:  A"}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "x"}, {"role": "tool", "content": "R"},
                      {"role": "user", "content": "More?"}], []], schema.MESSAGES)
    prompt, user, context = prompt_texts(msgs, (PROMPT, USER, CONTEXT))
    assert prompt.to_pylist() == ["tools: a hi r more?", ""]
    assert user.to_pylist() == ["hi more?", ""]
    assert context.to_pylist() == ["tools: a r", ""]


# --------------------------------------------------------------------------- 2. decontamination


def test_plain_words_by_hand():
    got = plain_words(pa.array(["What is the capital of France?", "  Don't\tstop,  NOW!! ", "2+2=4", "über-cool",
                                "e.g. 3.5%", "?!", "", "東京、大阪。"]))
    assert got.to_pylist() == ["what is the capital of france", "dont stop now", "2 2 4", "über cool", "e g 3 5", "",
                               "", "東京 大阪"]


def test_punctuation_does_not_hide_an_eval_item():
    rng = random.Random(3)
    item = long_prompt(rng, 20).split()
    with_comma = " ".join(item[:10]) + ", " + " ".join(item[10:])  # one comma: every 13-gram crossing it differed
    train = view([("t1", "Quick quiz: what is the capital of france and why"),  # 6-word item inside, "?" dropped
                  ("t2", f"Please answer {with_comma} thanks"),
                  ("t3", "What is the capital of Spain?")])
    evals = view([("e1", "What is the capital of France?"), ("e2", " ".join(item))])
    assert decontam.contaminated(train, evals, n=13).to_pylist() == [
        {"id": "t1", "eval_id": "e1"}, {"id": "t2", "eval_id": "e2"}]


def test_short_eval_items_are_caught_contained_or_equal():
    """Items shorter than n words: contained as whole words (3+ words) or equal (any length) after normalizing."""
    train = view([("t1", "What is 2+2?"),  # equal to e0 ("what is 2 2")
                  ("t2", "what is 2+2? please"),  # contains e0
                  ("t3", "so, what is 2 + 2 then"),  # contains e0: "2+2" and "2 + 2" are both "2 2"
                  ("t4", "what is 2+22"),  # "what is 2 22": not e0's words
                  ("t5", "Call Ana."),  # equal to the 2-word e1
                  ("t6", "call ana and say hi"),  # contains e1, but 2 words are matched by equality only
                  ("t7", "hello"), ("t8", "hello there")])  # e2 is 1 word: t7 equal, t8 not
    evals = view([("e0", "WHAT is 2+2?"), ("e1", "Call Ana!"), ("e2", "Hello!")])
    got = decontam.contaminated(train, evals, n=13).to_pylist()
    assert got == [{"id": "t1", "eval_id": "e0"}, {"id": "t2", "eval_id": "e0"}, {"id": "t3", "eval_id": "e0"},
                   {"id": "t5", "eval_id": "e1"}, {"id": "t7", "eval_id": "e2"}]
    assert decontam.contaminated(train, evals, n=13, min_words=2).to_pylist()[-2:] == [
        {"id": "t6", "eval_id": "e1"}, {"id": "t7", "eval_id": "e2"}]  # min_words=2: t6 too


def test_earliest_match_names_the_eval_item():
    # e_b's words start at word 1, e_a's at word 4: e_b is named although e_a's id is smaller.
    train = view([("t", "x alpha beta gamma delta epsilon zeta")])
    evals = view([("e_a", "delta epsilon zeta"), ("e_b", "alpha beta gamma")])
    assert decontam.contaminated(train, evals, n=13).to_pylist() == [{"id": "t", "eval_id": "e_b"}]
    # two items starting at the same word: the smaller eval id
    evals = view([("e_z", "alpha beta gamma"), ("e_y", "alpha beta gamma delta")])
    assert decontam.contaminated(train, evals, n=13).to_pylist() == [{"id": "t", "eval_id": "e_y"}]


def test_long_items_still_need_an_n_gram():
    rng = random.Random(4)
    item = long_prompt(rng, 20)
    words = item.split()
    cut = " ".join(words[:12]) + " inserted " + " ".join(words[12:])  # intact runs of 12 and 8 words
    cut2 = " ".join(words[:6]) + " x " + " ".join(words[6:14]) + " y " + " ".join(words[14:])  # runs 6, 8, 6
    train = view([("t1", cut), ("t2", cut2), ("t3", f"a {item} b")])
    assert decontam.contaminated(train, view([("e", item)]), n=13).to_pylist() == [{"id": "t3", "eval_id": "e"}]
    assert decontam.contaminated(train, view([("e", item)]), n=12)["id"].to_pylist() == ["t1", "t3"]


INSTRUCTION = ("Give the result as your final answer. Do not include units. Solve the problem step by step. "
               "Finish with \"The answer is <number>.\"")  # 22 words, as reasoning-gym's + ours


def test_instructions_shared_by_many_eval_items_are_not_a_leak():
    """Every eval item ends with the same 22 words: 10 of its 13-grams lie inside them. In 30 items (more than
    max_evals) they are shared text: a training question with those words is not a leak, a copied item is."""
    rng = random.Random(5)
    questions = [long_prompt(rng, 20) for _ in range(31)]
    evals = view([(f"e{i:02d}", f"{q} {INSTRUCTION}") for i, q in enumerate(questions[:30])])
    train = view([("t_new", f"{questions[30]} {INSTRUCTION}"), ("t_copy", f"Hi. {questions[7]} {INSTRUCTION}")])
    assert decontam.contaminated(train, evals, n=13).to_pylist() == [{"id": "t_copy", "eval_id": "e07"}]
    # counted as evidence (max_evals 30+), the instruction covers 22 of an item's 42 words: over half
    assert decontam.contaminated(train, evals, n=13, max_evals=30)["id"].to_pylist() == ["t_new", "t_copy"]


def test_overlap_is_the_share_of_an_item_shared_n_grams_cover():
    rng = random.Random(6)
    item = long_prompt(rng, 26).split()
    sibling = item[:13] + ["zebra"] + item[14:]  # runs of 13 and 12 words: one 13-gram, 13 of 26 words
    train, evals = view([("t", " ".join(sibling))]), view([("e", " ".join(item))])
    assert decontam.contaminated(train, evals, n=13, overlap=0.5).num_rows == 1
    assert decontam.contaminated(train, evals, n=13, overlap=0.6).num_rows == 0
    # an item's own overlap (held-out prompts: 1.0, whole only) wins over the argument
    whole_only = evals.append_column("overlap", pa.array([1.0]))
    assert decontam.contaminated(train, whole_only, n=13, overlap=0.5).num_rows == 0
    copied = view([("t", "so: " + " ".join(item) + " ok")])
    assert decontam.contaminated(copied, whole_only, n=13).to_pylist() == [{"id": "t", "eval_id": "e"}]


def test_mix_removes_benchmark_overlap_but_keeps_held_out_siblings(tmp_path):
    """A held-out prompt is a sibling of training prompts (one template): only a whole copy is removed. A
    benchmark item is matched by shared n-grams too."""
    rng = random.Random(7)
    held, bench = long_prompt(rng, 26).split(), long_prompt(rng, 26).split()
    half = lambda w: " ".join(w[:13] + ["zebra"] + w[14:])  # noqa: E731  (shares 13 of 26 words)
    rows = [("s_held/round1", "math", 1, half(held)), ("c_held/round1", "math", 1, "Q: " + " ".join(held)),
            ("s_bench/round1", "math", 1, half(bench)), ("keep/round1", "math", 1, long_prompt(rng, 30))]
    counts = mix(tmp_path, [sft_table(rows)], schema.PAIRS.empty_table(), heldout([("h", " ".join(held))]),
                 MixConfig(), seed=0, benchmarks=heldout([("b", " ".join(bench))]))
    assert counts["contaminated"] == 2 and counts["sft"] == 2
    assert pq.read_table(tmp_path / "decontaminated.parquet").to_pylist() == [
        {"table": "sft", "id": "c_held/round1", "eval_id": "h"},
        {"table": "sft", "id": "s_bench/round1", "eval_id": "b"}]


def test_mix_decontaminates_through_punctuation(tmp_path):
    rows = [("m0/round1", "math", 1, "Quick one: what is the capital of France, and its river"),
            ("m1/round1", "math", 1, "What is the capital of Peru?")]
    counts = mix(tmp_path, [sft_table(rows)], schema.PAIRS.empty_table(),
                 heldout([("h1", "What is the capital of France?")]), MixConfig(), seed=0)
    assert (counts["contaminated"], counts["sft"]) == (1, 1)
    assert pq.read_table(tmp_path / "decontaminated.parquet").to_pylist() == [
        {"table": "sft", "id": "m0/round1", "eval_id": "h1"}]


# --------------------------------------------------------------------------- 3. rebalancing


def test_total_shortfall_is_redistributed():
    counts = {"math": 60, "code": 30, "tools": 10}
    # total 100: tools' share 25 > its 10 * 2 = 20 -> 20; the other 80 split 2 : 1 -> 53.33 / 26.67 -> floors
    # 53 / 26 and the spare row to the larger remainder (code).
    assert quotas(counts, TARGETS, max_repeat=2, total=100) == {"math": 53, "code": 27, "tools": 20}
    # A cascade: a (share 50) caps at 5; b then wants 95 * 0.6 = 57 > 35 and caps; c takes the remaining 60.
    assert quotas({"a": 5, "b": 35, "c": 100}, {"a": 0.5, "b": 0.3, "c": 0.2}, 1, 100) == {"a": 5, "b": 35, "c": 60}
    # Everyone at capacity: the output is short of total, every row once.
    assert quotas(counts, TARGETS, max_repeat=1, total=1000) == {"math": 60, "code": 30, "tools": 10}


def test_existing_quota_cases_are_unchanged():
    counts = {"math": 60, "code": 30, "tools": 10}
    assert quotas(counts, TARGETS, max_repeat=2) == {"math": 40, "code": 20, "tools": 20}
    assert quotas(counts, TARGETS, max_repeat=1) == {"math": 20, "code": 10, "tools": 10}
    assert quotas({"math": 60, "code": 30, "multilingual": 5}, TARGETS, 1) == \
        {"math": 60, "code": 30, "multilingual": 0}
    assert quotas({"math": 7, "code": 7, "tools": 7}, {"math": 1 / 3, "code": 1 / 3, "tools": 1 / 3}, 1, 10) == \
        {"code": 4, "math": 3, "tools": 3}


def test_rebalance_with_total_reaches_it_deterministically():
    rows = [(f"{cap}{i:02d}/round1", cap, 1, f"{cap} prompt {i}")
            for cap, n in (("math", 60), ("code", 30), ("tools", 10)) for i in range(n)]
    out = schema.validate(rebalance(sft_table(rows), TARGETS, 2, 100, seed=0), "sft")
    assert counts_of(out, lambda i: i[:4]) == {"math": 53, "code": 27, "tool": 20}
    assert out.equals(schema.validate(rebalance(sft_table(list(reversed(rows))), TARGETS, 2, 100, seed=0), "sft"))


def test_only_high_quality_rows_are_repeated():
    rows = [(f"{cap}{i:02d}/round1", cap, 1, f"{cap} prompt {i}")
            for cap, n in (("math", 60), ("code", 30), ("tools", 10)) for i in range(n)]
    t = sft_table(rows)
    high_tools = {f"tools{i:02d}/round1" for i in (1, 4, 6, 9)}
    tags = tags_for(t, quality=lambda i: "high" if not i.startswith("tools") or i in high_tools else "medium")
    # tools can give 10 + 4 high rows * (2 - 1) = 14 rows -> total 14 / 0.25 = 56 -> math 28, code 14, tools 14:
    # each tools row once, the 4 high ones twice.
    out = rebalance(t, TARGETS, 2, None, seed=0, tags=tags)
    assert counts_of(out, lambda i: i[:4]) == {"math": 28, "code": 14, "tool": 14}
    copies = sorted(i for i in out["id"].to_pylist() if "#rep" in i)
    assert copies == sorted(f"{i}#rep1" for i in high_tools)
    # The medium tools rows are never repeated: with max_repeat 3, tools gives at most 10 + 4 * 2 = 18 rows.
    # total 200: tools' share 50 -> 18 (each high row #rep1 and #rep2); the other 182 split 2 : 1 -> 121.33 /
    # 60.67 -> 121 / 61 (the spare row to code's larger remainder).
    out = rebalance(t, TARGETS, 3, 200, seed=0, tags=tags)
    assert counts_of(out, lambda i: i[:4]) == {"math": 121, "code": 61, "tool": 18}
    assert sorted(i for i in out["id"].to_pylist() if i.startswith("tools") and "#rep" in i) == \
        sorted(f"{i}#rep{m}" for i in high_tools for m in (1, 2))
    # Without a quality column every row counts as high: the old draw.
    plain = rebalance(t, TARGETS, 2, None, seed=0)
    assert counts_of(plain, lambda i: i[:4]) == {"math": 40, "code": 20, "tool": 20}


def test_topic_shares_by_hand():
    # 60 math, 30 chat, 10 writing rows; writing has no target and keeps 10%; math and chat split 90% 0.4 : 0.2.
    got = topic_shares({"math": 60, "chat": 30, "writing": 10}, {"math": 0.4, "chat": 0.2, "code": 0.4})
    assert got == pytest.approx({"writing": 0.1, "math": 0.6, "chat": 0.3})
    assert topic_shares({"writing": 30}, {"math": 1.0}) == {"writing": 1.0}  # nothing targeted: as the rows are
    assert topic_shares({"math": 10, "chat": 10}, {"math": 1.0, "chat": 0.0}) == {"math": 1.0, "chat": 0.0}


def test_capability_with_no_targeted_topic_keeps_its_quota():
    rows = [(f"m{i:03d}/round1", "math", 1, f"q{i}") for i in range(90)] + \
           [(f"c{i:03d}/round1", "code", 1, f"c{i}") for i in range(30)]
    t = sft_table(rows)
    topic = {**{f"m{i:03d}/round1": "math" if i < 60 else "chat" for i in range(90)},
             **{f"c{i:03d}/round1": "writing" if i < 20 else "code" for i in range(30)}}
    tags = tags_for(t, topic=topic.get)
    # Quotas 30 / 30 (total 60, 0.5 each). math: topics math / chat, both targeted 0.4 : 0.2 -> 20 / 10.
    # code: writing (20 rows, no target) keeps 20/30 of 30 = 20; code (10 rows, the only targeted topic)
    # gets the other 10. Before the fix writing got 0 and code was capped at 10 * 2: code 20 of its 30.
    out = rebalance(t, {"math": 0.5, "code": 0.5}, 2, 60, seed=0, tags=tags,
                    topic_targets={"math": 0.4, "code": 0.4, "chat": 0.2})
    assert counts_of(out, lambda i: topic[i.split("#")[0]]) == {"math": 20, "chat": 10, "writing": 20, "code": 10}
    # A capability none of whose topics is targeted keeps its whole quota (it was 0).
    only_writing = tags_for(t, topic=lambda i: "writing" if i.startswith("c") else "math")
    out = rebalance(t, {"math": 0.5, "code": 0.5}, 1, 60, seed=0, tags=only_writing, topic_targets={"math": 1.0})
    assert counts_of(out, lambda i: i[0]) == {"m": 30, "c": 30}


def test_a_scarce_topic_leaves_its_share_to_the_capability_s_other_topics():
    rows = [(f"m{i:03d}/round1", "math", 1, f"q{i}") for i in range(40)]
    t = sft_table(rows)
    topic = {f"m{i:03d}/round1": "chat" if i < 5 else "math" for i in range(40)}
    # quota 40 (max_repeat 1); chat's share 0.5 = 20 > its 5 rows: chat 5, math the other 35.
    out = rebalance(t, {"math": 1.0}, 1, 40, seed=0, tags=tags_for(t, topic=topic.get),
                    topic_targets={"math": 0.5, "chat": 0.5})
    assert counts_of(out, lambda i: topic[i.split("#")[0]]) == {"chat": 5, "math": 35}


# --------------------------------------------------------------------------- 4. 2 GiB: blocks and take


def messages(n: int, reply: int = 100) -> pa.ChunkedArray:
    recs = [[{"role": "system", "content": f"S{i % 3}"}, {"role": "user", "content": f"Question {i}?"},
             {"role": "assistant", "content": "r" * reply}] for i in range(n)]
    return pa.chunked_array([pa.array(recs[:n // 2], schema.MESSAGES), pa.array(recs[n // 2:], schema.MESSAGES)])


def test_blocks_stay_within_a_chunk_and_a_byte_budget():
    msgs = messages(50)  # chunks of 25 and 25 rows; each row has 2 + (11 or 12) + 100 content bytes
    got = list(text.blocks(msgs, rows=8, max_bytes=500))  # 500 bytes -> 4 rows a block
    assert sum(len(b) for b in got) == 50 and all(isinstance(b, pa.Array) for b in got)
    assert [len(b) for b in got] == [4, 4, 4, 4, 4, 4, 1, 4, 4, 4, 4, 4, 4, 1]  # a block never spans chunks
    assert pa.chunked_array(got).equals(pa.chunked_array([msgs.combine_chunks()]))
    big = list(text.blocks(msgs, rows=8, max_bytes=10))  # a row above the budget is a block alone
    assert [len(b) for b in big] == [1] * 50
    part = msgs.slice(3, 30)  # rows 3..32: 22 in the first chunk, 8 in the second
    got = list(text.blocks(part, rows=8, max_bytes=500))
    assert [len(b) for b in got] == [4, 4, 4, 4, 4, 2, 4, 4] and pa.chunked_array(got).to_pylist() == part.to_pylist()


def test_prompt_texts_and_tagger_text_do_not_depend_on_blocks(monkeypatch):
    from data_mix import tagger

    msgs = messages(40)
    user, context = prompt_texts(msgs, (USER, CONTEXT))
    reply, asked = tagger.last_reply(msgs), tagger.user_text(msgs)
    monkeypatch.setattr(text, "BLOCK_BYTES", 300)  # rows of 113 or 114 content bytes: blocks of 2 rows
    assert prompt_texts(msgs, (USER, CONTEXT))[0].num_chunks == 20
    assert [c.to_pylist() for c in prompt_texts(msgs, (USER, CONTEXT))] == [user.to_pylist(), context.to_pylist()]
    assert tagger.last_reply(msgs).to_pylist() == reply.to_pylist() == ["r" * 100] * 40
    assert tagger.user_text(msgs).to_pylist() == asked.to_pylist()
    assert user.to_pylist()[:2] == ["question 0?", "question 1?"] and context.to_pylist()[:2] == ["s0", "s1"]


def test_take_and_sort_by_past_the_small_table_limit(monkeypatch):
    """The large-type path (taken past SMALL_TABLE bytes; real use: > 2 GiB of replies, where Arrow's own take
    fails with 'offset overflow while concatenating arrays') gives Arrow's rows and schema, in several chunks."""
    t = sft_table([(f"r{i:03d}/round1", "math", 1 + i % 2, f"q{i}") for i in range(60)])
    t = pa.concat_tables([t.slice(0, 30), t.slice(30)])
    order = np.random.default_rng(0).permutation(60)
    expect = t.take(order)
    monkeypatch.setattr(text, "SMALL_TABLE", 1000)
    got = text.take(t, order)
    assert got.schema == t.schema and got.equals(expect) and got["messages"].num_chunks > 1
    keys = [("round", "ascending"), ("id", "descending")]
    assert text.sort_by(t, keys).equals(t.sort_by(keys))
    assert rebalance(t, {"math": 1.0}, 2, 100, seed=0).num_rows == 100


# --------------------------------------------------------------------------- 5. tag counts before dedup


def test_composition_counts_the_input_before_dedup(tmp_path):
    rows = [("a/round1", "math", 1, "What is 2 plus 3?"), ("b/round1", "code", 1, "Write f(x)."),
            ("a/round2", "math", 2, "what is 2 plus 3?"),  # exact dup of a/round1
            ("c/round1", "math", 1, "What is the capital of France?")]  # contaminated
    counts = mix(tmp_path, [sft_table(rows)], schema.PAIRS.empty_table(),
                 heldout([("h", "What is the capital of France")]), MixConfig(tag=True), seed=0)
    comp = counts["composition"]
    assert (counts["exact_dups"], counts["contaminated"]) == (1, 1)
    assert comp["input"]["capability"] == {"code": 1, "math": 3}
    assert comp["before"]["capability"] == comp["after"]["capability"] == {"code": 1, "math": 1}
    assert sum(comp["input"]["quality"].values()) == 4 and sum(comp["before"]["quality"].values()) == 2
    tags = pq.read_table(tmp_path / "tags.parquet")
    assert tags["id"].to_pylist() == ["a/round1", "b/round1"]
