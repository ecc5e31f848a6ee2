"""A verifier of the user's own, named by import reference in the recipe (reward/custom.py): it scores through the
same stage code as the built-in ones, a bad reference or result is a clear error, and its source is fingerprinted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from posttrain.run import schema
from posttrain.recipe.config import RecipeError, ScoreConfig
from posttrain.recipe.load import load_recipe
from posttrain.stages.scoring import score_samples
from reward import custom, unknown_verifier
from reward.verdict import Verdict

ROOT = Path(__file__).resolve().parents[1]
MODULE = "posttrain_test_rewards"
SOURCE = '''
def contains_answer(completions, answer, prompts, **kwargs):
    """TRL-style: a float per completion; None where the prompt has no answer. Checks it got the prompts."""
    assert all(p[-1]["role"] == "user" for p in prompts) and kwargs["timeout_s"] > 0
    return [None if a is None else float(a in c) for c, a in zip(completions, answer)]

def with_reasons(completions, **kwargs):
    return [(len(c) / 10, f"{len(c)} characters") for c in completions]

class Judge:
    @staticmethod
    def score(completions, **kwargs):
        return [0.5] * len(completions)

def too_few(completions, **kwargs):
    return [1.0]

def words(completions, **kwargs):
    return ["good"] * len(completions)

NOT_A_FUNCTION = 3
'''
PROMPTS = [{"id": "m1", "capability": "math", "messages": [{"role": "user", "content": "2 + 3?"}], "answer": "5"},
           {"id": "m2", "capability": "math", "messages": [{"role": "user", "content": "hi"}]}]


@pytest.fixture
def module(tmp_path, monkeypatch) -> Path:
    path = tmp_path / f"{MODULE}.py"
    path.write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    custom.load.cache_clear()
    sys.modules.pop(MODULE, None)
    yield path
    custom.load.cache_clear()
    sys.modules.pop(MODULE, None)


def scored(ref: str) -> list[tuple]:
    samples = schema.from_records([
        {"prompt_id": pid, "sample_index": i, "completion": text, "num_prompt_tokens": 3, "num_completion_tokens": 4}
        for pid, i, text in [("m1", 0, "It is 5."), ("m1", 1, "It is 6."), ("m2", 0, "hello")]], "samples")
    table = score_samples(samples, schema.from_records(PROMPTS, "prompts"), ScoreConfig(verifiers={"math": ref}))
    return [(r["prompt_id"], r["verifier"], r["reward"], r["reason"]) for r in table.to_pylist()]


def test_a_trl_style_function_scores_the_samples(module):
    ref = f"{MODULE}:contains_answer"
    assert scored(ref) == [("m1", ref, 1.0, f"{ref}: 1"), ("m1", ref, 0.0, f"{ref}: 0"),
                           ("m2", ref, None, f"not applicable ({ref})")]
    assert [r[2:] for r in scored(f"{MODULE}:with_reasons")] == [(0.8, "8 characters"), (0.8, "8 characters"),
                                                                 (0.5, "5 characters")]
    assert [r[2] for r in scored(f"{MODULE}:Judge.score")] == [0.5] * 3


def test_a_bad_result_names_the_verifier(module):
    with pytest.raises(custom.VerifierError, match=f"verifier {MODULE}:too_few returned 1 results for 3 completions"):
        scored(f"{MODULE}:too_few")
    with pytest.raises(custom.VerifierError, match="returned 'good': a reward is a number, None, or"):
        scored(f"{MODULE}:words")
    assert custom.scorer(f"{MODULE}:with_reasons")([]) == []
    nan = custom._verdict("r", float("nan"))  # kept as it is: selection counts and leaves out non-finite rewards
    assert math.isnan(nan.reward) and nan.reason == "r: nan"
    with pytest.raises(custom.VerifierError):
        custom._verdict("r", True)  # a bool is not a reward: a function that meant pass/fail says 1.0 / 0.0
    assert custom._verdict("r", 2) == Verdict(2.0, "r: 2")


@pytest.mark.parametrize("ref,message", [
    ("posttrain_no_such_module:score", "cannot import posttrain_no_such_module (ModuleNotFoundError"),
    (f"{MODULE}:missing", f"{MODULE} has no missing"),
    (f"{MODULE}:NOT_A_FUNCTION", "NOT_A_FUNCTION is a int, not a function"),
    (":score", "is not an import reference 'package.module:function'"),
])
def test_a_bad_reference_is_a_recipe_error_naming_the_key(module, ref, message):
    assert message in unknown_verifier(ref)
    with pytest.raises(RecipeError) as e:
        load_recipe(ROOT / "recipes" / "tiny.yaml", [f"score.verifiers.math={ref}"])
    assert "score.verifiers.math names" in str(e.value) and message in str(e.value)
    with pytest.raises(schema.SchemaError, match="prompts.jsonl:1: "):
        schema.check_prompt_record({**PROMPTS[0], "verifier": ref}, "prompts.jsonl:1")


def test_a_prompt_may_name_its_own_verifier_by_reference(module):
    ref = f"{MODULE}:with_reasons"
    assert schema.check_prompt_record({**PROMPTS[0], "verifier": ref}, "prompts.jsonl:1")["verifier"] == ref
    assert unknown_verifier("math") is None and "unknown verifier 'regex'" in unknown_verifier("regex")


def test_editing_the_verifier_changes_the_scoring_fingerprint(module):
    from posttrain.run.fingerprint import scoring

    recipe = load_recipe(ROOT / "recipes" / "tiny.yaml", [f"score.verifiers.math={MODULE}:contains_answer"])
    before = scoring(recipe)
    assert set(before["verifier_sources"]) == {f"{MODULE}:contains_answer"}
    module.write_text(SOURCE + "\n# edited\n")
    assert scoring(recipe)["verifier_sources"] != before["verifier_sources"]
    plain = load_recipe(ROOT / "recipes" / "tiny.yaml")
    assert "verifier_sources" not in scoring(plain)  # built-in verifiers: the fingerprint is as it was


def test_posttrain_score_runs_a_verifier_of_the_users(module, tmp_path):
    lines = [json.dumps({**PROMPTS[0], "completion": c}) for c in ("It is 5.", "It is 7.")]
    (tmp_path / "samples.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(module.parent), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "score", "--recipe", "recipes/tiny.yaml",
                           "--input", str(tmp_path / "samples.jsonl"), "--output", str(out),
                           f"output_dir={tmp_path / 'runs'}", "reward_model.enabled=false",
                           f"score.verifiers.math={MODULE}:contains_answer"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [r["reward"] for r in pq.read_table(out).to_pylist()] == [1.0, 0.0]
    out.unlink()
    proc = subprocess.run([*proc.args[:-1], f"score.verifiers.math={MODULE}:too_few"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and not out.exists()  # a bad result: the message, no traceback, nothing written
    assert proc.stderr.strip().splitlines()[-1] == (
        f"posttrain: verifier {MODULE}:too_few returned 1 results for 2 completions")
