"""Math verifier: extract the final answer and compare it numerically with the reference.

Extraction order: the last "The answer is X", else the last \\boxed{X}, else the last number in the
text. Numbers compare as exact fractions, so "4.0" == "4" and "0.75" == "3/4".
"""

from __future__ import annotations

import re
from fractions import Fraction

from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")  # 1,000 / 2.5 / 3/4
ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+?)(?:\.(?!\d)|\n|$)", re.IGNORECASE)
FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def score(completions: list, answer: list | None = None, **_) -> list[Verdict]:
    """completions[i] vs answer[i] -> one Verdict per completion."""
    answers = column(answer, len(completions), "answer")
    return [_verdict(as_text(c), a) for c, a in zip(completions, answers)]


def _verdict(text: str, expected: str | None) -> Verdict:
    if (na := missing(answer=expected)) is not None:
        return na
    got = extract_answer(text)
    if got is None:
        return Verdict(FAIL, "no answer found")
    if _equal(got, expected):
        return Verdict(PASS, "correct")
    return Verdict(FAIL, f"wrong answer: got {got}, expected {expected}")


def extract_answer(text: str) -> str | None:
    """The final answer as written (a number where one can be found), or None."""
    stated = ANSWER_IS.findall(text)
    if stated:
        phrase = _unbox(stated[-1]) or stated[-1]
        # "The answer is 4 apples" -> "4"; "The answer is four" keeps the words (reported as wrong)
        return _first_number(phrase) or phrase.strip(" $*`\"'")
    boxed = _boxed(text)
    if boxed:
        return _first_number(boxed[-1]) or boxed[-1].strip()
    numbers = NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def _boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...}, braces matched (so \\boxed{\\frac{3}{4}} reads as "3/4")."""
    out, start = [], 0
    while (i := text.find("\\boxed{", start)) != -1:
        depth, j = 0, i + len("\\boxed")
        for j in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
        out.append(FRAC.sub(r"\1/\2", text[i + len("\\boxed{"):j]))
        start = j + 1
    return out


def _unbox(phrase: str) -> str | None:
    boxed = _boxed(phrase)
    return boxed[-1] if boxed else None


def _first_number(text: str) -> str | None:
    m = NUMBER.search(text)
    return _clean(m.group()) if m else None


def _clean(number: str) -> str:
    return number.replace(",", "")


def _value(text: str) -> Fraction | None:
    try:
        return Fraction(_clean(text.strip()))
    except (ValueError, ZeroDivisionError):
        return None


def _equal(got: str, expected: str) -> bool:
    a, b = _value(got), _value(expected)
    if a is None or b is None:  # non-numeric reference: fall back to a normalised string match
        return got.strip().lower() == expected.strip().lower()
    return a == b
