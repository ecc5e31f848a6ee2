"""HumanEval through our code verifier: every canonical solution passes, every stubbed one fails.

The two graded tests run 328 sandboxed programs, 2 at a time: about 4 s each on an idle 2-core machine (bwrap).
"""

from __future__ import annotations

from posttrain.run import schema
from eval.benchmarks import get
from eval.benchmarks.humaneval import HUMANEVAL, canonical_completion, load, problems
from reward import VERIFIERS


def grade(completions: list[str], records: list[dict]) -> list:
    return VERIFIERS["code"](completions, tests=[r["tests"] for r in records],
                             entry_point=[r["entry_point"] for r in records],
                             preamble=[r["preamble"] for r in records], num_workers=2)


def test_registered():
    assert get("humaneval") is HUMANEVAL
    assert (HUMANEVAL.capability, HUMANEVAL.verifier) == ("code", "code")


def test_load_gives_all_164_problems_as_prompt_records():
    records = load(None, 0)
    assert [r["id"] for r in records] == [f"humaneval/HumanEval/{i}" for i in range(164)]
    assert schema.from_records(records, "prompts").num_rows == 164
    for r, p in zip(records, problems()):
        schema.check_prompt_record(r, r["id"])
        text = r["messages"][-1]["content"]
        assert r["capability"] == "code" and r["entry_point"] == p["entry_point"]
        assert f"```python\n{p['prompt']}```" in text and "```python code block" in text
        assert r["tests"].startswith(p["test"]) and r["tests"].rstrip().endswith(f"check({p['entry_point']})")


def test_limit_is_the_first_problems_in_task_order():
    assert load(5, 0) == load(None, 0)[:5]
    assert load(5, 1) == load(5, 0)


def test_every_canonical_solution_passes():
    records, items = load(None, 0), problems()
    verdicts = grade([canonical_completion(p) for p in items], records)
    failed = [f"{r['id']}: {v.reason}" for r, v in zip(records, verdicts) if v.reward != 1.0]
    assert not failed, "\n".join(failed)


def test_the_prompts_helpers_are_trusted_code_the_reply_may_call():
    """/10, /32, /38 and /50 define helpers their tests call: a reply writing only the function asked for
    passes, and a reply redefining a helper cannot change what the tests call."""
    records = {r["id"].split("/")[-1]: r for r in load(None, 0)}
    assert [k for k, r in records.items() if r["preamble"]] == ["10", "32", "38", "50"]
    items = {p["task_id"].split("/")[-1]: p for p in problems()}
    only = {k: items[k] for k in ("10", "32", "38", "50")}  # the reply: the entry function alone, no helper
    replies = [f"```python\ndef {p['entry_point']}{p['prompt'].split('def ' + p['entry_point'], 1)[1]}"
               f"{p['canonical_solution']}```" for p in only.values()]
    assert all(records[k]["preamble"].split("(")[0] not in r for k, r in zip(only, replies))
    assert [v.reward for v in grade(replies, [records[k] for k in only])] == [1.0] * 4
    cheats = {"38": "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n",
              "50": "def encode_shift(s):\n    return s\n\ndef decode_shift(s):\n    return s\n",
              "32": "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 12345.0\n"}
    verdicts = grade([f"```python\n{c}```" for c in cheats.values()], [records[k] for k in cheats])
    assert [v.reward for v in verdicts] == [0.0] * 3, [v.reason for v in verdicts]


def test_every_solution_stubbed_to_return_none_fails():
    records, items = load(None, 0), problems()
    verdicts = grade([f"```python\n{p['prompt']}    return None\n```" for p in items], records)
    passed = [r["id"] for r, v in zip(records, verdicts) if v.reward != 0.0]
    assert not passed, passed
