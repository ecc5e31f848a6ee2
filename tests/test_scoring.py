"""Score stage: which verifier scores each sample (a prompt's own, else its capability's, else none), row
order, unknown prompt ids, and the pass rate, with expectations worked out by hand. No code sandbox runs."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from posttrain.run import schema
from posttrain.recipe.config import ScoreConfig
from posttrain.stages.scoring import score_results, score_samples

PROMPTS = schema.from_records([
    {"id": "m", "capability": "math", "messages": [{"role": "user", "content": "1+1?"}], "answer": "2"},
    # a math prompt scored by its own verifier: number_words wants the bare word, math finds no number in it
    {"id": "w", "capability": "math", "messages": [{"role": "user", "content": "Deux plus deux ?"}],
     "answer": "quatre", "language": "fr", "verifier": "number_words"},
    {"id": "c", "capability": "code", "messages": [{"role": "user", "content": "Write f."}],
     "tests": "assert f() == 1", "entry_point": "f"},
], "prompts")


def samples(*rows: tuple[str, int, str]):
    return schema.from_records([{"prompt_id": p, "sample_index": i, "completion": text, "num_prompt_tokens": 3,
                                 "num_completion_tokens": 5} for p, i, text in rows], "samples")


def outcome(table) -> list[tuple]:
    return [(r["prompt_id"], r["sample_index"], r["capability"], r["verifier"], r["reward"], r["reason"])
            for r in table.to_pylist()]


def test_a_prompts_own_verifier_overrides_its_capabilitys():
    got = score_samples(samples(("w", 0, "quatre"), ("m", 0, "The answer is 2."), ("w", 1, "cinq")),
                        PROMPTS, ScoreConfig(verifiers={"math": "math"}))
    assert outcome(got) == [("w", 0, "math", "number_words", 1.0, "correct"),
                            ("m", 0, "math", "math", 1.0, "correct"),
                            ("w", 1, "math", "number_words", 0.0, "wrong answer")]


def test_a_capability_without_a_verifier_is_not_applicable_and_keeps_row_order():
    # code has no verifier here: no sandbox runs, and the rows stay where they were among the math ones
    got = score_samples(samples(("c", 0, "def f(): return 1"), ("m", 0, "The answer is 3."), ("c", 1, "pass")),
                        PROMPTS, ScoreConfig(verifiers={"math": "math"}))
    assert outcome(got) == [("c", 0, "code", "none", None, "no verifier configured"),
                            ("m", 0, "math", "math", 0.0, "wrong answer: got 3, expected 2"),
                            ("c", 1, "code", "none", None, "no verifier configured")]


def test_the_verifiers_argument_replaces_the_recipes():
    # an eval benchmark passes its own mapping: here math has none, so even a right answer is not scored
    got = score_samples(samples(("m", 0, "The answer is 2.")), PROMPTS, ScoreConfig(), verifiers={})
    assert outcome(got) == [("m", 0, "math", "none", None, "no verifier configured")]


def test_samples_of_unknown_prompts_are_refused():
    with pytest.raises(KeyError, match=r"samples reference 2 unknown prompt id\(s\), e\.g\. \['x', 'y'\]"):
        score_samples(samples(("m", 0, "2"), ("y", 0, "2"), ("x", 0, "2"), ("x", 1, "2")), PROMPTS, ScoreConfig())


def scored(rewards: list[float | None]):
    return schema.from_records([{"prompt_id": "m", "sample_index": i, "completion": "", "num_prompt_tokens": 1,
                                 "num_completion_tokens": 1, "capability": "math", "verifier": "math", "reward": r}
                                for i, r in enumerate(rewards)], "scored")


def test_pass_rate_counts_passes_among_the_scored_samples_only(tmp_path):
    # 6 scored (the None is not applicable), 2 of them >= 1.0 (0.5 is partial credit, not a pass): 2/6
    results = score_results(scored([1.0, 0.0, None, 1.0, 0.5, 0.0, 0.0]), tmp_path)
    assert results == {"scored": 7, "pass_rate": 0.3333, "pass_threshold": 1.0}
    assert pq.read_table(tmp_path / "scored.parquet").column("reward").to_pylist() == [1.0, 0.0, None, 1.0, 0.5,
                                                                                       0.0, 0.0]


def test_pass_rate_with_nothing_scored_is_zero(tmp_path):
    assert score_results(scored([None, None]), tmp_path) == {"scored": 2, "pass_rate": 0.0, "pass_threshold": 1.0}


def test_pass_rate_counts_passes_at_the_recipes_threshold(tmp_path):
    # select.pass_threshold 0.5: partial credit of 0.5 now passes (3 of 6), as rejection sampling counts it
    assert score_results(scored([1.0, 0.0, None, 1.0, 0.5, 0.0, 0.0]), tmp_path, 0.5)["pass_rate"] == 0.5


def test_check_steps_fails_a_right_answer_reached_through_a_false_equation():
    rows = samples(("m", 0, "1 + 1 = 3. The answer is 2."), ("m", 1, "1 + 1 = 2. The answer is 2."),
                   ("m", 2, "1 + 1 = 3. The answer is 3."))
    got = score_samples(rows, PROMPTS, ScoreConfig(verifiers={"math": "math"}, check_steps=["math"]))
    assert outcome(got) == [("m", 0, "math", "math", 0.0, "right answer, wrong step: 1 + 1 = 3"),
                            ("m", 1, "math", "math", 1.0, "correct"),
                            ("m", 2, "math", "math", 0.0, "wrong answer: got 3, expected 2")]
    # off by default, and for capabilities not listed
    plain = score_samples(rows, PROMPTS, ScoreConfig(verifiers={"math": "math"}, check_steps=["code"]))
    assert [r["reward"] for r in plain.to_pylist()] == [1.0, 1.0, 0.0]


def test_the_score_stage_counts_right_answers_failed_for_a_wrong_step(tmp_path):
    rows = samples(("m", 0, "1 + 1 = 3. The answer is 2."), ("m", 1, "1 + 1 = 2. The answer is 2."))
    got = score_samples(rows, PROMPTS, ScoreConfig(verifiers={"math": "math"}, check_steps=["math"]))
    assert score_results(got, tmp_path) == {"scored": 2, "pass_rate": 0.5, "pass_threshold": 1.0, "wrong_steps": 1}
