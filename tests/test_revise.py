"""Revise stage (execution feedback): which prompts get a second try, what the policy is shown, and how the
revisions join the scored table and selection. The engine is a stand-in that answers by prompt; the code
verifier runs the revisions in the real sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.models.chat_turns import PROBE, Chat
from posttrain.run import schema
from posttrain.recipe.config import GenerateConfig, ReviseConfig, ScoreConfig, SelectConfig
from posttrain.stages.revise import failed_first_tries, revise
from posttrain.stages.selection import select

GOOD, BAD = "```python\ndef f():\n    return 1\n```", "```python\ndef f():\n    return 2\n```"
PROMPTS = schema.from_records([
    {"id": "a", "capability": "code", "messages": [{"role": "user", "content": "Write f returning 1."}],
     "tests": "assert f() == 1", "entry_point": "f"},
    {"id": "b", "capability": "code", "messages": [{"role": "user", "content": "Write f returning 1, again."}],
     "tests": "assert f() == 1", "entry_point": "f"},
    {"id": "m", "capability": "math", "messages": [{"role": "user", "content": "1+1?"}], "answer": "2"},
], "prompts")


def scored(rows: list[tuple[str, int, str, float, str]]):
    return schema.from_records([
        {"prompt_id": p, "sample_index": i, "completion": c, "num_prompt_tokens": 3, "num_completion_tokens": 5,
         "capability": "math" if p == "m" else "code", "verifier": "math" if p == "m" else "code", "reward": r,
         "reason": why} for p, i, c, r, why in rows], "scored")


FIRST_TRY = scored([
    ("a", 0, BAD, 0.0, "AssertionError: assert f() == 1"), ("a", 1, "no code", 0.0, "no code block"),
    ("b", 0, BAD, 0.0, "AssertionError"), ("b", 1, GOOD, 1.0, "passed"),  # b passed once: not revised
    ("m", 0, "The answer is 3.", 0.0, "wrong answer"),  # math is not in revise.capabilities
])


class Tokenizer:
    def __init__(self):
        self.rendered: list[list[dict]] = []

    def apply_chat_template(self, messages, **_):
        self.rendered.append(messages)
        return {"input_ids": list(range(10))}


class Engine:
    """Answers a request with the completions queued for it, in order."""

    max_model_len = None

    def __init__(self, answers: list[str]):
        self.answers, self.requests = answers, []

    def generate(self, requests, progress=None):
        self.requests += requests
        return [{"num_prompt_tokens": 10, "completions": [
            {"text": self.answers.pop(0), "num_tokens": 7, "logprob": -1.0, "finish_reason": "stop"}
            for _ in range(r["n"])]} for r in requests]


def test_only_prompts_of_the_capabilities_with_no_passing_sample_are_revised_from_their_best_failure():
    failed = failed_first_tries(scored([("a", 0, "x", 0.0, "e0"), ("a", 1, "y", 0.5, "half the tests"),
                                        ("a", 2, "z", 0.5, "later"), ("b", 0, GOOD, 1.0, "passed"),
                                        ("n", 0, "?", None, "not applicable"), ("m", 0, "3", 0.0, "wrong")]),
                                ["code"], pass_threshold=1.0)
    assert {pid: (r["sample_index"], r["reason"]) for pid, r in failed.items()} == {"a": (1, "half the tests")}


def test_revisions_see_the_failure_and_join_the_table_as_more_samples(tmp_path):
    engine, tokenizer = Engine([GOOD, BAD]), Tokenizer()
    cfg = ReviseConfig(enabled=True, samples=2)
    results = revise(tmp_path, engine, FIRST_TRY, PROMPTS, Chat(tokenizer), cfg, GenerateConfig(num_samples=2),
                     ScoreConfig(), pass_threshold=1.0, seed=7)
    assert results == {"scored": 7, "failed_prompts": 1, "revisions": 2, "rescued_prompts": 1, "too_long": 0}
    # the conversation the policy continues: the prompt, its best failing answer, the verifier's reason (what
    # else was rendered is chat_turns' probe of the template)
    assert [m for m in tokenizer.rendered if not m[0]["content"].startswith(PROBE[0]["content"])] == [[
        {"role": "user", "content": "Write f returning 1."}, {"role": "assistant", "content": BAD},
        {"role": "user", "content": "Running your code against the tests failed: AssertionError: assert f() == 1\n"
                                    "Fix the code and reply with the complete corrected solution."}]]
    assert engine.requests[0]["n"] == 2 and engine.requests[0]["seed"] != 0
    table = schema.read(tmp_path / "scored.parquet", "scored")
    new = table.slice(FIRST_TRY.num_rows).to_pylist()
    assert [(r["prompt_id"], r["sample_index"], r["reward"]) for r in new] == [("a", 2, 1.0), ("a", 3, 0.0)]
    assert [r["logprob"] for r in new] == [None, None]  # not a logprob given the prompt alone
    assert table.slice(0, FIRST_TRY.num_rows).equals(FIRST_TRY)  # the first tries are kept as they were
    # selection: the revision is a's SFT answer to the original prompt, and chosen over a failing first try
    sft, pairs = select(table.to_pylist(), {p["id"]: p for p in PROMPTS.to_pylist()}, SelectConfig(), 0, 1)
    a_sft = next(s for s in sft if s["prompt_id"] == "a")
    assert a_sft["messages"][-1]["content"] == GOOD and len(a_sft["messages"]) == 2
    a_pair = next(p for p in pairs if p["prompt_id"] == "a")
    assert a_pair["chosen"][0]["content"] == GOOD and a_pair["rejected"][0]["content"] != GOOD


def test_nothing_failed_means_no_engine_call(tmp_path):
    engine = Engine([])
    passing = scored([("b", 0, GOOD, 1.0, "passed")])
    results = revise(tmp_path, engine, passing, PROMPTS, Chat(Tokenizer()), ReviseConfig(enabled=True),
                     GenerateConfig(), ScoreConfig(), pass_threshold=1.0, seed=0)
    assert engine.requests == [] and results["revisions"] == 0 and results["scored"] == 1


@pytest.mark.parametrize("override, key", [("revise.samples=0", "revise.samples"),
                                           ("revise.capabilities=[poetry]", "revise.capabilities"),
                                           ("revise.feedback='{why}'", "revise.feedback")])
def test_bad_revise_settings_name_their_key(override, key):
    from posttrain.recipe.config import RecipeError
    from posttrain.recipe.load import load_recipe

    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml", [override])


def test_the_revise_command_needs_revise_on(capsys):
    from posttrain.cli import main

    assert main(["revise", "--recipe", str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml")]) == 2
    assert "revise.enabled is false" in capsys.readouterr().err
