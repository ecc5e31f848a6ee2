"""The verifiers against hand-written expectations, and the tiny world's reference replies (all pass)."""

from __future__ import annotations

import json
import time

import pytest

from posttrain.tiny import world
from reward import VERIFIERS, Verdict, code, math, multilingual, tools

META = ("answer", "tests", "entry_point", "tools", "expected_call", "language")

# --------------------------------------------------------------------------- interface


def test_registry_and_verdict_shape():
    assert set(VERIFIERS) == {"math", "code", "tools", "multilingual"}
    v = VERIFIERS["math"](["The answer is 4."], answer=["4"], prompt=["ignored"], timeout_s=1.0,
                          num_workers=1)
    assert v == [Verdict(1.0, "correct")] and v[0].reward == 1.0 and v[0].reason == "correct"


@pytest.mark.parametrize("capability", sorted(world.FAMILIES))
def test_reference_replies_pass(capability):
    """Every reference reply of the tiny world passes its own verifier (a batch of them at once)."""
    pairs = world.draw(capability, "train", 12, seed=0)
    records, replies = [r for r, _ in pairs], [reply for _, reply in pairs]
    columns = {k: [r.get(k) for r in records] for k in META}
    verdicts = VERIFIERS[capability](replies, **columns, num_workers=2)
    assert verdicts == [Verdict(1.0, "passed" if capability == "code" else "correct")] * len(replies)


@pytest.mark.parametrize("capability,field", [("math", "answer"), ("code", "tests"), ("tools", "tools"),
                                              ("tools", "expected_call"), ("multilingual", "language"),
                                              ("multilingual", "answer")])
def test_missing_metadata_is_not_applicable(capability, field):
    record, reply = world.draw(capability, "train", 1, seed=1)[0]
    columns = {k: [record.get(k)] for k in META}
    columns[field] = [None]
    assert VERIFIERS[capability]([reply], **columns) == [Verdict(None, f"not applicable: missing {field}")]


def test_absent_column_reads_as_none():
    assert math.score(["4"]) == [Verdict(None, "not applicable: missing answer")]


def test_column_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="answer"):
        math.score(["4", "5"], answer=["4"])


# --------------------------------------------------------------------------- math


@pytest.mark.parametrize("completion,answer,verdict", [
    ("7 - 3 = 4. The answer is 4.", "4", (1.0, "correct")),
    ("7 - 3 = 5. The answer is 5.", "4", (0.0, "wrong answer: got 5, expected 4")),
    ("So we get \\boxed{12}", "12", (1.0, "correct")),
    ("So we get \\boxed{\\frac{3}{4}}", "3/4", (1.0, "correct")),
    ("half of 1.5 is 0.75", "3/4", (1.0, "correct")),
    ("The answer is 4.0", "4", (1.0, "correct")),
    ("The answer is: -2.", "-2", (1.0, "correct")),
    ("The answer is 1,000 coins.", "1000", (1.0, "correct")),
    ("The answer is 4 apples, not 5.", "4", (1.0, "correct")),
    ("I think it is 9, then 3", "3", (1.0, "correct")),  # no statement, no box: the last number
    ("The answer is 3. Oops, 7 - 3 = 4.", "4", (0.0, "wrong answer: got 3, expected 4")),  # statement wins
    ("The answer is four.", "4", (0.0, "wrong answer: got four, expected 4")),
    ("I do not know.", "4", (0.0, "no answer found")),
    ("", "4", (0.0, "no answer found")),
])
def test_math(completion, answer, verdict):
    assert math.score([completion], answer=[answer]) == [Verdict(*verdict)]


# --------------------------------------------------------------------------- code

STEP = {"tests": "\n".join(f"assert step({x}) == {x - 3}" for x in (0, 1, 4, -3)), "entry_point": "step"}


def run_code(completion: str, **overrides) -> Verdict:
    columns = {k: [v] for k, v in {**STEP, **overrides}.items()}
    return code.score([completion], **columns)[0]


def test_code_reference_passes():
    assert run_code("```python\ndef step(x):\n    return x - 3\n```") == Verdict(1.0, "passed")


def test_code_unfenced_and_plain_fence():
    assert run_code("def step(x):\n    return x - 3\n") == Verdict(1.0, "passed")
    assert run_code("Here:\n```\ndef step(x):\n    return x - 3\n```\nDone.") == Verdict(1.0, "passed")


def test_code_first_fenced_block_only():
    text = "```python\ndef step(x):\n    return x - 3\n```\nand\n```python\ndef step(x):\n    return 0\n```"
    assert run_code(text) == Verdict(1.0, "passed")


def test_code_wrong_op_names_the_failing_assert():
    assert run_code("```python\ndef step(x):\n    return x + 3\n```") == \
        Verdict(0.0, "AssertionError: assert step(0) == -3")


def test_code_exception_type_and_message():
    assert run_code("def step(x):\n    return x / 0\n") == Verdict(0.0, "ZeroDivisionError: division by zero")


def test_code_syntax_error():
    assert run_code("```python\ndef step(x)\n    return x - 3\n```") == Verdict(0.0, "syntax error")


def test_code_missing_entry_point():
    assert run_code("def other(x):\n    return x - 3\n") == Verdict(0.0, "entry point step not defined")


def test_code_entry_point_optional():
    assert run_code("def step(x):\n    return x - 3\n", entry_point=None) == Verdict(1.0, "passed")


def test_code_cannot_exit_early_to_pass():
    for cheat in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "def step(x): return x - 3\nexit()"):
        assert run_code(cheat) == Verdict(0.0, "exited before the tests finished"), cheat


def test_code_infinite_loop_times_out_within_budget():
    start = time.monotonic()
    loop = "def step(x):\n    while True:\n        pass\n"
    assert code.score([loop], timeout_s=1.0, **{k: [v] for k, v in STEP.items()}) == [Verdict(0.0, "timeout")]
    assert time.monotonic() - start < 3.0


def test_code_killed_by_signal():
    suicide = "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)"
    assert run_code(suicide) == Verdict(0.0, "killed (signal 15)")


def test_code_batch_keeps_order():
    ok, bad = "def step(x):\n    return x - 3\n", "def step(x):\n    return x\n"
    verdicts = code.score([ok, bad, ok, "def step(x) return", ok], tests=[STEP["tests"]] * 5,
                          entry_point=["step"] * 5, num_workers=3)
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert verdicts[3].reason == "syntax error"


# --------------------------------------------------------------------------- tools

OFFERED = json.dumps([
    {"name": "play_song", "parameters": {"type": "object", "properties": {"title": {"type": "string"}},
                                         "required": ["title"]}},
    {"name": "set_timer", "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"},
                                                                         "label": {"type": "string"}},
                                         "required": ["minutes"]}},
])
SONG = json.dumps({"name": "play_song", "arguments": {"title": "Blue Sky"}})
TIMER = json.dumps({"name": "set_timer", "arguments": {"minutes": 3}})


@pytest.mark.parametrize("completion,expected,verdict", [
    ('{"name": "play_song", "parameters": {"title": "Blue Sky"}}', SONG, (1.0, "correct")),
    ('<|python_tag|>{"name": "play_song", "arguments": {"title": "Blue Sky"}}', SONG, (1.0, "correct")),
    ('{"parameters": {"title": "Blue Sky"}, "name": "play_song"}', SONG, (1.0, "correct")),  # key order
    ('{"name": "set_timer", "parameters": {"minutes": 3}}', SONG, (0.0, "wrong tool")),
    ('{"name": "play_song", "parameters": {"title": "Night Train"}}', SONG, (0.0, "wrong arguments")),
    ('{"name": "set_timer", "parameters": {"minutes": 3.0}}', TIMER, (1.0, "correct")),  # 3 == 3.0
    ('{"name": "set_timer", "parameters": {"minutes": "3"}}', TIMER,
     (0.0, "schema: '3' is not of type 'integer'")),  # "3" != 3
    # an optional argument the expected call leaves out
    ('{"name": "set_timer", "parameters": {"minutes": 3, "label": "tea"}}', TIMER, (1.0, "correct")),
    ('{"name": "set_timer", "parameters": {}}', TIMER, (0.0, "schema: 'minutes' is a required property")),
    ('{"name": "get_weather", "parameters": {"city": "Lima"}}', SONG, (0.0, "unknown tool get_weather")),
    ("I will play Blue Sky for you.", SONG, (0.0, "no tool call")),
    ('{"name": "play_song", "parameters": {"title": "Blue', SONG, (0.0, "no tool call")),
    ('{"song": "Blue Sky"}', SONG, (0.0, "no tool call")),
    ("}{ garbage {{", SONG, (0.0, "no tool call")),
])
def test_tools(completion, expected, verdict):
    assert tools.score([completion], tools=[OFFERED], expected_call=[expected]) == [Verdict(*verdict)]


def test_tools_type_aware_equality():
    assert tools.same_value(3, 3.0) and tools.same_value({"a": [1, "x"]}, {"a": [1.0, "x"]})
    assert not tools.same_value("3", 3) and not tools.same_value(True, 1)
    assert not tools.same_value([1], [1, 1]) and not tools.same_value({"a": 1}, {"a": 1, "b": 2})


def test_tools_unreadable_metadata_is_not_applicable():
    v = tools.score(['{"name": "play_song", "parameters": {}}'], tools=["not json"], expected_call=[SONG])[0]
    assert v.reward is None and v.reason.startswith("not applicable")


# --------------------------------------------------------------------------- multilingual


@pytest.mark.parametrize("completion,language,answer,verdict", [
    ("quatre", "fr", "quatre", (1.0, "correct")),
    ("  Quatre. ", "fr", "quatre", (1.0, "correct")),
    ("fünf!", "de", "fünf", (1.0, "correct")),
    ("fu\u0308nf", "de", "fünf", (1.0, "correct")),  # decomposed umlaut
    ("four", "fr", "quatre", (0.0, "wrong language: en")),
    ("vier", "es", "cuatro", (0.0, "wrong language: de")),
    ("cinq", "fr", "quatre", (0.0, "wrong answer")),
    ("six", "fr", "sept", (0.0, "wrong answer")),  # "six" is French too: wrong number, not wrong language
    ("The answer is quatre", "fr", "quatre", (0.0, "wrong answer")),
])
def test_multilingual(completion, language, answer, verdict):
    assert multilingual.score([completion], language=[language], answer=[answer]) == [Verdict(*verdict)]


def test_conversational_completions_read_their_last_message():
    assert multilingual.score([[{"role": "assistant", "content": "quatre"}]], language=["fr"],
                              answer=["quatre"]) == [Verdict(1.0, "correct")]


def test_code_runs_each_distinct_program_once(monkeypatch):
    from reward import code, sandbox

    calls = []
    real = sandbox.run_many
    monkeypatch.setattr(sandbox, "run_many", lambda programs, *a, **k: calls.append(len(programs)) or real(programs, *a, **k))
    good = "```python\ndef f(x):\n    return x + 1\n```"
    bad = "```python\ndef f(x):\n    return x + 2\n```"
    tests = "assert f(1) == 2"
    verdicts = code.score([good, bad, good, good], tests=[tests] * 4, entry_point=["f"] * 4)
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 1.0]
    assert calls == [2]
