"""The tool-use prompt generator: deterministic, disjoint splits, valid rows, and answers its verifier accepts."""

from __future__ import annotations

import json

import pytest

from posttrain.run import schema

from posttrain import sources
from posttrain.sources import tools as source
from reward import VERIFIERS
from reward.tools import call_text, render_tools_prompt


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {split: source.draw(split, 300, seed=0) for split in ("train", "heldout")}


def _question(record: dict) -> str:
    return record["messages"][-1]["content"]


def _verdicts(records: list[dict], completions: list[str]):
    return VERIFIERS["tools"](completions, tools=[r["tools"] for r in records],
                              expected_call=[r["expected_call"] for r in records])


def test_registered_and_deterministic(splits):
    assert sources.get("tools") is source.draw
    assert source.draw("train", 300, seed=0) == splits["train"]
    assert source.draw("train", 40, seed=0) == splits["train"][:40]  # a larger n extends a smaller one
    assert source.draw("train", 40, seed=1) != splits["train"][:40]
    with pytest.raises(ValueError, match="split"):
        source.draw("test", 1, seed=0)


def test_splits_are_disjoint_and_ids_unique(splits):
    train, heldout = splits["train"], splits["heldout"]
    assert {_question(r) for r in train}.isdisjoint(_question(r) for r in heldout)
    assert {json.dumps(r["messages"]) for r in train}.isdisjoint(json.dumps(r["messages"]) for r in heldout)
    for split, records in splits.items():
        assert [r["id"] for r in records] == [f"tools/{split}/{i:06d}" for i in range(len(records))]
        assert len({_question(r) for r in records}) == len(records)
        assert all(source.split_of(_question(r)) == split for r in records)


def test_records_are_prompt_rows(splits):
    for split, records in splits.items():
        schema.from_records(records, "prompts", split)
        for r in records:
            schema.check_prompt_record(r, r["id"])
            offered = json.loads(r["tools"])
            call = json.loads(r["expected_call"])
            assert r["capability"] == "tools" and 2 <= len(offered) <= 4
            assert call["name"] in {t["name"] for t in offered} and set(call) == {"name", "arguments"}
            assert r["messages"] == render_tools_prompt(offered, [{"role": "user", "content": _question(r)}])
    assert {json.loads(r["expected_call"])["name"] for r in splits["train"]} == set(source.TOOLS)


def test_expected_calls_pass(splits):
    for records in splits.values():
        calls = [call_text(**json.loads(r["expected_call"])) for r in records]
        assert {v for v in _verdicts(records, calls)} == {(1.0, "correct")}


def _valid_arguments(parameters: dict) -> dict:
    """Schema-valid values for a tool's required arguments (what a confused model might send)."""
    sample = {"string": "x", "integer": 2, "number": 2.5, "boolean": True}
    return {arg: parameters["properties"][arg].get("enum", [sample[parameters["properties"][arg]["type"]]])[0]
            for arg in parameters["required"]}


def test_distractor_calls_fail(splits):
    records = splits["train"] + splits["heldout"]
    calls = []
    for r in records:
        target = json.loads(r["expected_call"])["name"]
        distractor = next(t for t in json.loads(r["tools"]) if t["name"] != target)
        calls.append(call_text(distractor["name"], _valid_arguments(distractor["parameters"])))
    assert {v for v in _verdicts(records, calls)} == {(0.0, "wrong tool")}


def test_optional_arguments_the_question_sets_are_required(splits):
    records, calls = [], []
    for r in splits["train"]:
        call = json.loads(r["expected_call"])
        [tool] = [t for t in json.loads(r["tools"]) if t["name"] == call["name"]]
        optional = [a for a in call["arguments"] if a not in tool["parameters"]["required"]]
        if optional:
            records.append(r)
            calls.append(call_text(call["name"], {k: v for k, v in call["arguments"].items() if k != optional[0]}))
    assert len(records) > 50
    assert all(v.reward == 0.0 and v.reason.startswith("wrong arguments: missing") for v in _verdicts(records, calls))
