"""Arithmetic step check: the first arithmetic equation a solution states that is false.

Llama 3 (§4.3.3) filters out training traces whose intermediate reasoning is wrong, since a right final
answer reached through a wrong step teaches the wrong step. The paper uses stepwise reward models; this is
the rule-based part of that filter: every equation written with plain numbers ("5 + 8 = 13",
"$20 - $8 = $12", "48 / 2 = 24 = 24", GSM8K's "<<48/2=24>>", "3 \\times 4 = 12") is evaluated exactly and
the first false one is returned. On the tiny base, a quarter of round 1's math SFT examples (97 of 360)
had a right answer after a false equation: "7 - 4 = 2. The answer is 2." for 6 - 4, an operand copied
wrong and a sum slipped to match.

Conservative by design: only runs of numbers, + - * / × ÷ · and brackets joined by "=" count, and an
end of a run that touches a letter ("x + 2 = 5", "= 2x + 3", "4 = 12 km" is fine: a space) is not read,
so algebra, units in the middle of a term, percentages and LaTeX other than \\times, \\cdot, \\div and
\\frac{a}{b} are never judged. A result may be rounded or cut to the digits it shows (10 / 3 = 3.33,
2 / 3 = 0.66 and 10 / 3 = 3 hold: word problems buy whole items). Checked against reasoning-gym's
gsm_symbolic reference solutions: none of 2,000 is flagged except where it is false.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

# A run of arithmetic on one line: numbers (2.5), operators, brackets, currency signs, spaces and "=".
_RUN = re.compile(r"[\d$£€(](?:\d+(?:\.\d+)?|[ \t+\-*/()$£€=])*")
_LATEX = [(re.compile(r"\\frac\{\s*(\d+(?:\.\d+)?)\s*\}\{\s*(\d+(?:\.\d+)?)\s*\}"), r"(\1/\2)"),
          (re.compile(r"(?<![\d./(])(\d+/\d+)(?![\d./)])"), r"(\1)"),  # "14 ÷ 1/2": a fraction is one number
          (re.compile(r"\\(?:times|cdot)(?![a-zA-Z])|[×·]"), "*"), (re.compile(r"\\div(?![a-zA-Z])|÷"), "/"),
          (re.compile(r"[−–]"), "-"), (re.compile(r"<<|>>"), " "),
          (re.compile(r"(?<=\d) +[xX] +(?=[$£€]?\(?\d)"), " * ")]  # "$470000 x 1/100": a times sign between numbers
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")  # 1,000 -> 1000 (a list "1, 2" stays)
_OPERATOR = re.compile(r"[\d)]\s*[-+*/]\s*[$£€]?[\d(]")
REASON = "right answer, wrong step"  # the score stage's reason prefix for such a sample
_MAX_SIDE = 200  # characters: a side longer than any hand-written step is not judged (and never recursed into)


def wrong_step(text: str) -> str | None:
    """The first false equation in `text` (normalised: "5 + 8 = 12"), or None when every one holds."""
    text = _normalise(text)
    for m in _RUN.finditer(text):
        run = m.group().rstrip(" \t(+-*/$£€")  # "= 4 (apples)": the bracket opens words, not math
        if "=" not in run:
            continue
        parts = run.split("=")
        if not any(_OPERATOR.search(p) for p in parts):
            continue  # "5 = 5": no arithmetic stated
        before, after = text[:m.start()], text[m.start() + len(run):]
        if _inside(before[-1:], before.rstrip()[-1:]) or _label(before, parts[0]):
            parts = parts[1:]  # it starts inside a larger term ("x + 2 = 5", "2^3 = 8", "3:00 + 2") or at
            # a label's number ("Step 2 = 5 + 3 = 8"), or after a one-letter variable ("a 1/2 = ...")
        if _inside(after[:1], after[1:2], at_end=True):
            parts = parts[:-1]  # it ends inside one ("= 2x + 3", "= 3.5e3", "= 2^3", "= 5:30")
        values = [_value(p) for p in parts]
        for left, right, a, b in zip(parts, parts[1:], values, values[1:]):
            if a is not None and b is not None and not _equal(a, b, left, right):
                return f"{left.strip()} = {right.strip()}"
    return None


def _inside(touching: str, near: str, at_end: bool = False) -> bool:
    """Whether a run's end belongs to a larger term: a letter or digit touches it, or a number continues
    past a separator ("3:00", "3,5", "2.5" cut), or (before it) an operator or a power, subscript or
    LaTeX group joins it across spaces, or (after it) one opens right after it ("^3", "(x", "_{")."""
    if touching.isalnum():
        return True
    if at_end:  # touching = the character after the run, near = the one after that
        return touching == "%" or ((touching in (".", ",", ":") and near.isdigit())
                or (touching in ("^", "_", "(", "{", "\\") and near not in ("", " ")))
    return touching in (".", ",", ":") or near in ("+", "-", "*", "/", "^", "_", "\\", "}")


def _label(before: str, first: str) -> bool:
    """Whether the run's first side is not a side: a number after a word ("Step 2 = ..."), or anything after a
    one-letter word, which may be a variable or a times sign we did not read ("a x 1/2 = ...")."""
    word = re.search(r"([^\W\d_]+)\s*$", before)
    return word is not None and (len(word.group(1)) == 1 or re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", first) is not None)


def _normalise(text: str) -> str:
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)
    return _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)


def _value(side: str) -> Fraction | None:
    """The exact value of one side of an equation, or None when it is not plain arithmetic."""
    expr = re.sub(r"[$£€]", "", side).strip()
    if not expr or len(expr) > _MAX_SIDE:
        return None
    try:
        return _eval(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError("not plain arithmetic")  # names, calls, powers, comparisons: not ours to judge


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


def _equal(a: Fraction, b: Fraction, left: str, right: str) -> bool:
    """Equal, or less than one unit of the last digit apart where a side is one number, so rounded and cut
    values hold (10 / 3 = 3.33, 2 / 3 = 0.66, 899.45 / 1.1 = 817 pretzels) and integers stay exact (5 + 8 = 14
    and 2 + 2 = 4.5 are false)."""
    decimals = [len(m.group(1) or "") for side in (left, right)
                if (m := re.fullmatch(r"\s*[$£€]?\s*-?\d+(?:\.(\d+))?\s*", side))]
    if a == b or abs(a - b) <= Fraction(1, 10 ** 9) * max(abs(a), abs(b)):
        return True  # equal, or only a float's display noise apart (14.500000000000002 - 12 = 2.5000000000000018)
    return bool(decimals) and abs(a - b) < Fraction(1, 10 ** min(decimals))
