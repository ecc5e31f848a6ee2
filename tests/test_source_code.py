"""The code prompt generator: deterministic, disjoint splits, valid records, and tests that tell right from wrong."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from posttrain.run import schema

from posttrain import sources
from posttrain.sources import code as source
from reward import VERIFIERS


def test_registered_under_its_name():
    assert sources.get("code") is source.draw


def test_deterministic_and_a_larger_n_extends_a_smaller_one():
    records = source.draw("train", 60, 3)
    assert records == source.draw("train", 60, 3)
    assert source.draw("train", 25, 3) == records[:25]
    assert source.draw("train", 60, 4) != records


def test_splits_are_disjoint_and_ids_unique():
    train, heldout = source.draw("train", 1000, 0), source.draw("heldout", 300, 0)
    prompt = lambda r: r["messages"][-1]["content"]  # noqa: E731
    assert not {prompt(r) for r in train} & {prompt(r) for r in heldout}
    assert len({prompt(r) for r in train}) == len(train)
    ids = [r["id"] for r in train + heldout]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "code/train/000000" and ids[-1] == "code/heldout/000299"


def test_records_fit_the_prompts_schema():
    records = source.draw("train", 200, 1) + source.draw("heldout", 50, 1)
    for r in records:
        schema.check_prompt_record(r, r["id"])
    assert schema.from_records(records, "prompts").num_rows == 250


def test_prompt_names_the_signature_shows_an_example_and_asks_for_a_python_block():
    for r in source.draw("heldout", 50, 0):
        text = r["messages"][-1]["content"]
        assert r["capability"] == "code" and len(r["messages"]) == 1
        assert f"`{r['entry_point']}(" in text and "For example" in text
        assert text.endswith("in a ```python code block.")
        assert all(line.startswith(f"assert {r['entry_point']}(") for line in r["tests"].splitlines())


def test_every_template_is_drawn(monkeypatch):
    used = Counter()

    def counting(name, make):
        return lambda rng: (used.update([name]), make(rng))[1]

    for name, make in list(source.TEMPLATES.items()):
        monkeypatch.setitem(source.TEMPLATES, name, counting(name, make))
    source.draw("train", 1000, 0)
    assert set(used) == set(source.TEMPLATES) and len(source.TEMPLATES) >= 12


def test_a_thousand_held_out_prompts_are_drawn():
    """The slower split (4 of 5 candidates are rejected) still gives as many distinct held-out prompts as asked.
    How fast is not asserted here: speed lives in bench/."""
    records = source.draw("heldout", 1000, 7)
    keys = [r["messages"][0]["content"] for r in records]
    assert len(records) == len(set(keys)) == 1000
    assert [r["id"] for r in records] == [f"code/heldout/{i:06d}" for i in range(1000)]


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        source.draw("test", 1, 0)


def constant_reply(task: source.Task, record: dict) -> str:
    """A reply that hard-codes the prompt's example answer: the tests must need more than the example."""
    answer = record["tests"].splitlines()[0].split(" == ", 1)[1]
    return source.fenced(source.program(task, f"    return {answer}"))


def test_each_template_reference_passes_and_its_bug_and_a_constant_fail():
    rows = []  # (label, completion, record, should_pass)
    for name, make in source.TEMPLATES.items():
        for i in range(2):
            task = make(random.Random(f"{name}-{i}"))
            record, reference = source.render(task)
            rows += [(f"{name}#{i} reference", reference, record, True),
                     (f"{name}#{i} bug", source.fenced(source.program(task, task.bug)), record, False),
                     (f"{name}#{i} constant", constant_reply(task, record), record, False)]
    for record, reference in source.draw_with_references("train", 12, 5):
        rows.append((f"{record['id']} reference", reference, record, True))
    verdicts = VERIFIERS["code"]([c for _, c, _, _ in rows], tests=[r["tests"] for _, _, r, _ in rows],
                                 entry_point=[r["entry_point"] for _, _, r, _ in rows], num_workers=2)
    wrong = [f"{label}: {v.reason}" for (label, _, _, ok), v in zip(rows, verdicts) if v.reward != (1.0 if ok else 0.0)]
    assert not wrong, "\n".join(wrong)
