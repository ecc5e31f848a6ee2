"""The tagger's LLM judge: answer parsing, the one retry, unknowns, and how judged values become tags.

The engine here is scripted (it answers from the filled-in template), which is what lets the retry and
too-long paths be checked exactly; tests/test_capabilities.py runs the judge on a real vLLM engine."""

from __future__ import annotations

import re
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from data_mix import judge as J
from data_mix import tagger
from data_mix.embed import embed
from data_mix.topics import DEFAULT_TOPICS
from posttrain.stages.generate import prompt_seed
from posttrain.stages.judge import judge_shard, merge_judged
from posttrain.recipe.config import JudgeConfig, RecipeError
from posttrain.recipe.load import load_recipe
from tests.test_config import TINY
from tests.test_tagger import sft_rows

SEED_OF = partial(prompt_seed, 0)  # the request seeds the judge stage gives a run of seed 0

FINES = {f for group in DEFAULT_TOPICS.values() for f in group}


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, want", [
    ('{"topic": "arithmetic"}', {"judge_fine_topic": "arithmetic"}),
    ('The request adds numbers, so: {"topic": "math/arithmetic"}.', {"judge_fine_topic": "arithmetic"}),
    ('{"topic": "algebra"} no wait {"topic": "arithmetic"}', {"judge_fine_topic": "arithmetic"}),  # the last wins
    ('{"topic": "arithmetic"} then {"topic": "cooking"}', {"judge_fine_topic": "arithmetic"}),  # ...if it is valid
    ('{"topic": "cooking"}', None),
    ('{"topic": 3}', None),
    ("arithmetic", None),
    ('{"topic": "arithmetic"', None),
])
def test_topic_answers(text, want):
    assert J.parse("topic", text, fines=FINES, scale=0) == want


@pytest.mark.parametrize("text, want", [
    ('{"intentions": ["add two numbers", "answer in words"], "difficulty": 2}',
     {"intentions": ["add two numbers", "answer in words"], "judge_difficulty": 2}),
    ('{"intentions": [" solve "], "difficulty": 3.0}', {"intentions": ["solve"], "judge_difficulty": 3}),
    ('{"intentions": [], "difficulty": 1}', None),
    ('{"intentions": ["solve"], "difficulty": 4}', None),
    ('{"intentions": ["solve"], "difficulty": true}', None),
    ('{"intentions": ["solve"], "difficulty": "2"}', None),
    ('{"intentions": "solve", "difficulty": 2}', None),
    ('{"intentions": ["solve", ""], "difficulty": 2}', None),
])
def test_complexity_answers(text, want):
    assert J.parse("complexity", text, fines=FINES, scale=0) == want


def test_quality_answers_use_the_templates_scale():
    assert J.parse("quality", '{"score": 3}', fines=FINES, scale=3) == {"judge_quality": 3, "judge_quality_max": 3}
    assert J.parse("quality", '{"score": 3}', fines=FINES, scale=2) is None  # code's 2-point scale
    assert J.parse("quality", '{"score": 0}', fines=FINES, scale=3) is None


def test_render_fills_placeholders_and_keeps_the_answer_format():
    text = J.render('Q: {prompt}\nA: {reply}\n{"score": <1, 2 or 3>} {unknown}', prompt="2+2? {x}", reply="4")
    assert text == 'Q: 2+2? {x}\nA: 4\n{"score": <1, 2 or 3>} {unknown}'
    for name, placeholders in J.PLACEHOLDERS.items():  # the shipped templates have what they need
        assert all(p in (J.PROMPTS / f"{name}.txt").read_text() for p in placeholders)
    assert (J.PROMPTS / "quality_code.txt").is_file()


# --------------------------------------------------------------------------- the judging loop


class ScriptedEngine:
    """Answers each request with `answer(filled-in template, attempt)`; attempt 0 is greedy, 1 the retry."""

    def __init__(self, tokenizer, answer, max_model_len: int = 4096):
        self.tokenizer, self.answer, self.max_model_len = tokenizer, answer, max_model_len
        self.requests: list[dict] = []

    def generate(self, requests):
        self.requests += requests
        out = []
        for r in requests:
            text = self.tokenizer.decode(r["prompt_token_ids"])
            attempt = 0 if r["temperature"] == 0 else 1
            out.append({"num_prompt_tokens": len(r["prompt_token_ids"]),
                        "completions": [{"text": self.answer(text, attempt), "num_tokens": 1, "logprob": 0.0,
                                         "finish_reason": "stop"}]})
        return out


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return AutoTokenizer.from_pretrained(tiny_base)


ROWS = [
    {"id": "p1/r1", "prompt": "What is 2 plus 3?", "reply": "5", "capability": "math"},
    {"id": "p2/r1", "prompt": "Write a Python function add(a, b).", "reply": "def add(a, b): return a + b",
     "capability": "code"},
    {"id": "p3/r1", "prompt": "Set a timer for 10 minutes.", "reply": "ok", "capability": "tools"},
]


def scripted(text: str, attempt: int) -> str:
    """p1 answers well at once; p2 (the code row) only when asked again; p3 never."""
    template, request = text.split("Request:")  # the topic list mentions timers and Python too
    if "timer" in request:
        return "I think it is about timers."
    code = "Python" in request
    if code and attempt == 0:
        return '{"topic": "not a topic", "difficulty": 9, "score": 7}'
    if "Topics (name: description)" in template:
        return '{"topic": "write_function"}' if code else 'Sure. {"topic": "arithmetic"}'
    if "intention" in template:
        return ('{"intentions": ["add", "explain"], "difficulty": 2}' if code
                else '{"intentions": ["add"], "difficulty": 1}')
    assert ("2-point scale" if code else "3-point scale") in template  # code has its own template
    return '{"score": 2}'


def test_judge_retries_once_then_records_unknown(tokenizer):
    sft = sft_rows(ROWS)
    engine = ScriptedEngine(tokenizer, scripted)
    judged, counts = J.judge(sft, JudgeConfig(model="policy"), DEFAULT_TOPICS, engine, tokenizer, SEED_OF)
    assert counts == {j: {"asked": 3, "retried": 2, "too_long": 0, "unknown": 1} for j in J.COLUMNS}
    rows = {r["id"]: r for r in judged.to_pylist()}
    assert rows["p1/r1"] == {"id": "p1/r1", "judge_fine_topic": "arithmetic", "intentions": ["add"],
                             "judge_difficulty": 1, "judge_quality": 2, "judge_quality_max": 3, "judge_unknown": []}
    assert rows["p2/r1"]["judge_fine_topic"] == "write_function" and rows["p2/r1"]["judge_quality_max"] == 2
    assert rows["p3/r1"] == {"id": "p3/r1", "judge_fine_topic": None, "intentions": None, "judge_difficulty": None,
                             "judge_quality": None, "judge_quality_max": None,
                             "judge_unknown": ["topic", "complexity", "quality"]}
    # 3 rows x 3 judgments, plus one retry each for the 2 failed rows; retries sample with new seeds
    assert len(engine.requests) == 3 * 3 + 3 * 2
    first, retry = engine.requests[0], engine.requests[3]
    assert first["temperature"] == 0 and retry["temperature"] == 0.7 and first["seed"] != retry["seed"]
    again, _ = J.judge(sft, JudgeConfig(model="policy"), DEFAULT_TOPICS, ScriptedEngine(tokenizer, scripted),
                       tokenizer, SEED_OF)
    assert again.equals(judged)  # same seed, same table


def test_prompts_too_long_for_the_judge_are_unknown_without_asking(tokenizer):
    long = {"id": "long/r1", "prompt": "Count the apples. " * 500, "reply": "5"}
    engine = ScriptedEngine(tokenizer, scripted, max_model_len=1500)
    judged, counts = J.judge(sft_rows([ROWS[0], long]), JudgeConfig(model="m", judgments=["complexity"]),
                             DEFAULT_TOPICS, engine, tokenizer, SEED_OF)
    assert counts == {"complexity": {"asked": 2, "retried": 0, "too_long": 1, "unknown": 1}}
    assert judged.column_names == ["id", "intentions", "judge_difficulty", "judge_unknown"]
    assert judged.to_pylist()[1]["judge_unknown"] == ["complexity"] and len(engine.requests) == 1


def test_a_recipe_prompt_dir_replaces_the_templates(tmp_path, tokenizer):
    (tmp_path / "topic.txt").write_text("CUSTOM {topics} | {prompt} -> json")
    engine = ScriptedEngine(tokenizer, lambda text, attempt: '{"topic": "geometry"}' if "CUSTOM" in text else "")
    judged, _ = J.judge(sft_rows(ROWS[:1]), JudgeConfig(model="m", judgments=["topic"], prompt_dir=str(tmp_path)),
                        DEFAULT_TOPICS, engine, tokenizer, SEED_OF)
    assert judged["judge_fine_topic"].to_pylist() == ["geometry"]


# --------------------------------------------------------------------------- judged values become tags


def test_judged_values_replace_the_rules_and_unknowns_stay_unknown(tokenizer):
    sft = sft_rows(ROWS)
    judged, _ = J.judge(sft, JudgeConfig(model="policy"), DEFAULT_TOPICS, ScriptedEngine(tokenizer, scripted),
                        tokenizer, SEED_OF)
    reordered = judged.take([2, 0, 1])  # joined by id, not by position
    tags = tagger.tag(sft, embed([r["prompt"] for r in ROWS]), DEFAULT_TOPICS, judged=reordered).to_pylist()
    assert [t["topic"] for t in tags] == ["math", "code", tagger.UNKNOWN]
    assert [t["fine_topic"] for t in tags] == ["arithmetic", "write_function", tagger.UNKNOWN]
    assert [t["topic_similarity"] for t in tags] == [None] * 3
    assert [t["complexity"] for t in tags] == [1, 2, None] and [t["difficulty"] for t in tags] == [1, 2, None]
    # p1: judge 2 of 3, no RM -> medium by the judge; p2: the top of code's 2-point scale -> high;
    # p3: no judge answer and no RM -> the verifier decides (passed: high)
    assert [(t["quality"], t["quality_rule"]) for t in tags] == [("medium", "judge"), ("high", "judge"),
                                                                ("high", "verifier")]
    assert tags[2]["judge_unknown"] == ["topic", "complexity", "quality"]
    plain = tagger.tag(sft, embed([r["prompt"] for r in ROWS]), DEFAULT_TOPICS).to_pylist()
    assert plain[0]["topic"] == "math" and plain[0]["topic_similarity"] > 0 and plain[0]["judge_unknown"] == []


def test_the_judge_lifts_quality_above_the_rm_quartile_but_never_a_failed_reply():
    caps, rounds = pa.array(["math"] * 4), pa.array([1] * 4)
    reward = pa.array([1.0, 1.0, 1.0, 0.0])
    rm = pa.array([0.0, 1.0, 9.0, 9.0], pa.float64())  # row 2 is the top quartile
    judge_q, judge_max = pa.array([3, 2, None, 3], pa.int32()), pa.array([3, 3, None, 3], pa.int32())
    quality, rule = tagger.quality_levels(caps, rounds, reward, rm, pa.array([False] * 4), 1.0, judge_q, judge_max)
    assert quality.to_pylist() == ["high", "medium", "high", "low"]
    assert rule.to_pylist() == ["judge", "rm_quartile", "rm_quartile", "rm_quartile"]


def test_the_mix_counts_the_judge_and_weights_unknown_difficulty_as_middle(tmp_path, tokenizer):
    from posttrain.stages.mix import mix
    from posttrain.run import schema

    sft = sft_rows(ROWS)
    heldout = schema.from_records([{"id": "h", "capability": "math", "messages": [
        {"role": "user", "content": "An unrelated held-out question about trains."}]}], "prompts")
    pairs = schema.from_records([], "pairs")
    cfg = load_recipe(TINY, ["mix.judge.model=policy", "mix.targets={math: 0.4, code: 0.3, tools: 0.3}",
                             "mix.difficulty_weight=1", "mix.dedup_near=false"]).mix
    engine = ScriptedEngine(tokenizer, scripted)
    judged, counts = J.judge(sft, cfg.judge, cfg.topics, engine, tokenizer, SEED_OF)
    results = mix(tmp_path, [sft], pairs, heldout, cfg, 0, judged=judged, judge_counts=counts)
    assert results["judge"]["topic"] == {"asked": 3, "retried": 2, "too_long": 0, "unknown": 1}
    assert results["composition"]["before"]["topic"] == {"code": 1, "math": 1, tagger.UNKNOWN: 1}
    assert results["composition"]["before"]["difficulty"] == {"1": 1, "2": 1, tagger.UNKNOWN: 1}


def test_rebalance_draws_unknown_difficulty_like_the_middle_level():
    """difficulty_weight 2: weights 1, 4 and 9 for difficulty 1, 2 and 3; an unknown (null) difficulty must
    weigh as MIDDLE_DIFFICULTY (2), not as 0 (never drawn) nor as anything else."""
    from data_mix.rebalance import rebalance
    from tests.test_data_mix import sft_table

    assert tagger.MIDDLE_DIFFICULTY == 2
    table = sft_table([(f"m{i:03d}/round1", "math", 1, f"q{i}") for i in range(99)])
    levels = [[1, None, 3][i % 3] for i in range(99)]  # 33 rows of each, in id order
    level = dict(zip(table["id"].to_pylist(), levels))

    def tags(unknown):
        return pa.table({"id": list(level), "difficulty": pa.array([unknown if v is None else v for v in levels],
                                                                   pa.int32())})

    drawn = {1: 0, None: 0, 3: 0}
    for seed in range(20):  # one draw of 45 is noisy (at seed 0, 20 unknown vs 18 hard); 20 draws are not
        out = rebalance(table, {"math": 1.0}, 1, 45, seed, tags=tags(None), difficulty_weight=2.0)
        assert out.num_rows == 45
        for i in out["id"].to_pylist():
            drawn[level[i]] += 1
        # exactly the draw that difficulty 2 in place of the unknowns gives
        assert out.equals(rebalance(table, {"math": 1.0}, 1, 45, seed, tags=tags(2), difficulty_weight=2.0))
    assert drawn[1] < drawn[None] < drawn[3], drawn


# --------------------------------------------------------------------------- recipe checks


@pytest.mark.parametrize("override, key", [
    ("mix.judge.model=/no/such/model", "mix.judge.model"),
    ("mix.judge.judgments=[]", "mix.judge.judgments"),
    ("mix.judge.judgments=[topic, topic]", "mix.judge.judgments"),
    ("mix.judge.judgments=[style]", "mix.judge.judgments"),
    ("mix.judge.max_tokens=0", "mix.judge.max_tokens"),
    ("mix.judge.retry_temperature=0", "mix.judge.retry_temperature"),
    ("mix.judge.prompt_dir=/no/such/dir", "mix.judge.prompt_dir"),
    ("mix.difficulty_judge=llm", "mix.difficulty_judge"),  # the old key is gone, and says so
])
def test_bad_judge_keys_are_named(override, key):
    with pytest.raises(RecipeError, match=re.escape(key)):
        load_recipe(TINY, ["mix.judge.model=policy", override])


def test_a_template_without_its_placeholders_is_named(tmp_path):
    (tmp_path / "topic.txt").write_text("Which topic? {prompt}")  # no {topics}
    with pytest.raises(RecipeError, match=r"mix\.judge\.prompt_dir.*topic\.txt lacks the \{topics\}"):
        load_recipe(TINY, ["mix.judge.model=policy", "mix.judge.judgments=[topic]",
                           f"mix.judge.prompt_dir={tmp_path}"])


def test_the_sharded_judge_stage_merges_to_the_single_process_table(tmp_path, tokenizer):
    """Two ranks judge their shards (by id) into their own folders; the merge equals one process judging all,
    row for row in the sft order, with the counts added up (a rank with no rows adds zeros)."""
    from posttrain.run.dist import World, shard

    sft = sft_rows(ROWS)
    cfg = load_recipe(TINY, ["mix.judge.model=policy"]).mix
    whole = tmp_path / "whole"
    whole.mkdir()
    single = judge_shard(whole, sft, cfg.judge, cfg.topics, ScriptedEngine(tokenizer, scripted), tokenizer, 0)
    dirs = []
    results = []
    for rank in range(2):
        d = tmp_path / f"rank{rank}"
        d.mkdir()
        rows = shard(sft, World(rank=rank, size=2, local_rank=rank, local_size=2))
        results.append(judge_shard(d, rows, cfg.judge, cfg.topics, ScriptedEngine(tokenizer, scripted), tokenizer, 0))
        dirs.append(d)
    assert {r["judged"] for r in results} != {0} and sum(r["judged"] for r in results) == sft.num_rows
    empty = tmp_path / "no_engine"
    empty.mkdir()
    results.append(judge_shard(empty, sft.slice(0, 0), cfg.judge, cfg.topics, None, tokenizer, 0))
    merged = merge_judged(tmp_path, [*dirs, empty], results, sft["id"].to_pylist())
    assert merged == single
    assert pq.read_table(tmp_path / "judged.parquet").equals(pq.read_table(whole / "judged.parquet"))


def test_the_judge_command_needs_a_judge_and_a_round_of_the_recipe(capsys):
    from posttrain.cli import main

    assert main(["judge", "--recipe", str(TINY)]) == 2
    assert "mix.judge.model is not set" in capsys.readouterr().err
    assert main(["judge", "--recipe", str(TINY), "mix.judge.model=policy", "--round", "9"]) == 2
    assert "--round 9 is not one of the recipe's rounds (1..2)" in capsys.readouterr().err
