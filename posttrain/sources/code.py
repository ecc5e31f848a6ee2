"""Code prompts the project makes itself: small Python functions, each checked by generated unit tests.

Each template draws a `Task`: a function name and parameter names from pools, task constants (a
letter to count, clamp bounds, fizzbuzz divisors and words, ...), a one-sentence spec, a reference
body and test inputs. The expected outputs come from running the reference body itself (our own
code, in-process, never a model's), so tests and reference cannot drift apart. Each template also
carries `bug`, the most plausible wrong body, and its fixed test inputs are chosen to expose it; the
tests check that the generated tests tell the two apart.

Held-out prompts are those whose prompt text hashes into 1/5 of the space (as in posttrain.tiny.world),
so train and held-out never share a prompt; within a split no prompt repeats. HumanEval is never
used here (it is an eval set).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

NAME = "code"
HELDOUT_BUCKETS = 5  # 1 in 5 of the prompt space is held out
INSTRUCTION = "Reply with the complete function in a ```python code block."


@dataclass(frozen=True)
class Task:
    """One function to write. `body`/`bug` are the indented lines after the `def` line."""

    fn: str
    params: tuple[str, ...]
    does: str  # completes "Write a Python function `f(x)` that ..."
    body: str
    bug: str
    cases: list[tuple]  # argument tuples; the first is shown in the prompt as an example


# --------------------------------------------------------------------------- helpers

LISTS = ["nums", "values", "numbers", "xs", "items", "data", "scores"]
STRINGS = ["s", "text", "word", "string", "phrase", "line"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ("apple river stone cloud tiger lemon paper glass night ocean pilot radio mango zebra violin "
         "orbit candle forest marble level kayak noon civic eye").split()


def _name(rng: random.Random, heads: list[str], tails: list[str]) -> str:
    return f"{rng.choice(heads)}_{rng.choice(tails)}"


def _code(*lines: str) -> str:
    """Body lines (with their own relative indentation) indented under a `def`."""
    return "\n".join(f"    {line}" for line in lines)


def _ints(rng: random.Random, lo: int = -9, hi: int = 20, size: tuple[int, int] = (2, 7)) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(*size))]


def _text(rng: random.Random, words: int = 3) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


# --------------------------------------------------------------------------- templates: lists


def sum_list(rng: random.Random) -> Task:
    xs = rng.choice(LISTS)
    return Task(_name(rng, ["sum", "total", "add_up"], ["values", "numbers", "list", "items"]), (xs,),
                f"returns the sum of the integers in the list `{xs}` (0 when it is empty)",
                _code(f"return sum({xs})"), _code(f"return sum({xs}[1:])"),
                [([4, -1, 7],), ([],), *[(_ints(rng),) for _ in range(3)]])


def max_list(rng: random.Random) -> Task:
    xs = rng.choice(LISTS)
    return Task(_name(rng, ["largest", "max", "biggest"], ["value", "number", "item", "of"]), (xs,),
                f"returns the largest integer in the non-empty list `{xs}`",
                _code(f"return max({xs})"), _code(f"return {xs}[-1]"),
                [([1, 9, 2],), ([3],), ([-5, -2, -8],), *[(_ints(rng),) for _ in range(3)]])


def min_list(rng: random.Random) -> Task:
    xs = rng.choice(LISTS)
    return Task(_name(rng, ["smallest", "min", "lowest"], ["value", "number", "item", "of"]), (xs,),
                f"returns the smallest integer in the non-empty list `{xs}`",
                _code(f"return min({xs})"), _code(f"return {xs}[0]"),
                [([4, -1, 2],), ([3],), ([-2, -7, -3],), *[(_ints(rng),) for _ in range(3)]])


def spread(rng: random.Random) -> Task:
    xs = rng.choice(LISTS)
    return Task(_name(rng, ["spread", "range", "span"], ["of", "values", "numbers"]), (xs,),
                f"returns the largest minus the smallest integer of the non-empty list `{xs}`",
                _code(f"return max({xs}) - min({xs})"), _code(f"return {xs}[-1] - {xs}[0]"),
                [([3, 9, 1],), ([4],), *[(_ints(rng),) for _ in range(3)]])


def dedupe(rng: random.Random) -> Task:
    xs = rng.choice(LISTS)
    return Task(_name(rng, ["dedupe", "unique", "distinct"], ["values", "items", "in_order", "list"]), (xs,),
                f"returns the list `{xs}` without repeated elements, keeping the first occurrence of each "
                "in its original order",
                _code("seen = set()", "out = []", f"for x in {xs}:", "    if x not in seen:",
                      "        seen.add(x)", "        out.append(x)", "return out"),
                _code(f"return sorted(set({xs}))"),
                [([3, 1, 3, 2, 1],), ([],), *[(_ints(rng, 0, 6, (3, 9)),) for _ in range(3)]])


def running_totals(rng: random.Random) -> Task:
    xs = rng.choice(LISTS)
    return Task(_name(rng, ["running", "cumulative", "prefix"], ["totals", "sums", "sum"]), (xs,),
                f"returns the running totals of the list `{xs}`: element i of the result is the sum of "
                f"`{xs}[0]` through `{xs}[i]`",
                _code("out = []", "total = 0", f"for x in {xs}:", "    total += x", "    out.append(total)",
                      "return out"),
                _code("out = []", "total = 0", f"for x in {xs}:", "    out.append(total)", "    total += x",
                      "return out"),
                [([1, 2, 3],), ([],), ([5],), *[(_ints(rng),) for _ in range(2)]])


def parity_filter(rng: random.Random) -> Task:
    xs, even = rng.choice(LISTS), rng.random() < 0.5
    kind, rest, other = ("even", 0, 1) if even else ("odd", 1, 0)
    return Task(_name(rng, ["keep", "only", "filter"], [kind, f"{kind}s", f"{kind}_numbers"]), (xs,),
                f"returns a list of the {kind} integers of `{xs}`, in their original order",
                _code(f"return [x for x in {xs} if x % 2 == {rest}]"),
                _code(f"return [x for x in {xs} if x % 2 == {other}]"),
                [([1, 2, 3, 4, -5, -6],), ([],), *[(_ints(rng),) for _ in range(3)]])


def scale_list(rng: random.Random) -> Task:
    xs, k = rng.choice(LISTS), rng.randint(2, 9)
    return Task(_name(rng, ["scale", "multiply", "times"], ["values", "all", "list", "by"]), (xs,),
                f"returns a new list with each integer of `{xs}` multiplied by {k}",
                _code(f"return [x * {k} for x in {xs}]"), _code(f"return [x + {k} for x in {xs}]"),
                [([1, 3, -4],), ([],), *[(_ints(rng),) for _ in range(3)]])


# --------------------------------------------------------------------------- templates: strings


def count_char(rng: random.Random) -> Task:
    s, c = rng.choice(STRINGS), rng.choice(LETTERS)
    return Task(_name(rng, ["count", "how_many", "tally"], [f"{c}s", f"letter_{c}", f"{c}_chars"]), (s,),
                f"returns how many times the lowercase character '{c}' occurs in the string `{s}` "
                "(uppercase does not count)",
                _code(f"return {s}.count({c!r})"), _code(f"return {s}.lower().count({c!r})"),
                [(f"{c.upper()}x{c}y{c}",), ("",), (c * 3,), *[(_text(rng, 2),) for _ in range(2)]])


def count_vowels(rng: random.Random) -> Task:
    s = rng.choice(STRINGS)
    return Task(_name(rng, ["count", "num", "how_many"], ["vowels", "vowel_letters"]), (s,),
                f"returns how many vowels (a, e, i, o, u, in upper or lower case) the string `{s}` contains",
                _code(f"return sum(1 for ch in {s}.lower() if ch in 'aeiou')"),
                _code(f"return sum(1 for ch in {s} if ch in 'aeiou')"),
                [("Apple",), ("",), ("xyz",), ("EDUCATION",), (_text(rng, 2).title(),)])


def reverse_string(rng: random.Random) -> Task:
    s = rng.choice(STRINGS)
    return Task(_name(rng, ["reverse", "reversed", "flip", "backwards"], ["string", "text", "chars"]), (s,),
                f"returns the string `{s}` with its characters in reverse order",
                _code(f"return {s}[::-1]"), _code(f"return {s}[1:][::-1]"),
                [("abc",), ("",), ("a",), ("hello world",), (_text(rng, 2),)])


def is_palindrome(rng: random.Random) -> Task:
    s, fold = rng.choice(STRINGS), rng.random() < 0.5
    word = rng.choice(WORDS)
    cases = [("abca",), ("",), ("abba",), ("ab",), (word,), (word + word[::-1],)]
    if fold:
        return Task(_name(rng, ["is", "check"], ["palindrome", "mirror"]), (s,),
                    f"returns True if the string `{s}` reads the same forwards and backwards when upper "
                    "and lower case are treated as equal, else False",
                    _code(f"t = {s}.lower()", "return t == t[::-1]"), _code(f"return {s} == {s}[::-1]"),
                    [("Abba",), *cases, ("RaceCar",)])
    return Task(_name(rng, ["is", "check"], ["palindrome", "mirror"]), (s,),
                f"returns True if the string `{s}` reads the same forwards and backwards (case matters), "
                "else False",
                _code(f"return {s} == {s}[::-1]"), _code(f"return {s}[:1] == {s}[-1:]"), cases)


def count_words(rng: random.Random) -> Task:
    s = rng.choice(STRINGS)
    return Task(rng.choice(["count_words", "num_words", "word_count", "count_tokens"]), (s,),
                f"returns the number of words in the string `{s}`, where words are separated by any run "
                "of whitespace",
                _code(f"return len({s}.split())"), _code(f"return len({s}.split(' '))"),
                [("one two three",), ("",), ("  spaced   out ",),
                 *[(_text(rng, rng.randint(1, 5)),) for _ in range(2)]])


def repeat_join(rng: random.Random) -> Task:
    s, sep = rng.choice(STRINGS), rng.choice(["-", ", ", "|", " ", "+", "/"])
    return Task(_name(rng, ["repeat", "copies", "echo"], ["string", "joined", "text"]), (s, "k"),
                f"returns the string `{s}` repeated `k` times with {sep!r} between the copies "
                "(the empty string when `k` is 0)",
                _code(f"return {sep!r}.join([{s}] * k)"), _code(f"return ({s} + {sep!r}) * k"),
                [("ab", 3), ("x", 1), ("hi", 0), (rng.choice(WORDS), rng.randint(2, 4))])


# --------------------------------------------------------------------------- templates: integers


def fizzbuzz(rng: random.Random) -> Task:
    n = rng.choice(["n", "x", "num", "value"])
    a, b = rng.choice([(2, 3), (2, 5), (3, 4), (3, 5), (3, 7), (4, 5), (2, 7), (5, 7)])
    wa, wb = rng.sample(["Fizz", "Buzz", "Ping", "Pong", "Foo", "Bar", "Zig", "Zag"], 2)
    return Task(_name(rng, ["fizzbuzz", "say", "label"], ["value", "number", "word"]), (n,),
                f"returns '{wa}{wb}' if `{n}` is divisible by both {a} and {b}, '{wa}' if only by {a}, "
                f"'{wb}' if only by {b}, and otherwise `{n}` as a string",
                _code(f"if {n} % {a} == 0 and {n} % {b} == 0:", f"    return '{wa}{wb}'",
                      f"if {n} % {a} == 0:", f"    return '{wa}'",
                      f"if {n} % {b} == 0:", f"    return '{wb}'", f"return str({n})"),
                _code(f"if {n} % {a} == 0:", f"    return '{wa}'",
                      f"if {n} % {b} == 0:", f"    return '{wb}'",
                      f"if {n} % {a} == 0 and {n} % {b} == 0:", f"    return '{wa}{wb}'", f"return str({n})"),
                [(a * b,), (a,), (b,), (1,), *[(rng.randint(1, 60),) for _ in range(3)]])


def clamp(rng: random.Random) -> Task:
    x, lo = rng.choice(["x", "n", "value", "level"]), rng.randint(-10, 5)
    hi = lo + rng.randint(3, 20)
    return Task(_name(rng, ["clamp", "limit", "bound"], ["value", "to_range", "level"]), (x,),
                f"returns `{x}` limited to the range [{lo}, {hi}]: {lo} if `{x}` is below {lo}, {hi} if it is "
                f"above {hi}, else `{x}` itself",
                _code(f"return max({lo}, min({hi}, {x}))"), _code(f"return max({lo}, {x})"),
                [(hi + 5,), (lo - 3,), (lo,), ((lo + hi) // 2,), (hi,), (rng.randint(lo - 20, hi + 20),)])


def fibonacci(rng: random.Random) -> Task:
    n, p = rng.choice(["n", "i", "index", "k"]), rng.randint(0, 3)
    q = rng.choice([v for v in range(1, 5) if v != p])
    return Task(rng.choice(["nth_term", "seq_term", "fib_like", "nth_value"]), (n,),
                f"returns term `{n}` (counting from 0) of the sequence that starts {p}, {q} and where each "
                "later term is the sum of the two before it",
                _code(f"a, b = {p}, {q}", f"for _ in range({n}):", "    a, b = b, a + b", "return a"),
                _code(f"a, b = {p}, {q}", f"for _ in range({n} - 1):", "    a, b = b, a + b", "return a"),
                [(5,), (0,), (1,), (2,), (rng.randint(6, 15),)])


def digit_sum(rng: random.Random) -> Task:
    n = rng.choice(["n", "num", "number", "value"])
    return Task(rng.choice(["digit_sum", "sum_digits", "add_digits", "digit_total"]), (n,),
                f"returns the sum of the decimal digits of the non-negative integer `{n}`",
                _code("total = 0", f"while {n} > 0:", f"    total += {n} % 10", f"    {n} //= 10", "return total"),
                _code(f"return len(str({n}))"),
                [(1234,), (0,), (7,), (rng.randint(10, 99999),)])


def sum_multiples(rng: random.Random) -> Task:
    n, k = rng.choice(["n", "limit", "bound", "stop"]), rng.randint(2, 9)
    return Task(_name(rng, ["sum", "total"], [f"multiples_of_{k}", f"of_{k}s", "multiples"]), (n,),
                f"returns the sum of the positive integers below `{n}` that are divisible by {k}",
                _code(f"return sum(x for x in range(1, {n}) if x % {k} == 0)"),
                _code(f"return sum(x for x in range(1, {n} + 1) if x % {k} == 0)"),
                [(k * 4,), (0,), (1,), (k,), (rng.randint(10, 60),)])


TEMPLATES: dict[str, Callable[[random.Random], Task]] = {f.__name__: f for f in [
    sum_list, max_list, min_list, spread, dedupe, running_totals, parity_filter, scale_list,
    count_char, count_vowels, reverse_string, is_palindrome, count_words, repeat_join,
    fizzbuzz, clamp, fibonacci, digit_sum, sum_multiples,
]}


# --------------------------------------------------------------------------- rendering


def program(task: Task, body: str | None = None) -> str:
    """The function's source: the reference body unless another is given (tests pass `task.bug`)."""
    return f"def {task.fn}({', '.join(task.params)}):\n{task.body if body is None else body}\n"


def fenced(source: str) -> str:
    return f"```python\n{source}```"


def _call(task: Task, case: tuple) -> str:
    return f"{task.fn}({', '.join(map(repr, case))})"


def question(task: Task) -> str:
    """The prompt up to the example's answer. It fixes the whole prompt (the spec fixes the answer), so
    the split and the dedup use it, and only kept tasks pay for running their reference."""
    signature = f"{task.fn}({', '.join(task.params)})"
    return f"Write a Python function `{signature}` that {task.does}. For example, `{_call(task, task.cases[0])}`"


def render(task: Task) -> tuple[dict, str]:
    """(prompt record without id, reference reply). Expected values come from running the reference."""
    namespace: dict = {}
    exec(compile(program(task), f"<code template {task.fn}>", "exec"), namespace)  # our own code
    reference = namespace[task.fn]
    expected = [reference(*case) for case in task.cases]
    tests = "\n".join(f"assert {_call(task, c)} == {e!r}" for c, e in zip(task.cases, expected))
    prompt = f"{question(task)} returns `{expected[0]!r}`.\n\n{INSTRUCTION}"
    record = {"capability": "code", "messages": [{"role": "user", "content": prompt}],
              "tests": tests, "entry_point": task.fn}
    return record, fenced(program(task))


def is_heldout(key: str) -> bool:
    """`key` is a task's question(): 1 in HELDOUT_BUCKETS of the prompt space is held out."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return int(digest, 16) % HELDOUT_BUCKETS == 0


def draw_with_references(split: str, n: int, seed: int) -> list[tuple[dict, str]]:
    """`n` distinct (record, reference reply) pairs of one split; a larger n extends a smaller one."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"{NAME}-{seed}-{split}")
    makers, want_heldout = list(TEMPLATES.values()), split == "heldout"
    out: list[tuple[dict, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        task = rng.choice(makers)(rng)
        key = question(task)
        if is_heldout(key) == want_heldout and key not in seen:
            seen.add(key)
            record, reply = render(task)
            out.append(({"id": f"{NAME}/{split}/{len(out):06d}", **record}, reply))
    return out


def draw(split: str, n: int, seed: int) -> list[dict]:
    """The generator contract (posttrain.sources): `n` prompt records of `split`."""
    return [record for record, _ in draw_with_references(split, n, seed)]
