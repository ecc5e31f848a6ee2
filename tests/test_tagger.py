"""Tagger: embedding topic classifier, complexity/difficulty heuristics, quality rule, cleaning flags."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from data_mix import tagger
from data_mix.embed import embed, model_path
from data_mix.topics import DEFAULT_TOPICS
from posttrain.run import schema


def sft_rows(rows: list[dict]) -> pa.Table:
    """rows: {id, capability?, round?, reward?, prompt, reply, system?} -> an sft table."""
    return schema.from_records([
        {"id": r["id"], "prompt_id": r["id"].split("/")[0], "capability": r.get("capability", "math"),
         "round": r.get("round", 1), "reward": r.get("reward", 1.0),
         "messages": ([{"role": "system", "content": r["system"]}] if "system" in r else [])
         + [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r.get("reply", "ok")}]}
        for r in rows], "sft")


# --------------------------------------------------------------------------- embeddings and topics


def test_embeddings_are_offline_unit_vectors_equal_to_sentence_transformers():
    texts = ["What is 2 plus 3?", "Write a Python function that reverses a string.", ""]
    ours = embed(texts)
    assert ours.shape == (3, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(model_path()), device="cpu", local_files_only=True).encode(
        texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("prompt, topic", [
    ("Tom has 12 marbles and loses 5. How many marbles does Tom have now?", "math"),
    ("Solve for x: 3x + 5 = 20.", "math"),
    ("What is the probability of rolling two sixes with two dice?", "math"),
    ("Write a Python function is_palindrome(s) that returns True if s reads the same backwards.", "code"),
    ("Fix the bug: my loop never ends in this JavaScript code.", "code"),
    ("What is the weather in Oslo?", "tools"),
    ("Set a timer for 10 minutes.", "tools"),
    ("Play the song Night Train.", "tools"),
    ("Translate 'good morning' into Spanish.", "multilingual"),
    ("Write a haiku about autumn leaves.", "writing"),
])
def test_topic_classifier_puts_obvious_prompts_in_their_coarse_topic(prompt, topic):
    coarse, fine, sim = tagger.classify(embed([prompt]), DEFAULT_TOPICS)
    assert coarse.to_pylist() == [topic]
    assert fine[0].as_py() in DEFAULT_TOPICS[topic] and 0 < sim[0].as_py() <= 1


def test_topics_come_from_the_recipe():
    topics = {"cooking": {"recipes": "How do I bake bread? A recipe with flour and yeast."},
              "sport": {"football": "Who won the football match? The team scored a goal."}}
    coarse, fine, _ = tagger.classify(embed(["Give me a recipe for banana bread.", "Which team won the match?"]),
                                      topics)
    assert coarse.to_pylist() == ["cooking", "sport"] and fine.to_pylist() == ["recipes", "football"]


# --------------------------------------------------------------------------- complexity and difficulty


def test_complexity_grows_with_every_added_constraint():
    steps = ["Summarize the article below.", "Use at most 50 words.", "Do not mention the author.",
             "Answer in JSON with a 'summary' field.", "Then explain your choice step by step.",
             "- keep the names\n- keep the dates"]
    prompts = pa.array(["\n".join(steps[:k]) for k in range(1, len(steps) + 1)])
    cx = tagger.complexity(prompts).to_pylist()
    assert all(b > a for a, b in zip(cx, cx[1:])), cx
    diff = tagger.difficulty(prompts, tagger.complexity(prompts)).to_pylist()
    assert diff == sorted(diff) and diff[0] == 1 and diff[-1] == 3


def test_complexity_counts_sentences_not_decimal_points():
    cx = tagger.complexity(pa.array(["What is 2.5 plus 3?",
                                     "Eli has 7 books and gives away 3. How many are left?", ""]))
    assert cx.to_pylist() == [1, 2, 1]  # never below 1


# --------------------------------------------------------------------------- quality


def test_quality_is_the_rm_top_quartile_per_capability_and_round():
    caps = ["math"] * 8 + ["code"] * 4 + ["math"] * 4
    rounds = [1] * 12 + [2] * 4
    rm = [1, 2, 3, 4, 5, 6, 7, 8] + [10, 20, 30, 40] + [None, None, 0.5, 0.1]
    reward = [1.0] * 16
    truncated = pa.array([False] * 16)
    quality, rule = tagger.quality_levels(pa.array(caps), pa.array(rounds), pa.array(reward),
                                          pa.array(rm, pa.float64()), truncated)
    q = quality.to_pylist()
    # math round 1: 75th percentile of 1..8 is 6.25 -> 7 and 8; code: 32.5 -> 40; math round 2: its own two scores.
    assert q[:8] == ["medium"] * 6 + ["high"] * 2
    assert q[8:12] == ["medium"] * 3 + ["high"]
    assert q[12:] == ["high", "high", "high", "medium"]  # no RM score: the verifier fallback; 0.5 tops 0.1
    assert rule.to_pylist() == ["rm_quartile"] * 12 + ["verifier"] * 2 + ["rm_quartile"] * 2


def test_failed_or_truncated_replies_are_low_quality():
    quality, _ = tagger.quality_levels(pa.array(["math"] * 4), pa.array([1] * 4), pa.array([1.0, 0.0, 1.0, None]),
                                       pa.array([None, None, 9.0, None], pa.float64()),
                                       pa.array([False, False, True, False]))
    assert quality.to_pylist() == ["high", "low", "low", "low"]


def test_truncation_from_finish_reason_else_an_open_code_fence():
    reply = pa.array(["```python\ndef f(x):\n    return", "```python\ndef f(x):\n    return x\n```", "done", "done"])
    finish = pa.array([None, None, "length", "stop"])
    assert tagger.truncated_replies(reply, finish).to_pylist() == [True, False, True, False]


def test_sample_info_joins_rm_scores_by_round_prompt_and_completion():
    sft = sft_rows([{"id": "p/round1", "prompt": "Q", "reply": "A2", "round": 1},
                    {"id": "p/round2", "prompt": "Q", "reply": "A1", "round": 2},
                    {"id": "q/round2", "prompt": "R", "reply": "unseen", "round": 2}])

    def scored(rows):
        return pa.table({"prompt_id": [r[0] for r in rows], "completion": [r[1] for r in rows],
                         "rm_score": [r[2] for r in rows], "finish_reason": ["stop"] * len(rows)})

    info = tagger.sample_info(sft, {1: scored([("p", "A1", 0.1), ("p", "A2", 0.2)]),
                                    2: scored([("p", "A2", 0.3), ("p", "A1", 0.4)])})
    assert info.to_pylist() == [{"id": "p/round1", "rm_score": 0.2, "finish_reason": "stop"},
                                {"id": "p/round2", "rm_score": 0.4, "finish_reason": "stop"}]


# --------------------------------------------------------------------------- cleaning flags


def test_cleaning_flags_find_the_problematic_tones():
    replies = pa.array(["The answer is 4.",
                        "I'm sorry, but as an AI language model I cannot browse.",
                        "I apologize for the confusion. Great question!!",
                        "Done \N{GRINNING FACE} \N{SPARKLES}",
                        "Yes! Sure! Absolutely!",
                        "My apologies. As a large language model, I must say: wow!"])
    assert tagger.cleaning_flags(replies).to_pylist() == [
        [], ["apology", "as_an_ai"], ["apology", "exclamation"], ["emoji"], ["exclamation"], ["apology", "as_an_ai"]]


def test_tag_table_one_row_per_id_in_sft_order():
    t = sft_rows([{"id": "b/round1", "capability": "code", "prompt": "Write a Python function f(x) that returns x + 1.",
                   "reply": "```python\ndef f(x):\n    return x + 1\n```"},
                  {"id": "a/round1", "capability": "tools", "system": "Tools: get_weather(city)",
                   "prompt": "What is the weather in Lima?", "reply": "I'm sorry!! I can't."}])
    tags = tagger.tag(t, embed(["write a python function f(x) that returns x + 1.", "what is the weather in lima?"]),
                      DEFAULT_TOPICS)
    assert tags.schema.equals(tagger.TAGS)
    rows = tags.to_pylist()
    assert [r["id"] for r in rows] == ["b/round1", "a/round1"]
    assert [r["topic"] for r in rows] == ["code", "tools"]
    assert rows[1]["cleaning_flags"] == ["apology", "exclamation"] and rows[1]["quality_rule"] == "verifier"
    assert [r["quality"] for r in rows] == ["high", "high"] and not any(r["truncated"] for r in rows)
