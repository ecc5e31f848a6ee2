"""The arithmetic step check (reward/steps.py): false equations are named, true ones and anything that is
not plain arithmetic (algebra, powers, units touching a number, times of day) are left alone."""

from __future__ import annotations

import pytest

from reward.steps import wrong_step


@pytest.mark.parametrize("text, wrong", [
    # the tiny base's slips: right answer, false equation
    ("5 + 8 = 14. The answer is 14.", "5 + 8 = 14"),
    ("7 - 4 = 2. The answer is 2.", "7 - 4 = 2"),
    ("3 - 1 = 2 = 1. The answer is 2.", "2 = 1"),  # a chain: every link must hold
    ("8 - 2 = 5.get_weather", "8 - 2 = 5"),  # a sentence end, not a decimal
    ("2 + 3 = 6\n\n", "2 + 3 = 6"),
    # how larger models write steps
    ("Step 1: 2 + 3 = 5, then 5 * 2 = 11.", "5 * 2 = 11"),  # the first false one, after a true one
    ("$20 - $8 = $13", "$20 - $8 = $13"),
    ("<<48/2=25>>", "(48/2) = 25"),  # GSM8K's calculator annotation
    ("3 \\times 4 = 13", "3 * 4 = 13"),
    ("\\frac{1}{2} + 1 = 3", "(1/2) + 1 = 3"),
    ("14 ÷ 1/2 = 7", "14 / (1/2) = 7"),  # a fraction is one number
    ("$470000 x 1/100 = $4800", "$470000 * (1/100) = $4800"),
    ("1,000 + 200 = 1,300", "1000 + 200 = 1300"),
    ("(2 + 3) * 4 = 21", "(2 + 3) * 4 = 21"),
    ("x = 2 + 3 = 6", "2 + 3 = 6"),
    ("9 = 4 + 6", "9 = 4 + 6"),
    ("4 * 3 = 13 km", "4 * 3 = 13"),
    ("5 - 2 = 4 (apples)", "5 - 2 = 4"),
    ("2 + 2 = 4.5", "2 + 2 = 4.5"),
    ("2 / 3 = 0.65", "2 / 3 = 0.65"),
    ("Step 2 = 5 + 3 = 9", "5 + 3 = 9"),  # a label's number is not a side, the rest is judged
])
def test_false_equations_are_named(text, wrong):
    assert wrong_step(text) == wrong


@pytest.mark.parametrize("text", [
    "5 + 8 = 13. The answer is 13.", "3 + 5 = 8 = 8", "$20 - $8 = $12", "She has <<48/2=24>>24 left.",
    "10 / 3 = 3.33", "1 / 3 = 0.333", "2 / 3 = 0.67", "2 / 3 = 0.66", "10 / 3 = 3", "17 * 0.5 = 8",
    "Step 2 = 5 + 3 = 8", "Box 1 = 3 + 4",
    "0.1 + 0.2 = 0.3", "3 \\times 4 = 12", "1,000 + 200 = 1,200",
    "−3 + 5 = 2", "9 = 4 + 5", "(2 + 3) * 4 = 20", "2 + 3 = 5.",
    # not plain arithmetic, or not all of it in view: never judged
    "x + 2 = 5", "2x + 3 = 7", "5 = 2x + 3", "2^3 = 8", "2^3 + 1 = 9", "3 + 4 = 2^3", "0 + 9 = 9parameters",
    "3:00 + 2 = 5", "2 + 3 = 5:30", "20% of 50 = 10", "1 / 0 = 5", "1 + 1 = . The answer is 1.", "5 = 6",
    "The answer is 12.", "", "1+" * 3000 + "1 = 2",
])
def test_true_or_unjudged_equations_pass(text):
    assert wrong_step(text) is None


def test_the_tiny_worlds_reference_replies_hold_and_their_slips_are_caught():
    from posttrain.tiny import world

    replies = [reply for _, reply in world.draw("math", "train", 300, 0)]
    assert replies and all(wrong_step(r) is None for r in replies)
    # the same replies with a wrong result ("7 - 3 = 14. The answer is 4.")
    slipped = [r.replace(" = ", " = 1", 1) for r in replies if " = " in r]
    assert slipped and all(wrong_step(r) is not None for r in slipped)
