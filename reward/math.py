"""Math verifier: extract the final answer, then decide equivalence with math-verify.

Extraction (what the model meant as its final answer): the LAST answer marker in the text wins, a marker
being a \\boxed{...} or a "The answer is X" phrase (or the same phrase in fr/es/de/pt/ru/zh/ja, so replies
to multilingual prompts read the same way); a \\boxed{} inside or overlapping a phrase wins over it, so
"The answer is 7 ... recomputing gives \\boxed{9}" reads 9 and "\\boxed{15}. Check: the answer is right
since 3*5=15" reads 15. A phrase is a marker only when X is math: after markdown, quotes, a currency
sign and a filler word ("therefore", "simply", "approximately", ...), X must begin with a box, inline
math ($...$, \\(...\\)), a number or a LaTeX command, or hold no word at all ("x = 5", "(0, 2)"). Its
answer is then that box or inline math; else X itself when it is pure math; else its leading math before
the first word ("4 apples, not 5" -> 4, "\\frac{3}{4} of the cake" -> \\frac{3}{4}). "The answer is
correct" or "the answer is right since 3*5=15" is no marker: beside a box or a math phrase it is
commentary. Without any marker, the last such phrase is the answer as written ("The answer is four" ->
"four"; "5 + 9 = 14. The answer is python" -> "python"; "The answer is x - 5" where x is noise): wrong,
never some number of the text, so a reply that trails off into noise after "The answer is" does not pass
on a number it happened to write (a reply that words its answer, "not 5, it is 6", fails too: without a
box, we take the reply at its word). Without a phrase either: the last number in the text. An empty or
unclosed box (a truncated reply) is no marker.
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
CURRENCY = re.compile(r"(?<![\\\w])[$£€¥₹](?=\d)")  # a sign opening an amount ($8), not TeX's \$
INLINE_MATH = re.compile(r"(?<!\\)\$\$?((?:\\.|[^$\\])+)\$\$?|\\\((.+?)\\\)")  # $..$ (\$ inside), \(..\)
WORD = re.compile(r"(?<![\\])(?<![^\W\d_])[^\W\d_]{2,}")  # 2+ letters, not a \command's tail
# What may stand between "the answer is" and the answer itself.
FILLER = re.compile(
    r"^(?:(?:therefore|thus|hence|so|then|now|finally|simply|just|indeed|exactly|actually|clearly|obviously"
    r"|definitely|approximately|about|around|roughly|equal\s+to|given\s+by|equals|donc|alors|entonces|also"
    r"|daher|portanto|então|равен|равно)\b[\s,:]*|[:=]\s*)+", re.IGNORECASE)
# How a math answer followed by words may begin: a sign, a digit, a LaTeX command, a bracket, or a
# one-letter variable in a relation ("x = 5 apples"; not "a prime number").
MATH_START = re.compile(r"[-+−±]?(?:\d|\.\d|\\|[(\[{|√π∞]|[^\W\d_]\s*[=<>≤≥≠])")
TAIL = re.compile(r"(?:\\(?:text\w*|math\w*|mbox|operatorname)|[\s,;:=~])+$")  # "12 \\text " -> "12"
TEXT_ONLY = re.compile(r"\\(?:text\w*|math\w*|mbox|operatorname)|[{}\s]")  # what leaves no math if alone
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
    boxes = _boxed_spans(text)
    markers = [(start, 1, content.strip()) for start, _end, content in boxes if content.strip()]
    wordy = []  # "answer is" phrases that are not math: the answer only when nothing else is
    for m in ANSWER_IS.finditer(text):
        if any(start <= m.start() < end for start, end, _ in boxes):
            continue  # a phrase inside a box: the box is the marker
        got = _from_phrase(m.group(1))
        if got is None:
            wordy.append((m.start(), m.group(1)))
        else:
            markers.append((m.start(), 0, got))
    if markers:
        return max(markers)[2]  # the last one; a box on a tie
    if wordy:  # "The answer is" with no math after it: that is the answer given (wrong), not some number
        return _strip(wordy[-1][1])
    numbers = NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def _from_phrase(phrase: str) -> str | None:
    """The answer inside "The answer is <phrase>", or None when the phrase does not begin with math."""
    phrase = FILLER.sub("", _strip(phrase))
    if phrase.startswith("\\boxed{") and (boxed := _boxed(phrase)):
        return boxed[0].strip()
    if (m := INLINE_MATH.match(phrase)) and not _dollar_amounts(phrase, m):
        return (m.group(1) or m.group(2)).strip()
    phrase = CURRENCY.sub("", phrase.lstrip("$£€¥₹")).strip()  # currency signs: "$20 - $8 = $12"
    if not re.search(r"[^\W_]|\\", phrase):  # "", "?", "...": nothing to read
        return None
    word = WORD.search(phrase)
    if word is None:  # "1,000", "x = 5", "(0, 2)": all of it is the answer
        return _clean(phrase) if NUMBER.fullmatch(phrase) else phrase
    if not MATH_START.match(phrase):  # "correct", "right since 3*5=15", "not 5": no answer stated
        return None
    head = TAIL.sub("", phrase[:word.start()])  # the math before the first word
    if TEXT_ONLY.sub("", head) and _balanced(head):  # "4 apples" -> 4, "\\frac{3}{4} of" -> \\frac{3}{4}
        return _clean(head) if NUMBER.fullmatch(head) else head
    number = NUMBER.match(phrase)  # "12 (twelve)", "12 \\text{ cm}": a head cut mid-group
    return _clean(number.group()) if number else None


def _dollar_amounts(phrase: str, m: re.Match) -> bool:
    """Whether a `$...$` span is two dollar amounts, not inline math: "$20 - $8", "$12, and she gets $5".
    Its closing `$` opens an amount (a digit follows), or the span's text ends in a space, which TeX
    writers do not leave before a closing `$`."""
    if not m.group(0).startswith("$"):
        return False
    after = phrase[m.end():m.end() + 1]
    return after.isdigit() or (m.group(1) or "")[-1:].isspace()


def _strip(phrase: str) -> str:
    return phrase.strip().strip(" *`\"'«»“”„")


def _balanced(math: str) -> bool:
    return sum(math.count(c) for c in "([{") == sum(math.count(c) for c in ")]}")


def _boxed(text: str) -> list[str]:
    """Contents of every closed \\boxed{...}, braces matched (so \\boxed{\\frac{3}{4}} reads as \\frac{3}{4})."""
    return [content for _start, _end, content in _boxed_spans(text)]


def _boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, contents) of every closed \\boxed{...}; an unclosed one (a truncated reply) is left out."""
    out, start = [], 0
    while (i := text.find("\\boxed{", start)) != -1:
        depth, j = 0, i + len("\\boxed")
        for j in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
        if depth != 0:
            break  # unclosed: it runs to the end of the text
        out.append((i, j + 1, text[i + len("\\boxed{"):j]))
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
