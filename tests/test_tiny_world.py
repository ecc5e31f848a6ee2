"""The tiny world's prompt spaces: held-out questions are never trained on, and tool requests are new
combinations whose argument must be copied from the question (not recalled from training)."""

import json

import pytest

from posttrain.tiny import world


def _questions(drawn: list[tuple[dict, str]]) -> list[str]:
    return [" ".join(m["content"] for m in record["messages"] if m["role"] == "user") for record, _ in drawn]


@pytest.mark.parametrize("capability", sorted(world.FAMILIES))
def test_heldout_questions_never_appear_in_training(capability):
    train = set(_questions(world.draw(capability, "train", 400, 0)))
    heldout = set(_questions(world.draw(capability, "heldout", 100, 0)))
    assert heldout and not train & heldout


def test_tool_requests_carry_their_argument_and_are_mostly_distinct():
    drawn = world.draw("tools", "train", 400, 0) + world.draw("tools", "heldout", 100, 0)
    for (record, reply), question in zip(drawn, _questions(drawn)):
        call = json.loads(record["expected_call"])
        (value,) = call["arguments"].values()
        assert str(value) in question, (question, call)  # the value is in the request, to be copied
        assert json.loads(reply) == {"name": call["name"], "parameters": call["arguments"]}
    # The first version had 95 distinct requests in all: 400 draws repeated each ~4 times, and the held-out
    # fifth asked only for values training never asked for.
    assert len(set(_questions(drawn[:400]))) >= 250


def test_heldout_tool_values_are_seen_in_training_under_other_requests():
    """Copying is what a held-out tool request tests: half its values occur in training, in other words."""
    def values(drawn):
        return [str(*json.loads(r["expected_call"])["arguments"].values()) for r, _ in drawn]

    trained = set(values(world.draw("tools", "train", 400, 0)))
    heldout = values(world.draw("tools", "heldout", 100, 0))
    assert 0.3 <= sum(v in trained for v in heldout) / len(heldout) < 1.0
