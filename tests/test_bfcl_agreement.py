"""The tools verifier agrees with BFCL's own checker on every bfcl_simple and bfcl_multiple item.

Each BFCL item's ground truth is written as a model's call (the first acceptable value of every argument, and
again with every argument that may be left out left out), then perturbed mechanically: more calls than one
(appended on a new line, after "; ", as a list of two), an integer written as a float and back, strings
upper-cased, other acceptable values from the answer key, a required or non-omittable argument dropped, a wrong
or other offered function, an unknown argument, a changed value, a value of another type, ... Every case is
graded twice: by bfcl-eval's `ast_checker` (run unchanged; tests/_bfcl_stand_in.py), given the calls as BFCL's
decoded model output [{name: arguments}, ...], and by the project's tools verifier given the completion text,
exactly as eval/benchmarks/bfcl.py's records are scored. The verdicts must be equal but for ALLOWED, and ALLOWED
must be exactly the set of disagreements, so it can neither go stale nor grow silently.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest

from tests.test_bfcl import _concrete, _first  # the ground truth's acceptable values made concrete

from eval.benchmarks import bfcl
from reward import VERIFIERS
from tests._bfcl_stand_in import ast_checker_module

CATEGORIES = {"bfcl_simple": "simple_python", "bfcl_multiple": "multiple"}

# The only disagreements: answer-key bugs, where BFCL's checker accepts a value because its type is the answer key's
# (BFCL's "variable" rule: a value of the key's type passes whatever the schema declares) and the tools verifier
# refuses it because its type is not the schema's. item -> (why, the case kinds that disagree).
ALLOWED = {
    "simple_python_307": (
        'venue is {"type": "string"} and the key lists ["", true]: BFCL accepts venue=true, we refuse a bool for a '
        "string (leaving venue out passes both)",
        {"ground truth", "after <|python_tag|>", "after prose", "list of one", "prose after the call",
         '"arguments" key', "alternative 1 of date", "alternative 2 of date", "alternative 1 of teams",
         "teams list upper-cased", "teams list reversed"}),
    "simple_python_149": (
        'company_names is an array of strings and the key also lists [["Apple"], ["Microsoft"]]: BFCL accepts a '
        "list of lists, we refuse it (the key's first alternative, a list of strings, passes both)",
        {"alternative 1 of company_names"}),
}


class Case(NamedTuple):
    item: str  # BFCL id, e.g. simple_python_1
    kind: str
    text: str  # the completion the tools verifier reads
    calls: list  # the same calls as BFCL's decoded model output: [{name: arguments}, ...]


def _call(name: str, args: dict) -> dict:
    return {"name": name, "parameters": args}


def _other_type(value):
    if isinstance(value, str):
        return 7
    if isinstance(value, (bool, list, dict)):
        return "7"
    return "seven"


def _changed(value, acceptable: list):
    """A value of the same type that no acceptable value matches."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        changed = value + 1
        while changed in acceptable:
            changed += 1
        return changed
    if isinstance(value, str):
        return value + " zzz"
    return None


def cases_of(item: dict, answer: dict) -> list[Case]:
    [(name, possible)] = answer["ground_truth"][0].items()
    [function] = [f for f in item["function"] if f["name"] == name]
    required = set(function["parameters"].get("required", ()))
    full = {arg: _concrete(_first(alts)) for arg, alts in possible.items() if any(v != "" for v in alts)}
    minimal = {arg: v for arg, v in full.items() if arg in required or "" not in possible[arg]}
    out: list[tuple[str, list[dict]] | tuple[str, list[dict], str]] = []

    def one(kind: str, args: dict, fn: str = name):
        out.append((kind, [_call(fn, args)]))

    one("ground truth", full)
    if minimal != full:
        one("ground truth, minimal", minimal)
    gt = json.dumps(_call(name, full))
    out.append(("after <|python_tag|>", [_call(name, full)], "<|python_tag|>" + gt))
    out.append(("after prose", [_call(name, full)], f"I will call {name}.\n{gt}"))
    out.append(("list of one", [_call(name, full)], f"[{gt}]"))
    for arg, alts in possible.items():
        for k, alt in enumerate(a for a in alts if a != ""):
            if k:
                one(f"alternative {k} of {arg}", {**full, arg: _concrete(alt)})

    # more than one call
    wrong = next(({**full, a: _changed(v, possible[a])} for a, v in full.items()
                  if _changed(v, possible[a]) is not None), full)
    second = json.dumps(_call(name, wrong))
    out.append(("second call appended", [_call(name, full), _call(name, wrong)], f"{gt}\n{second}"))
    out.append(("second call after ;", [_call(name, full), _call(name, wrong)], f"{gt}; {second}"))
    out.append(("same call twice", [_call(name, full)] * 2, f"{gt}\n{gt}"))
    out.append(("list of two", [_call(name, full), _call(name, wrong)], f"[{gt}, {second}]"))
    out.append(("second call, no separator", [_call(name, full), _call(name, wrong)], f"{gt}{second}"))
    out.append(("second call in prose", [_call(name, full), _call(name, wrong)], f"{gt}\nOr else: {second}"))
    for other in item["function"]:
        if other["name"] != name:
            out.append(("other function appended", [_call(name, full), _call(other["name"], {})],
                        f"{gt}\n{json.dumps(_call(other['name'], {}))}"))
            break
    out.append(("prose after the call", [_call(name, full)], f"{gt}\nThis answers the question."))
    out.append(('"arguments" key', [_call(name, full)], json.dumps({"name": name, "arguments": full})))

    # types
    for arg, v in full.items():
        if type(v) is int:
            one(f"{arg} int as float", {**full, arg: float(v)})
        if type(v) is float and v == int(v):
            one(f"{arg} float as int", {**full, arg: int(v)})
        if isinstance(v, str) and v.upper() != v:
            one(f"{arg} upper-cased", {**full, arg: v.upper()})
        if isinstance(v, list) and any(type(x) is int for x in v):
            one(f"{arg} list int as float", {**full, arg: [float(x) if type(x) is int else x for x in v]})
        if isinstance(v, list) and any(isinstance(x, str) and x.upper() != x for x in v):
            one(f"{arg} list upper-cased", {**full, arg: [x.upper() if isinstance(x, str) else x for x in v]})
        if isinstance(v, str) and " " in v:
            one(f"{arg} spaces as dashes", {**full, arg: v.replace(" ", "-")})
        if isinstance(v, list) and len(v) > 1 and v[::-1] != v:
            one(f"{arg} list reversed", {**full, arg: v[::-1]})
        if isinstance(v, list) and v:
            one(f"{arg} list shortened", {**full, arg: v[:-1]})
        if isinstance(v, dict) and any(isinstance(x, str) for x in v.values()):
            one(f"{arg} dict upper-cased", {**full, arg: {k: x.upper() if isinstance(x, str) else x
                                                          for k, x in v.items()}})
        if isinstance(v, dict) and any(type(x) is int for x in v.values()):
            one(f"{arg} dict int as float", {**full, arg: {k: float(x) if type(x) is int else x for k, x in v.items()}})
        if isinstance(v, list) and any(isinstance(x, dict) for x in v):
            one(f"{arg} list of dicts upper-cased", {**full, arg: [
                {k: y.upper() if isinstance(y, str) else y for k, y in x.items()} if isinstance(x, dict) else x
                for x in v]})
        if isinstance(v, bool):
            one(f"{arg} bool as int", {**full, arg: int(v)})
        if type(v) is int and v in (0, 1):
            one(f"{arg} int as bool", {**full, arg: bool(v)})
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            one(f"{arg} number as string", {**full, arg: str(v)})
        one(f"{arg} other type", {**full, arg: _other_type(v)})
        one(f"{arg} null", {**full, arg: None})
        if (changed := _changed(v, possible[arg])) is not None:
            one(f"{arg} changed", {**full, arg: changed})

    # arguments and names
    for arg in full:
        if arg in required or "" not in possible[arg]:
            one(f"{arg} dropped", {k: v for k, v in full.items() if k != arg})
    one("unknown argument", {**full, "zzz_extra": 1})
    one("wrong name", full, name + "_v2")
    for other in item["function"]:
        if other["name"] != name:
            one("other offered function", full, other["name"])
            break

    cases = []
    for kind, calls, *text in out:
        calls = json.loads(json.dumps(calls))  # the values a JSON completion decodes to
        cases.append(Case(item["id"], kind, text[0] if text else json.dumps(calls[0]),
                          [{c["name"]: c["parameters"]} for c in calls]))
    return cases


def bfcl_valid(checker, item: dict, answer: dict, category: str, calls: list) -> bool:
    result = checker.ast_checker(item["function"], calls, answer["ground_truth"], checker.Language.PYTHON,
                                 category, "stand-in")
    return result["valid"]


def disagreements(name: str) -> tuple[int, dict[tuple[str, str], tuple[bool, str]]]:
    """(number of cases, {(item, kind): (BFCL's verdict, our reason)} where the verdicts differ)."""
    checker = ast_checker_module()
    category = CATEGORIES[name]
    pairs = bfcl.items(category)
    records = {item["id"]: bfcl.record(name, item, answer) for item, answer in pairs}
    cases = [(item, answer, case) for item, answer in pairs for case in cases_of(item, answer)]
    ours = VERIFIERS["tools"]([c.text for _, _, c in cases],
                              tools=[records[c.item]["tools"] for _, _, c in cases],
                              expected_call=[records[c.item]["expected_call"] for _, _, c in cases])
    differ = {}
    for (item, answer, case), verdict in zip(cases, ours):
        theirs = bfcl_valid(checker, item, answer, category, case.calls)
        if theirs != (verdict.reward == 1.0):
            differ[case.item, case.kind] = (theirs, verdict.reason)
    return len(cases), differ


@pytest.mark.parametrize("name", sorted(CATEGORIES))
def test_verdicts_agree_with_bfcl_checker(name):
    n, differ = disagreements(name)
    assert n > 25 * len(bfcl.items(CATEGORIES[name]))  # every item, many perturbations each
    allowed = {(item, kind) for item, (_, kinds) in ALLOWED.items() for kind in kinds
               if item.startswith(CATEGORIES[name] + "_")}
    assert set(differ) == allowed, {k: v for k, v in differ.items() if k not in allowed} or set(allowed) - set(differ)
    assert all(bfcl_says and reason.startswith("schema:") for bfcl_says, reason in differ.values())


def test_perturbations_cover_every_rule():
    """The kinds of case the agreement rests on exist (the data could change under them)."""
    rules = set()
    for item, answer in bfcl.items("simple_python") + bfcl.items("multiple"):
        params = {p for f in item["function"] for p in f["parameters"]["properties"]}
        for case in cases_of(item, answer):
            first, _, rest = case.kind.partition(" ")
            rules.add(rest if first in params else case.kind)
    assert {"ground truth", "ground truth, minimal", "second call appended", "second call after ;", "list of two",
            "same call twice", "other function appended", "unknown argument", "wrong name", "other offered function",
            "int as float", "float as int", "upper-cased", "list int as float", "list upper-cased", "dropped",
            "other type", "changed", "null", "dict upper-cased", "dict int as float", "bool as int"} <= rules


if __name__ == "__main__":  # python -m tests.test_bfcl_agreement: the counts and every disagreement
    for name in sorted(CATEGORIES):
        n, differ = disagreements(name)
        print(f"{name}: {n} cases, {len(differ)} disagreements")
        for (item, kind), (theirs, reason) in sorted(differ.items()):
            print(f"  {item} | {kind} | BFCL {'valid' if theirs else 'invalid'} | ours: {reason}")
