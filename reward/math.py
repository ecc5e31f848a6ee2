"""Math verifier: extract the final answer, then decide equivalence with math-verify.

Extraction (what the model meant as its final answer), first that applies:
1. the last "The answer is X" (or the same phrase in fr/es/de/pt/ru/zh/ja, so replies to multilingual
   prompts read the same way). Inside X: a \\boxed{...} or $...$ if there is one; else X itself when it
   is pure math ("x = 5", "(0, 2)", "2\\sqrt{2}", "£2,340"); else its first number ("The answer is 4
   apples" -> 4);
2. the last \\boxed{...};
3. the last number in the text.
Equivalence is math-verify's (sympy): 4.0 == 4, 0.75 == 3/4 == \\frac{3}{4}, \\sqrt{8} == 2\\sqrt{2},
intervals, sets, equations. A plain number written with thousands commas ("1,000") is read as 1000;
decimal commas ("3,5") and dot-grouped thousands ("1.000") are not supported.

Timeouts: math-verify bounds each parse and comparison with signal.alarm, which works only in the main
thread (elsewhere it raises), so the timeouts are passed only there and are None in any other thread.
Sympy can hang on a short answer (3 vs 9^{9^9}), in any thread, so an answer holding a number of more
than MAX_DIGITS digits is refused (as wrong) before it is compared: nothing we grade has such an answer.
"""

from __future__ import annotations

import re
import threading
from functools import cache, lru_cache

from reward.verdict import FAIL, PASS, Verdict, as_text, column, missing

NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")  # 1,000 / 2.5 / 3/4
ANSWER_IS = re.compile(
    r"(?:answer\s+is|réponse\s+est|respuesta\s+es|antwort\s+(?:ist|lautet)|resposta\s+é"
    r"|ответ\s*(?:[:：]|—|равен)|答案(?:是|为|為|[:：])|答えは)"
    r"\s*[:：]?\s*(.+?)(?:[.。](?!\d)|\n|$)", re.IGNORECASE)
INLINE_MATH = re.compile(r"(?<!\\)\$\$?((?:\\.|[^$\\])+)\$\$?|\\\((.+?)\\\)")  # $..$ (\$ inside), \(..\)
WORD = re.compile(r"(?<![\\])(?<![^\W\d_])[^\W\d_]{2,}")  # 2+ letters, not a \command's tail
MAX_DIGITS = 10_000  # a wide margin: 9^{100000} (95,425 digits) still compares in ms; 9^{9^9} never returns
MAX_FACTORIAL = 3_000  # 1000! compares in ms; (10^10)! never returns
TIMEOUT_S = 3  # per parse and per comparison, main thread only (signal.alarm takes whole seconds)


def score(completions: list, answer: list | None = None, **_) -> list[Verdict]:
    """completions[i] vs answer[i] -> one Verdict per completion."""
    answers = column(answer, len(completions), "answer")
    return [verdict(as_text(c), a) for c, a in zip(completions, answers)]


def verdict(text: str, expected: str | None) -> Verdict:
    """One completion's text against its reference answer (the multilingual gate reuses this)."""
    if (na := missing(answer=expected)) is not None:
        return na
    got = extract_answer(text)
    if got is None:
        return Verdict(FAIL, "no answer found")
    if equivalent(got, expected):
        return Verdict(PASS, "correct")
    return Verdict(FAIL, f"wrong answer: got {got}, expected {expected}")


def extract_answer(text: str) -> str | None:
    """The final answer as written (LaTeX kept, a plain number without its thousands commas), or None."""
    stated = ANSWER_IS.findall(text)
    if stated:
        return _from_phrase(stated[-1])
    boxed = _boxed(text)
    if boxed:
        return boxed[-1].strip()
    numbers = NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def _from_phrase(phrase: str) -> str:
    """The answer inside "The answer is <phrase>": a box or inline math wins, then pure math, then a number."""
    if boxed := _boxed(phrase):
        return boxed[-1].strip()
    if m := INLINE_MATH.search(phrase):
        return (m.group(1) or m.group(2)).strip()
    phrase = phrase.strip(" *`\"'«»“”„").lstrip("$£€¥₹")  # markdown, quotes, a currency sign
    if not WORD.search(phrase):  # "1,000", "x = 5", "(0, 2)": all of it is the answer
        return _clean(phrase) if NUMBER.fullmatch(phrase) else phrase
    number = NUMBER.search(phrase)  # "4 apples, not 5" -> 4; "four" stays (and is reported as wrong)
    return _clean(number.group()) if number else phrase


def _boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...}, braces matched (so \\boxed{\\frac{3}{4}} reads as \\frac{3}{4})."""
    out, start = [], 0
    while (i := text.find("\\boxed{", start)) != -1:
        depth, j = 0, i + len("\\boxed")
        for j in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
        out.append(text[i + len("\\boxed{"):j])
        start = j + 1
    return out


def _clean(number: str) -> str:
    return number.replace(",", "")


@lru_cache(maxsize=65536)
def equivalent(got: str, expected: str) -> bool:
    """math-verify's equivalence of an extracted answer with the reference (cached: K samples of one
    prompt mostly repeat a few answers)."""
    gold, target = _trusted(_parse(expected), expected), _parse(got)
    if not target or any(_too_big(t) for t in target):
        return False
    return _math_verify().verify(list(gold), list(target), timeout_seconds=_timeout())


def _trusted(gold: tuple, expected: str) -> tuple:
    """A reference with "=" must parse to an equation or a set of them; one that parses to a bare number
    lost its content (MMATH's "\\lambda=2\\sqrt{2}, A(\\pm 1, 0)" reads as 0, and "0" would pass), so
    only its exact text is compared."""
    import sympy

    if "=" in expected and gold and isinstance(gold[0], sympy.Number):
        return tuple(g for g in gold if isinstance(g, str))
    return gold


@lru_cache(maxsize=65536)
def _parse(answer: str) -> tuple:
    """An answer (plain, or LaTeX with or without $...$) as math-verify's parses: sympy + the raw string."""
    latex = "$" + answer.strip().strip("$").strip() + "$"
    return tuple(_math_verify().parse(latex, parsing_timeout=_timeout()))


def _timeout() -> int | None:
    """math-verify's signal.alarm timeouts work only in the main thread; elsewhere they must be None."""
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@cache
def _math_verify():
    """Imported on first use: it pulls sympy and a LaTeX parser (slow), and most runs import reward only
    to check a recipe's verifier names."""
    import math_verify

    return math_verify


def _too_big(expr) -> bool:
    """True when `expr` holds a number with more than MAX_DIGITS digits (or a factorial past
    MAX_FACTORIAL): sympy may never finish comparing it, and no timeout guards a worker thread."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False
    for node in sympy.postorder_traversal(expr):
        try:
            if isinstance(node, sympy.Pow) and node.is_number and _digits(node) > MAX_DIGITS:
                return True
            if isinstance(node, sympy.factorial) and node.is_number and abs(sympy.N(node.args[0], 8)) > MAX_FACTORIAL:
                return True
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            return True  # a number we cannot even size is not one we should compare
    return False


def _digits(power) -> float:
    """|log10| of base^exp, from 8-digit floats of base and exponent (never the number itself)."""
    import sympy

    base, exp = (abs(sympy.N(a, 8)) for a in power.args)
    if base in (0, 1):
        return 0.0
    return abs(float(sympy.log(base, 10).evalf(8))) * float(exp)
