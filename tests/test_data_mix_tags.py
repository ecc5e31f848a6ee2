"""Mix stage with tags: semantic (embedding) dedup, tag-aware rebalancing, and mix() end to end with tags.

Semantic dedup drops paraphrases that exact and MinHash dedup miss, keeping the best-scored row of each group;
rebalancing can favour hard rows, split a capability's quota over topics and drop rows below a quality floor.
The plain stage (exact / near dedup, decontamination, rebalancing toward targets) is in tests/test_data_mix.py,
whose table builders this file shares.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from posttrain.stages.mix import mix
from data_mix.rebalance import rebalance
from posttrain.run import schema
from posttrain.recipe.config import MixConfig, RecipeError
from posttrain.recipe.load import load_recipe
from tests.test_config import TINY
from tests.test_data_mix import heldout, sft_table, tags_for

# --------------------------------------------------------------------------- semantic dedup


def semantic_view(prompts: list[tuple[str, str]], scores: list[float] | None = None):
    """(id, prompt) -> ((id, score) table, unit embeddings of the prompts), row i of each."""
    from data_mix.embed import embed

    table = pa.table({"id": [i for i, _ in prompts], "score": scores or [1.0] * len(prompts)})
    return table, embed([t for _, t in prompts])


PARAPHRASES = [("a", "What is 2 plus 3?"), ("b", "What's 2 plus 3?"), ("c", "What is 2 plus 4?"),
               ("d", "Write a Python function that reverses a string."), ("e", "what is 2 plus 3 ?"),
               ("f", "Write a Python function which reverses a string."), ("g", "Play the song Night Train.")]


def test_semantic_dedup_removes_paraphrases_and_keeps_different_tasks():
    from data_mix import semantic

    table, emb = semantic_view(PARAPHRASES)
    got = semantic.dedup(table, emb, threshold=0.95, seed=0)
    assert got.select(["id", "dup_of"]).to_pylist() == [
        {"id": "b", "dup_of": "a"}, {"id": "e", "dup_of": "a"}, {"id": "f", "dup_of": "d"}]  # c: another sum, kept
    assert all(s >= 0.95 for s in got["similarity"].to_pylist())


def test_semantic_dedup_keeps_the_best_quality_x_difficulty_and_is_deterministic():
    from data_mix import semantic

    table, emb = semantic_view(PARAPHRASES, scores=[1, 6, 1, 1, 1, 2, 1])  # "b" outranks "a" and "e"
    got = semantic.dedup(table, emb, 0.95, seed=0)
    assert got.select(["id", "dup_of"]).to_pylist() == [
        {"id": "a", "dup_of": "b"}, {"id": "d", "dup_of": "f"}, {"id": "e", "dup_of": "b"}]
    order = [6, 3, 0, 5, 2, 4, 1]  # any input order: visiting order is (score desc, id)
    assert semantic.dedup(table.take(order), emb[order], 0.95, seed=0).equals(got)
    assert semantic.dedup(table, emb, 0.95, seed=0).equals(got)


def test_semantic_dedup_greedy_compares_with_kept_rows_only():
    """a ~ b and b ~ c but a !~ c: b goes (a kept first), so c stays: it only resembles a dropped row."""
    from data_mix import semantic

    angle = np.radians([0.0, 20.0, 40.0])
    emb = np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)  # cos 20 deg = 0.94, cos 40 deg = 0.77
    got = semantic.dedup(pa.table({"id": ["a", "b", "c"], "score": [3.0, 2.0, 1.0]}), emb, threshold=0.9)
    assert got.select(["id", "dup_of"]).to_pylist() == [{"id": "b", "dup_of": "a"}]


def test_semantic_dedup_compares_rows_of_the_same_context_only():
    """The same question under another system message or tool list is another task (as in exact/near dedup)."""
    from data_mix import semantic

    emb = np.tile(np.array([[1.0, 0.0]], np.float32), (4, 1))  # four identical user turns
    table = pa.table({"id": ["a", "b", "c", "d"], "score": [4.0, 3.0, 2.0, 1.0]})
    got = semantic.dedup(table, emb, 0.95, group=np.array([0, 1, 0, 1]))
    assert got.select(["id", "dup_of"]).to_pylist() == [{"id": "c", "dup_of": "a"}, {"id": "d", "dup_of": "b"}]
    assert semantic.dedup(table, emb, 0.95).num_rows == 3  # without contexts: one kept of the four
    # with k-means clusters too: contexts split each cluster, the planted pairs still go
    many = pa.table({"id": [f"r{i:03d}" for i in range(300)], "score": [1.0] * 300})
    rng = np.random.default_rng(0)
    base = rng.standard_normal((150, 16)).astype(np.float32)
    emb = np.concatenate([base, base])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    same = semantic.dedup(many, emb, 0.99, cluster_size=50, group=np.zeros(300, np.int64))
    apart = semantic.dedup(many, emb, 0.99, cluster_size=50, group=np.repeat([0, 1], 150))
    assert same.num_rows >= 140 and apart.num_rows == 0


def test_semantic_dedup_clusters_large_inputs_deterministically():
    """Planted near copies of 300 random directions, split over k-means clusters of ~100."""
    from data_mix import semantic

    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 32))
    copies = base[:60] + 0.05 * rng.standard_normal((60, 32))
    emb = np.concatenate([base, copies]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    table = pa.table({"id": [f"b{i:03d}" for i in range(300)] + [f"c{i:03d}" for i in range(60)],
                      "score": [2.0] * 300 + [1.0] * 60})
    got = semantic.dedup(table, emb, 0.95, cluster_size=100, seed=1)
    assert got.equals(semantic.dedup(table, emb, 0.95, cluster_size=100, seed=1))
    assert set(got["id"].to_pylist()) <= {f"c{i:03d}" for i in range(60)}  # only planted copies go
    assert got.num_rows >= 55  # a copy split from its original by the clustering survives (the method's price)
    assert got.to_pylist() == sorted(got.to_pylist(), key=lambda r: r["id"])


# --------------------------------------------------------------------------- tag-aware rebalancing


def test_difficulty_weight_zero_is_the_old_draw_and_positive_favours_hard_rows():
    rows = [(f"m{i:03d}/round1", "math", 1, f"q{i}") for i in range(200)] + \
           [(f"c{i:03d}/round1", "code", 1, f"c{i}") for i in range(50)]
    t = sft_table(rows)
    tags = tags_for(t, difficulty=lambda i: 3 if int(i[1:4]) % 2 else 1)
    old = rebalance(t, {"math": 0.5, "code": 0.5}, 1, None, seed=0)
    assert rebalance(t, {"math": 0.5, "code": 0.5}, 1, None, seed=0, tags=tags, difficulty_weight=0.0).equals(old)
    hard = rebalance(t, {"math": 0.5, "code": 0.5}, 1, None, seed=0, tags=tags, difficulty_weight=2.0)
    math_ids = [i for i in hard["id"].to_pylist() if i.startswith("m")]
    assert len(math_ids) == 50
    assert sum(int(i[1:4]) % 2 for i in math_ids) >= 40  # weight 3^2 = 9 vs 1: most of the 50 drawn are hard
    again = rebalance(sft_table(list(reversed(rows))), {"math": 0.5, "code": 0.5}, 1, None, seed=0, tags=tags,
                      difficulty_weight=2.0)
    assert again.equals(hard)


def test_topic_targets_split_each_capability_quota():
    rows = [(f"m{i:03d}/round1", "math", 1, f"q{i}") for i in range(90)] + \
           [(f"c{i:03d}/round1", "code", 1, f"c{i}") for i in range(30)]
    t = sft_table(rows)
    topic = {**{f"m{i:03d}/round1": "math" if i < 60 else "chat" for i in range(90)},
             **{f"c{i:03d}/round1": "code" for i in range(30)}}
    tags = tags_for(t, topic=topic.get)
    out = rebalance(t, {"math": 0.5, "code": 0.5}, 2, 60, seed=0, tags=tags,
                    topic_targets={"math": 0.4, "code": 0.4, "chat": 0.2})
    got = {}
    for i in out["id"].to_pylist():
        key = topic[i.split("#")[0]]
        got[key] = got.get(key, 0) + 1
    # math capability: 30 rows, split 0.4 : 0.2 over its topics math / chat -> 20 / 10; code: all topic code.
    assert got == {"math": 20, "chat": 10, "code": 30}


def test_quality_floor_keeps_its_level_and_above():
    from data_mix.rebalance import above_floor

    t = sft_table([(f"r{i}/round1", "math", 1, f"q{i}") for i in range(3)])
    tags = tags_for(t, quality={"r0/round1": "low", "r1/round1": "medium", "r2/round1": "high"}.get)
    assert above_floor(t, tags, "medium")["id"].to_pylist() == ["r1/round1", "r2/round1"]
    assert above_floor(t, tags, "high")["id"].to_pylist() == ["r2/round1"]


@pytest.mark.parametrize("override, key", [
    ("mix.topic_targets={math: 1.0}", "mix.topic_targets"),  # needs mix.targets
    ("mix.difficulty_weight=1.0", "mix.difficulty_weight"),
    ("mix.semantic_threshold=1.5", "mix.semantic_threshold"),
    ("mix.quality_floor=great", "mix.quality_floor"),
    ("mix.topics={math: {}}", "mix.topics.math"),
    ("mix.embedding_model=/nonexistent/model", "mix.embedding_model"),
])
def test_invalid_tag_options_are_recipe_errors(override, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(TINY, [override])


def test_topic_targets_name_coarse_topics():
    with pytest.raises(RecipeError, match="mix.topic_targets.cooking"):
        load_recipe(TINY, ["mix.targets={math: 1.0}", "mix.topic_targets={math: 0.5, cooking: 0.5}"])
    r = load_recipe(TINY, ["mix.targets={math: 1.0}", "mix.topic_targets={math: 0.8, code: 0.2}",
                           "mix.dedup_semantic=true"])
    assert r.mix.topic_targets == {"math": 0.8, "code": 0.2} and "tools" in r.mix.topics


# --------------------------------------------------------------------------- mix() with tags


def test_mix_end_to_end_with_tags_semantic_dedup_and_quality_floor(tmp_path):
    r1 = [("m0/round1", "math", 1, "What is 2 plus 3?"),
          ("m1/round1", "math", 1, "Tom has 4 apples and eats 1. How many are left?"),
          ("c0/round1", "code", 1, "Write a Python function that reverses a string."),
          ("c1/round1", "code", 1, "Write a Python function that returns the sum of a list."),
          ("t0/round1", "tools", 1, "Set a timer for 5 minutes.")]
    r2 = [("m2/round2", "math", 2, "What's 2 plus 3?"),
          ("c2/round2", "code", 2, "Write a Python function which reverses a string."),
          ("m3/round2", "math", 2, "What is 7 times 8?"),
          ("m4/round2", "math", 2, "Solve for x: 2x + 6 = 10.")]
    sft = [sft_table(r1), sft_table(r2)]
    # Round 2 has RM scores: m3 is the top quartile of (math, round 2); m2 and m4 fall below it -> medium.
    scored = {2: pa.table({"prompt_id": ["m2", "c2", "m3", "m4"], "completion": ["answer"] * 4,
                           "rm_score": [0.1, 0.5, 0.9, 0.2], "finish_reason": ["stop"] * 4})}
    cfg = MixConfig(dedup_near=False, dedup_semantic=True, quality_floor="high", targets={"math": 0.5, "code": 0.5},
                    max_repeat=2)
    counts = mix(tmp_path, sft, schema.PAIRS.empty_table(), heldout([("h", "Something else entirely.")]), cfg, seed=0,
                 scored=scored)
    # Semantic: m2 ("What's 2 plus 3?", medium) duplicates m0 (high: kept first); c2 (a paraphrase) duplicates c0.
    # The floor then drops m4 (medium).
    dups = pq.read_table(tmp_path / "semantic_dups.parquet").select(["id", "dup_of"]).to_pylist()
    assert dups == [{"id": "c2/round2", "dup_of": "c0/round1"}, {"id": "m2/round2", "dup_of": "m0/round1"}]
    assert counts["semantic_dups"] == 2 and counts["below_quality_floor"] == 1
    assert counts["before_rebalance"] == {"code": 2, "math": 3, "tools": 1}
    before, after = counts["composition"]["before"], counts["composition"]["after"]
    assert before["capability"] == {"code": 3, "math": 5, "tools": 1}
    assert before["topic"] == {"code": 3, "math": 5, "tools": 1} and before["quality"] == {"high": 7, "medium": 2}
    # 2 code and 3 math rows, 50/50 with max_repeat 2 -> 4 + 4: every code row twice, one math row twice.
    assert after["capability"] == {"code": 4, "math": 4} and sum(after["topic"].values()) == counts["sft"] == 8
    assert after["capability_topic"]["math"] == {"math": 4} and after["quality"] == {"high": 8}
    out = schema.read(tmp_path / "sft.parquet", "sft")
    tags = pq.read_table(tmp_path / "tags.parquet")
    assert sorted(tags["id"].to_pylist()) == sorted(out["id"].to_pylist())  # one tags row per sft id, joined by id
    assert "c0/round1#rep1" in tags["id"].to_pylist()  # code 2 rows -> 3 with max_repeat 2: a copy, tagged
    m3 = tags.filter(pc.equal(tags["id"], "m3/round2")).to_pylist()[0]
    assert (m3["quality"], m3["quality_rule"], m3["topic"]) == ("high", "rm_quartile", "math")
    again = tmp_path / "again"
    again.mkdir()
    assert mix(again, sft, schema.PAIRS.empty_table(), heldout([("h", "Something else entirely.")]), cfg, seed=0,
               scored=scored) == counts


def test_mix_tag_only_changes_nothing_but_adds_tags(tmp_path):
    rows = [("a/round1", "math", 1, "What is 2 plus 3?"), ("b/round1", "code", 1, "Write f(x).")]
    plain, tagged = tmp_path / "plain", tmp_path / "tagged"
    plain.mkdir()
    tagged.mkdir()
    base = mix(plain, [sft_table(rows)], schema.PAIRS.empty_table(), heldout([("h", "Q")]), MixConfig(), seed=0)
    counts = mix(tagged, [sft_table(rows)], schema.PAIRS.empty_table(), heldout([("h", "Q")]), MixConfig(tag=True),
                 seed=0)
    assert {k: v for k, v in counts.items() if k != "composition"} == base
    assert counts["composition"]["before"] == counts["composition"]["after"]
    assert pq.read_table(tagged / "sft.parquet").equals(pq.read_table(plain / "sft.parquet"))
    assert not (plain / "tags.parquet").exists() and pq.read_table(tagged / "tags.parquet").num_rows == 2
