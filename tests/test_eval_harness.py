"""The eval harness without vLLM: pass@k by hand, and every set's path through a scripted engine.

A scripted engine returns chosen completions in request order, so each test knows the right score:
reference replies score 100%, wrong ones 0%, prompts too long for the context count as failures.
"""

from __future__ import annotations

import json

import pytest

from eval import harness, metrics
from posttrain import schema
from posttrain.config import EvalConfig, ScoreConfig
from posttrain.tiny import world


class ScriptedEngine:
    """Stands in for posttrain.engine.Engine: completion texts per request, in request order."""

    def __init__(self, texts_per_request: list[list[str]], max_model_len: int | None = None):
        self.texts, self.max_model_len, self.requests = texts_per_request, max_model_len, []

    def generate(self, requests: list[dict]) -> list[dict]:
        self.requests += requests
        out = []
        for r, texts in zip(requests, self.texts[: len(requests)], strict=True):
            out.append({"num_prompt_tokens": len(r["prompt_token_ids"]), "completions": [
                {"text": t, "num_tokens": 3, "logprob": -1.0, "finish_reason": "stop"} for t in texts[: r["n"]]]})
        self.texts = self.texts[len(requests):]
        return out


class CharTokenizer:
    """One token per character of the rendered prompt: enough for requests_for's length check."""

    def apply_chat_template(self, messages, **_):
        return {"input_ids": list(range(sum(len(m["content"]) for m in messages)))}


# --------------------------------------------------------------------------- pass@k


def test_pass_at_k_by_hand():
    # n=5 samples, c=2 correct: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert metrics.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert metrics.pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert metrics.pass_at_k(5, 0, 3) == 0.0
    assert metrics.pass_at_k(5, 4, 2) == 1.0  # only one failure: any 2 samples include a pass
    with pytest.raises(ValueError):
        metrics.pass_at_k(3, 1, 4)


def test_pass_rates_skip_not_applicable_samples():
    rows = [{"prompt_id": "a", "reward": 1.0}, {"prompt_id": "a", "reward": 0.0},
            {"prompt_id": "b", "reward": 0.0}, {"prompt_id": "b", "reward": None},
            {"prompt_id": "c", "reward": None}]
    # a: n=2 c=1 -> pass@1 0.5, pass@2 1.0; b: n=1 c=0 -> pass@1 0 (too few samples for pass@2); c: no score
    assert metrics.pass_rates(rows, [1, 2]) == {"pass@1": 0.25, "pass@2": 1.0}


def test_accuracy_by_capability_is_a_mean_over_capabilities():
    rows = [{"prompt_id": f"m{i}", "capability": "math", "reward": float(i < 3)} for i in range(4)]
    rows += [{"prompt_id": "c0", "capability": "code", "reward": 0.0}]
    assert metrics.accuracy_by_capability(rows) == {"code": 0.0, "math": 0.75, "overall": 0.375}


# --------------------------------------------------------------------------- sets through a scripted engine


def tiny_heldout(n: int = 3):
    drawn = [pair for cap in world.FAMILIES for pair in world.draw(cap, "heldout", n, 0)]
    return schema.from_records([rec for rec, _ in drawn], "prompts"), [reply for _, reply in drawn]


def test_heldout_reference_replies_score_100_and_wrong_ones_0(tmp_path):
    prompts, replies = tiny_heldout()
    cfg, score = EvalConfig(max_tokens=8), ScoreConfig(num_workers=2)
    sets = harness.eval_sets(["heldout"], prompts, None, score)
    right = harness.evaluate(tmp_path, ScriptedEngine([[r] for r in replies]), CharTokenizer(), sets, cfg, score, 0)
    assert right["scores"]["heldout"]["accuracy"] == {"code": 1.0, "math": 1.0, "multilingual": 1.0, "tools": 1.0,
                                                      "overall": 1.0}
    assert json.loads((tmp_path / "eval.json").read_text()) == right["scores"]
    evals = schema.read(tmp_path / "evals.parquet", "evals")
    assert evals.num_rows == prompts.num_rows and set(evals["benchmark"].to_pylist()) == {"heldout"}
    wrong = harness.evaluate(tmp_path, ScriptedEngine([["no idea"]] * len(replies)), CharTokenizer(), sets, cfg,
                             score, 0)
    assert wrong["scores"]["heldout"]["pass@1"] == 0.0


def test_prompts_too_long_for_the_context_are_failures_not_skips(tmp_path):
    prompts, replies = tiny_heldout(2)
    lengths = [len(m[-1]["content"]) + (len(m[0]["content"]) if len(m) > 1 else 0)
               for m in prompts["messages"].to_pylist()]
    limit = sorted(lengths)[len(lengths) // 2] + 8  # about half the prompts fit with max_tokens=8
    fits = [n + 8 <= limit for n in lengths]
    cfg, score = EvalConfig(max_tokens=8), ScoreConfig(num_workers=2)
    engine = ScriptedEngine([[r] for r, ok in zip(replies, fits) if ok], max_model_len=limit)
    result = harness.evaluate(tmp_path, engine, CharTokenizer(), harness.eval_sets(["heldout"], prompts, None, score),
                              cfg, score, 0)["scores"]["heldout"]
    assert result["too_long"] == fits.count(False) > 0
    assert result["pass@1"] == pytest.approx(fits.count(True) / len(fits), abs=1e-4)
    reasons = schema.read(tmp_path / "evals.parquet", "evals")["reason"].to_pylist()
    assert reasons.count(harness.TOO_LONG) == fits.count(False)


def test_pass_at_k_from_several_samples(tmp_path):
    prompts, replies = tiny_heldout(1)
    cfg = EvalConfig(max_tokens=8, num_samples=4, temperature=1.0, pass_k=[1, 4])
    score = ScoreConfig(num_workers=2)
    # each item: 1 right of 4 -> pass@1 = 0.25, pass@4 = 1
    engine = ScriptedEngine([[r, "x", "y", "z"] for r in replies])
    result = harness.evaluate(tmp_path, engine, CharTokenizer(), harness.eval_sets(["heldout"], prompts, None, score),
                              cfg, score, 0)["scores"]["heldout"]
    assert (result["pass@1"], result["pass@4"]) == (0.25, 1.0)
    assert {r["n"] for r in engine.requests} == {4}
